{#- Stage 1: kernel headers, CUDA repo, driver stream (RHEL 10: branch), cuda, nouveau out, modules in. -#}
{%- from "gpu/map.jinja" import gpu, rejected with context %}
{%- if rejected %}{% extends "gpu/rejected.jinja" %}{% endif %}

# DKMS builds the driver against the running kernel: its devel and headers must match it.
gpu-kernel-devel-headers-installed:
  pkg.installed:
    - pkgs:
      - kernel-devel: {{ gpu.driver.kernel_version }}
      - kernel-headers: {{ gpu.driver.kernel_version }}

gpu-cuda-repo:
  pkgrepo.managed:
    - name: {{ gpu.repos.cuda.name }}
    - humanname: {{ gpu.repos.cuda.name }}
    - baseurl: {{ gpu.repos.cuda.baseurl }}
    - enabled: 1
    - gpgcheck: {{ gpu.repos.cuda.gpgcheck }}
    - repo_gpgcheck: {{ gpu.repos.cuda.repo_gpgcheck }}
    - gpgkey: {{ gpu.repos.cuda.gpgkey }}
{%- if gpu.repos.unsigned_notice %}

# gpu:repos:allow_unsigned: every run says which signature checks pillar left off.
gpu-repos-unsigned-allowed:
  test.show_notification:
    - text: {{ gpu.repos.unsigned_notice | yaml_dquote }}
{%- endif %}

{%- if gpu.driver.streams %}

gpu-driver-stream:
  dnf_module.installed:
    - name: {{ gpu.driver.module }}
    - stream: {{ gpu.driver.stream | string | yaml_dquote }}
    - profile: {{ gpu.driver.profile | yaml_encode }}
    - platform: {{ gpu.driver.platform }}
    - require:
      - pkg: gpu-kernel-devel-headers-installed
      - pkgrepo: gpu-cuda-repo
{%- else %}

# No module streams (RHEL 10): NVIDIA's recipe, `dnf install nvidia-open`, and a branch
# pinned with `dnf versionlock '*nvidia*580*'`; `latest` is no lock.
gpu-driver-versionlock-plugin:
  pkg.installed:
    - name: python3-dnf-plugin-versionlock

gpu-driver-branch:
  dnf_versionlock.branch_installed:
    - name: {{ gpu.driver.package }}
    - branch: {{ gpu.driver.branch | string | yaml_dquote }}
    - require:
      - pkg: gpu-kernel-devel-headers-installed
      - pkgrepo: gpu-cuda-repo
      - pkg: gpu-driver-versionlock-plugin
{%- endif %}

gpu-cuda-installed:
  pkg.installed:
    - name: {{ gpu.cuda.package }}
{%- if gpu.cuda.version %}
    - version: {{ gpu.cuda.version | string | yaml_dquote }}
{%- endif %}
    - require:
      - {{ gpu.driver.state_id }}

# The driver packages blacklist nouveau on the kernel command line; this file does
# it for modprobe and, once in the initramfs, for early boot.
gpu-nouveau-blacklisted:
  file.managed:
    - name: {{ gpu.driver.nouveau_blacklist_file }}
    - user: root
    - group: root
    - mode: "0644"
    - makedirs: true
    - contents: |
        # Managed by Salt (gpu formula): the NVIDIA driver needs the GPU that nouveau would claim.
        blacklist nouveau
        options nouveau modeset=0

# The initramfs must carry the blacklist too. The state looks into the image itself
# (lsinitrd), so a rebuild that failed is retried on the next run. The command is an
# argument list, run without a shell: nothing from pillar is ever interpreted.
gpu-initramfs-carries-blacklist:
  nvgpu_initramfs.carries:
    - name: {{ grains["kernelrelease"] }}
    - required_files:
      - {{ gpu.driver.nouveau_blacklist_file }}
    - cmd: {{ gpu.driver.initramfs_cmd | json }}
    - require:
      - file: gpu-nouveau-blacklisted

gpu-nouveau-unloaded:
  nvgpu.kernel_module_unloaded:
    - name: nouveau
    - require:
      - file: gpu-nouveau-blacklisted

gpu-driver-modules-loaded:
  nvgpu.modules_loaded:
    - name: nvidia
    - uvm: {{ gpu.driver.uvm }}
    - reload: {{ gpu.driver.reload }}
    - require:
      - {{ gpu.driver.state_id }}
      - pkg: gpu-cuda-installed
      - nvgpu: gpu-nouveau-unloaded

# Preflight for the next reboot: the newest installed kernel has the driver built too.
gpu-driver-built-for-next-boot:
  nvgpu.driver_built_for_next_boot:
    - name: nvidia
    - require:
      - nvgpu: gpu-driver-modules-loaded

# The nvgpu grains (GPUs, driver) are read when the minion starts, often before the
# driver was loaded: read them again once it is loaded or reloaded, so that targeting
# by GPU (salt -G 'nvgpu:gpus:name:NVIDIA H200') and the fleet report see this node's
# GPUs without a minion restart. The master's copy follows with the pillar refresh.
gpu-grains-refreshed:
  module.run:
    - saltutil.refresh_grains: []
    - onchanges:
      - nvgpu: gpu-driver-modules-loaded
{%- if gpu.driver.persistenced %}

# nvidia-persistenced keeps the driver initialised while no program uses the GPU: the
# device nodes stay and each container's first CUDA call does not pay the initialisation.
gpu-persistenced-running:
  nvgpu.driver_service_running:
    - name: nvidia-persistenced
    - require:
      - nvgpu: gpu-driver-modules-loaded
{%- endif %}
{%- if gpu.driver.fabricmanager_enabled and not gpu.driver.streams %}

# RHEL 10 (no streams, so no fm profile): the branch's fabric manager package; the
# branch's versionlock holds it to the driver's version.
gpu-fabricmanager-installed:
  pkg.installed:
    - name: nvidia-fabric-manager
    - require:
      - {{ gpu.driver.state_id }}
{%- endif %}
{%- if gpu.driver.fabricmanager_enabled %}

# NVSwitch systems (HGX/DGX): until the fabric manager of exactly the driver's version has
# trained the NVLink fabric, CUDA fails with error 802 "system not yet initialized".
gpu-fabricmanager-running:
  nvgpu.driver_service_running:
    - name: nvidia-fabricmanager
    - package: nvidia-fabric-manager
    - require:
      - nvgpu: gpu-driver-modules-loaded
{%-   if not gpu.driver.streams %}
      - pkg: gpu-fabricmanager-installed
{%-   endif %}
{%- endif %}
