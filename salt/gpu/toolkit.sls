{#- Stage 3: NVIDIA container toolkit: repo, package, OCI hook or CDI spec, rootless config. -#}
{%- from "gpu/map.jinja" import gpu, rejected with context %}
{%- if rejected %}{% extends "gpu/rejected.jinja" %}{% endif %}

include:
  - gpu.driver
  - gpu.runtime

{%- for repo in gpu.repos.toolkit.present %}

gpu-toolkit-repo-{{ repo.name }}:
  pkgrepo.managed:
    - name: {{ repo.name }}
    - humanname: {{ repo.name }}
    - baseurl: {{ repo.baseurl }}
    - enabled: 1
    - gpgcheck: {{ gpu.repos.toolkit.gpgcheck }}
    - repo_gpgcheck: {{ gpu.repos.toolkit.repo_gpgcheck }}
    - gpgkey: {{ repo.gpgkey }}
    - sslverify: 1
    - require_in:
      - pkg: gpu-toolkit-installed
{%- endfor %}

{%- for repo_name in gpu.repos.toolkit.absent %}

gpu-toolkit-repo-{{ repo_name }}-absent:
  pkgrepo.absent:
    - name: {{ repo_name }}
{%- endfor %}

gpu-toolkit-installed:
  pkg.installed:
    - name: {{ gpu.toolkit.package }}

gpu-container-toolkit:
  nvgpu.container_toolkit:
    - mode: {{ gpu.toolkit.mode }}
    - cdi_owner: {{ gpu.toolkit.cdi_owner }}
    - rootless: {{ gpu.toolkit.rootless }}
{%- for key in ["hook_path", "hook_binary", "cdi_path"] if gpu.toolkit[key] %}
    - {{ key }}: {{ gpu.toolkit[key] }}
{%- endfor %}
    - require:
      - pkg: gpu-toolkit-installed
      - nvgpu: gpu-driver-modules-loaded
      - gpu-container-runtime
