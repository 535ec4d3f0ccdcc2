{#- Stage 4: SELinux lets containers use the GPU (container-selinux's boolean, or NVIDIA's
    policy module for nvidia_container_t) and the GPU files have correct labels. -#}
{%- from "gpu/map.jinja" import gpu, rejected with context %}
{%- if rejected %}{% extends "gpu/rejected.jinja" %}{% endif %}

include:
  - gpu.toolkit
{%- if gpu.selinux.enabled %}
{%-   if gpu.selinux.method != "module" and salt["nvgpu_selinux.mode"]() != "Disabled" %}

# The boolean is set through Salt's selinux state, whose module needs semanage.
gpu-selinux-tools-installed:
  pkg.installed:
    - name: policycoreutils-python-utils
    - require_in:
      - nvgpu: gpu-selinux-ready
{%-   endif %}

gpu-selinux-ready:
  nvgpu.selinux_ready:
    - method: {{ gpu.selinux.method }}
{%-   if gpu.selinux.policy_source %}
    - policy_source: {{ gpu.selinux.policy_source }}
{%-   endif %}
{%- if gpu.selinux.policy_hash %}
    - source_hash: {{ gpu.selinux.policy_hash }}
{%- endif %}
    - module_name: {{ gpu.selinux.module_name }}
    - relabel: {{ gpu.selinux.relabel }}
    - require:
      - nvgpu: gpu-container-toolkit
{%- endif %}
