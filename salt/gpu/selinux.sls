{#- Stage 4: SELinux policy for nvidia_container_t and correct labels on the GPU files. -#}
{%- from "gpu/map.jinja" import gpu, rejected with context %}
{%- if rejected %}{% extends "gpu/rejected.jinja" %}{% endif %}

include:
  - gpu.toolkit
{%- if gpu.selinux.enabled %}

gpu-selinux-ready:
  nvgpu.selinux_ready:
    - policy_source: {{ gpu.selinux.policy_source }}
{%- if gpu.selinux.policy_hash %}
    - source_hash: {{ gpu.selinux.policy_hash }}
{%- endif %}
    - module_name: {{ gpu.selinux.module_name }}
    - relabel: {{ gpu.selinux.relabel }}
    - require:
      - nvgpu: gpu-container-toolkit
{%- endif %}
