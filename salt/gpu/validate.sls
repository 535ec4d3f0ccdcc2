{#- Stage 6: the vector add in a container, as root and then as every rootless user. -#}
{%- from "gpu/map.jinja" import gpu, rejected with context %}
{%- if rejected %}{% extends "gpu/rejected.jinja" %}{% endif %}

include:
  - gpu.toolkit
  - gpu.selinux
  - gpu.users
{%- if gpu.validate.enabled %}

gpu-validate-root:
  nvgpu.vector_add_passes:
{%- if gpu.validate.image %}
    - image: {{ gpu.validate.image }}
{%- endif %}
    - mode: {{ gpu.validate.mode }}
    - timeout: {{ gpu.validate.timeout }}
    - pull: {{ gpu.validate.pull }}
    - gpus: {{ gpu.validate.gpus }}
    - when: {{ gpu.validate.when }}
    - require:
      - nvgpu: gpu-container-toolkit
{%-   if gpu.driver.fabricmanager_enabled %}
      - nvgpu: gpu-fabricmanager-running
{%-   endif %}
{%-   if gpu.selinux.enabled %}
      - nvgpu: gpu-selinux-ready
{%-   endif %}
{%-   for user in gpu.rootless_users %}

gpu-validate-{{ user.name }}:
  nvgpu.vector_add_passes:
    - user: {{ user.name }}
{%- if gpu.validate.image %}
    - image: {{ gpu.validate.image }}
{%- endif %}
    - mode: {{ gpu.validate.mode }}
    - timeout: {{ gpu.validate.timeout }}
    - pull: {{ gpu.validate.pull }}
    - gpus: {{ gpu.validate.gpus }}
    - when: {{ gpu.validate.when }}
    - require:
      - nvgpu: gpu-validate-root
      - nvgpu: gpu-rootless-subids-{{ user.name }}
{%-   endfor %}
{%- endif %}
