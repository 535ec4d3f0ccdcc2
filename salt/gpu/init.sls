{#- The whole GPU node, stage by stage as the guide does it by hand. -#}
{%- from "gpu/map.jinja" import gpu, rejected with context %}
{%- if rejected %}{% extends "gpu/rejected.jinja" %}{% endif %}
include:
  - gpu.driver
  - gpu.runtime
  - gpu.toolkit
  - gpu.selinux
  - gpu.users
  - gpu.validate
