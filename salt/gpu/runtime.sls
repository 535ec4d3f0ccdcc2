{#- Stage 2: Podman, as a package or (RHEL 8, by pillar) the container-tools stream. -#}
{%- from "gpu/map.jinja" import gpu, rejected with context %}
{%- if rejected %}{% extends "gpu/rejected.jinja" %}{% endif %}

{%- if gpu.runtime.container_tools %}

# container-tools brings podman, buildah and skopeo, updated as one tested set.
gpu-container-runtime:
  dnf_module.installed:
    - name: container-tools
    - stream: {{ gpu.runtime.container_tools_stream | string | yaml_dquote }}
    - profile: {{ gpu.runtime.container_tools_profile }}
    - platform: {{ gpu.driver.platform }}
{%- else %}

gpu-container-runtime:
  pkg.installed:
    - name: {{ gpu.runtime.package }}
{%- endif %}
