{#- Stage 5: rootless users: account, subordinate uid/gid ranges and lingering for rootless Podman. -#}
{%- from "gpu/map.jinja" import gpu, rejected with context %}
{%- if rejected %}{% extends "gpu/rejected.jinja" %}{% endif %}
{%- for user in gpu.rootless_users %}
{%-   if user.get("gid") is not none %}

gpu-rootless-group-{{ user.name }}:
  group.present:
    - name: {{ user.name }}
    - gid: {{ user.gid }}
    - require_in:
      - user: gpu-rootless-user-{{ user.name }}
{%-   endif %}

gpu-rootless-user-{{ user.name }}:
  user.present:
    - name: {{ user.name }}
{%-   if user.get("uid") is not none %}
    - uid: {{ user.uid }}
{%-   endif %}
{%-   if user.get("gid") is not none %}
    - gid: {{ user.gid }}
{%-   endif %}
    - createhome: true

gpu-rootless-subids-{{ user.name }}:
  nvgpu.subids_present:
    - name: {{ user.name }}
{%-   if user.get("subuid_start") is not none %}
    - start: {{ user.subuid_start }}
{%-   endif %}
    - count: {{ user.get("subuid_count") or 65536 }}
    - require:
      - user: gpu-rootless-user-{{ user.name }}

# Its runtime dir from boot on, without a login session (rootless Podman needs it).
gpu-rootless-linger-{{ user.name }}:
  nvgpu.user_lingers:
    - name: {{ user.name }}
    - require:
      - user: gpu-rootless-user-{{ user.name }}
{%- endfor %}
