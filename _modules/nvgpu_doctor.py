"""
Execution module: the node's self-check. Walks a GPU container node layer by layer, in
the guide's order (kernel and driver, NVSwitch fabric, Podman and the toolkit, SELinux,
rootless users), and says for each check what it read or ran, what that said, and the
fix; the first failing layer is named in the summary.

Read-only: it loads no module (never ``nvidia-container-cli -k``), writes no file and
pulls no image. It reads the node through the shared layer (``_utils/nvgpu_node.py``)
and the domain modules (``nvgpu_toolkit``, ``nvgpu_selinux``, ``nvgpu_rootless``), never
through ``nvgpu``, whose ``nvgpu.doctor`` is the public entry to :py:func:`run`.

:depends: rpm, podman, nvidia-container-toolkit, policycoreutils (each check that needs a
          missing tool says so, or skips where the tool is optional)
"""

import glob
import os
import re
import stat
from collections import namedtuple

import nvgpu_failures
import nvgpu_node
import nvgpu_state
import salt.utils.data
import salt.utils.path
from salt.exceptions import CommandExecutionError

__virtualname__ = "nvgpu_doctor"

STATUSES = ("ok", "fail", "warn", "skip")
STATE_APPLY = "salt-call state.apply gpu"

# The doctor's checks, in the order it runs them: what each reads and the fixes it can
# propose. docs/troubleshooting.md is generated from this list (tools/troubleshooting.py),
# and a check the doctor returns must be declared here with its layer. USER stands for
# each rootless user.
Check = namedtuple("Check", "name layer reads fixes")
CHECKS = (
    Check("kernel-devel", "driver", "`rpm -q kernel-devel-$(uname -r) kernel-headers-$(uname -r)`",
          "`dnf install` the missing package, then rebuild the driver (`dkms autoinstall`)"),
    Check("nvidia-ko", "driver", "an `nvidia.ko*` under `/lib/modules/$(uname -r)`",
          "install kernel-devel and rebuild with DKMS, or apply the driver stream"),
    Check("nvidia-ko-newest", "driver",
          "the newest installed kernel (`/lib/modules/*/vmlinuz`) has an `nvidia.ko*` too (the next boot's driver)",
          "`dnf install kernel-devel-NEWEST`, then `dkms autoinstall -k NEWEST`"),
    Check("secure-boot", "driver",
          "`mokutil --sb-state`; with Secure Boot on, `modinfo -k $(uname -r) -F signer nvidia` against "
          "`mokutil --list-enrolled` and the kernel's keys (`/proc/keys`)",
          "enroll the signing key (`mokutil --import /var/lib/dkms/mok.pub`, reboot, confirm), or turn Secure Boot off"),
    Check("nouveau", "kernel-modules", "`/sys/module/nouveau`", "unload and blacklist nouveau"),
    Check("nvidia-loaded", "kernel-modules", "`/sys/module/nvidia`, `/sys/module/nvidia_uvm`",
          "`salt-call nvgpu.load_modules`"),
    Check("driver-version", "kernel-modules", "`/sys/module/nvidia/version` against the installed `libcuda.so.VERSION`",
          "`salt-call nvgpu.reload_driver` (GPU idle) or reboot"),
    Check("device-nodes", "kernel-modules", "`/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidiaN` and their modes",
          "`salt-call nvgpu.load_modules`; `chmod 0666 /dev/nvidia*`"),
    Check("persistenced", "kernel-modules", "`systemctl is-active nvidia-persistenced`",
          "`systemctl enable --now nvidia-persistenced`"),
    Check("fabric-manager", "fabric",
          "NVSwitch PCI devices in `/sys/bus/pci/devices` (10de:1af1, 10de:22a3); then "
          "`systemctl is-active nvidia-fabricmanager`, its version (`rpm -q nvidia-fabric-manager`) against "
          "the loaded driver's, and each GPU's `fabric.state` (`nvidia-smi --query-gpu`)",
          "install nvidia-fabric-manager of exactly the driver's version, `systemctl enable --now "
          "nvidia-fabricmanager`; a fabric not `Completed`: its journal, a restart"),
    # Each GPU's health, from nvgpu_health (read-only; per GPU by index, UUID and PCI address).
    Check("gpus-on-bus", "gpu", "NVIDIA display-class devices in `/sys/bus/pci/devices` against "
          "`nvidia-smi --query-gpu` (a GPU off the bus)",
          "drain and reboot the node; reseat or replace the GPU (RMA) if it stays missing"),
    Check("xid", "gpu", "Xid errors in the kernel log since boot (`/dev/kmsg`, what dmesg reads), per GPU",
          "drain the node, reset the GPU (`nvidia-smi -r -i N`) or reboot; RMA if it recurs"),
    Check("gpu-memory", "gpu", "`nvidia-smi --query-gpu` ECC errors, retired pages and remapped rows pending, "
          "remapping failures", "drain, reset the GPU (`nvidia-smi -r -i N`) or reboot; RMA when no spare rows are left"),
    Check("dcgm", "gpu", "`dcgmi` in PATH: offers `dcgmi diag -r 1` (`salt-call nvgpu_health.dcgm_diag`)", None),
    Check("podman", "podman", "`podman --version`", "`salt-call state.apply gpu` (pillar `gpu:runtime`)"),
    Check("toolkit", "toolkit", "`nvidia-ctk` in PATH", "`salt-call state.apply gpu` (pillar `gpu:toolkit:package`)"),
    Check("mode", "toolkit", "pillar `gpu:toolkit:mode`, and Podman's version for `auto`",
          "set `gpu:toolkit:mode` to auto, hook or cdi"),
    Check("cdi-spec-count", "toolkit", "every CDI spec of kind nvidia.com/gpu in `/etc/cdi` and `/var/run/cdi`",
          "generate one (`nvidia-ctk cdi generate`); of two, remove one (and `nvidia-cdi-refresh`'s units)"),
    Check("cdi-spec-readable", "toolkit", "each spec's mode (rootless Podman reads it as the user)", "`chmod 0644`"),
    Check("cdi-spec-driver", "toolkit", "the `libcuda.so.VERSION` each spec mounts against the loaded driver",
          "regenerate the spec (`nvidia-ctk cdi generate`, or `salt-call state.apply gpu`)"),
    Check("cdi-refresh", "toolkit",
          "the toolkit's `nvidia-cdi-refresh` units (1.18+) against pillar `gpu:toolkit:cdi_owner`: "
          "enabled and watching where they own the spec, disabled where the formula does",
          "`systemctl enable` / `disable --now nvidia-cdi-refresh.path nvidia-cdi-refresh.service`, or "
          "`salt-call state.apply gpu`"),
    Check("oci-hook", "toolkit", "the OCI hook JSON in hooks.d and its binary",
          "`salt-call state.apply gpu` (writes or removes the hook by mode)"),
    Check("no-cgroups", "rootless",
          "`no-cgroups` in `/etc/nvidia-container-runtime/config.toml` (hook mode, rootless users)",
          "`nvidia-ctk config --set nvidia-container-cli.no-cgroups=true --in-place`"),
    Check("selinux-mode", "selinux", "`getenforce`", None),
    Check("selinux-policy", "selinux",
          "by pillar `gpu:selinux:method`: `semodule -l` lists the policy module (pillar `gpu:selinux:module_name`), "
          "or `getsebool container_use_xserver_devices` is on",
          "`salt-call state.apply gpu.selinux`"),
    Check("selinux-labels", "selinux",
          "`restorecon -n -v -R /dev` and `restorecon -n -v` on the driver's libraries and programs",
          "`restorecon -v` on the paths named (or `salt-call state.apply gpu.selinux`)"),
    Check("account:USER", "rootless", "`user.info USER`", "`salt-call state.apply gpu` (pillar `gpu:rootless_users`)"),
    Check("subuid:USER", "rootless", "the user's ranges in `/etc/subuid`: present, not overlapping, not holding its uid",
          "`salt-call state.apply gpu`, or `usermod --add-subuids`"),
    Check("subgid:USER", "rootless", "the same in `/etc/subgid`", "`salt-call state.apply gpu`, or `usermod --add-subgids`"),
    Check("runtime-dir:USER", "rootless",
          "`/run/user/UID` (owned by the user), else lingering (`/var/lib/systemd/linger/USER`)",
          "`loginctl enable-linger USER`"),
    Check("image", "image",
          "`podman image exists IMAGE` (pillar `gpu:validate:image`); if absent, the registry "
          "(`skopeo inspect`, else `podman manifest inspect`), without pulling",
          "`podman pull IMAGE`; fix the name or the registry (pillar `gpu:validate:image`)"),
)
_CATALOGUE = {check.name.split(":")[0]: check for check in CHECKS}


def __virtual__():
    if __grains__.get("kernel") != "Linux":
        return (False, "The nvgpu_doctor execution module only runs on Linux minions")
    return __virtualname__


def _check(name, layer, status, evidence, fix=None):
    declared = _CATALOGUE.get(name.split(":")[0])
    if status not in STATUSES or declared is None or declared.layer != layer:
        raise ValueError(f"bad check {name}: status {status!r}, layer {layer!r} (CHECKS declares {declared})")
    return {"name": name, "layer": layer, "status": status, "evidence": evidence,
            "fix": fix if status in ("fail", "warn") else None}


def _pillar(key, default=None):
    # From __pillar__: Salt 3008's pillar.get masks values for callers (as run_vector_add reads it).
    value = salt.utils.data.traverse_dict_and_list(__pillar__, key, default)
    return default if value is None else value


def _run(argv):
    """Run ``argv`` (read-only tools only) and return (retcode, the tool's words)."""
    ret = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    text = (ret.get("stdout") or "").strip() or (ret.get("stderr") or "").strip() or "no output"
    return ret["retcode"], "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _cmd(argv):
    return "`" + " ".join(argv) + "`"


# ---------------------------------------------------------------------------
# Kernel and driver
# ---------------------------------------------------------------------------


def _kernel_devel(release):
    if not salt.utils.path.which("rpm"):
        return _check("kernel-devel", "driver", "skip", "rpm is not installed: not an RPM system")
    packages = [f"kernel-devel-{release}", f"kernel-headers-{release}"]
    argv = ["rpm", "-q"] + packages
    _, said = _run(argv)
    missing = [p for p in packages if f"package {p} is not installed" in said]
    evidence = f"{_cmd(argv)} said: {said}"
    if packages[0] in missing:
        return _check("kernel-devel", "driver", "fail", evidence,
                      f"dnf install {' '.join(missing)} (DKMS builds nvidia.ko against them), then "
                      "dkms autoinstall or reinstall the driver stream")
    if missing:
        return _check("kernel-devel", "driver", "warn", evidence, f"dnf install {' '.join(missing)}")
    return _check("kernel-devel", "driver", "ok", evidence)


def _nvidia_ko(release):
    where = os.path.join(nvgpu_node.LIB_MODULES, release)
    if nvgpu_node.nvidia_ko_present(release):
        return _check("nvidia-ko", "driver", "ok", f"an nvidia.ko is under {where}")
    installed = nvgpu_node.installed_driver_version()
    if nvgpu_node.module_loaded("nvidia"):
        # Seen on the H200 machine (Ubuntu, a kernel whose driver comes from outside
        # /lib/modules): loaded and working, but nothing here would load it after a reboot.
        return _check("nvidia-ko", "driver", "warn",
                      f"nvidia is loaded but no nvidia.ko is under {where}: the next boot of this kernel "
                      "may have no driver", f"{STATE_APPLY} (the driver stream builds it for this kernel)")
    if installed is None:
        return _check("nvidia-ko", "driver", "fail",
                      f"no nvidia.ko under {where} and no driver installed (no {nvgpu_node.DRIVER_LIB_GLOB})",
                      f"{STATE_APPLY} (or {nvgpu_failures.DRIVER_PACKAGE_HINT})")
    found = nvgpu_failures.no_module_for_kernel(release)
    return _check("nvidia-ko", "driver", "fail",
                  f"no nvidia.ko under {where}; driver {installed} is installed: {found['cause']}", found["fix"])


def _nvidia_ko_newest(release):
    kernels = nvgpu_node.installed_kernels()
    newest = nvgpu_node.next_boot_kernel(release)
    listed = f"installed kernels (/lib/modules/*/{nvgpu_node.KERNEL_IMAGE}): {', '.join(kernels) or 'none'}"
    if newest == release:
        return _check("nvidia-ko-newest", "driver", "ok", f"the running kernel {release} is the newest; {listed}")
    where = os.path.join(nvgpu_node.LIB_MODULES, newest)
    if nvgpu_node.nvidia_ko_present(newest):
        return _check("nvidia-ko-newest", "driver", "ok",
                      f"an nvidia.ko is under {where} (the newest installed kernel, the next boot's)")
    if not nvgpu_node.nvidia_ko_present(release):
        return _check("nvidia-ko-newest", "driver", "skip",
                      "no nvidia.ko under /lib/modules for the running kernel either (nvidia-ko): nothing to compare")
    devel = os.path.join(nvgpu_node.KERNEL_SOURCES, newest)
    has_devel = "is" if os.path.isdir(devel) else "is not"
    return _check("nvidia-ko-newest", "driver", "fail",
                  f"the newest installed kernel {newest} (the one the next boot starts) has no nvidia.ko under "
                  f"{where}: DKMS did not build the driver for it (kernel-devel-{newest} {has_devel} installed: "
                  f"{devel}); {listed}",
                  f"dnf install kernel-devel-{newest}, then dkms autoinstall -k {newest} (a precompiled "
                  "driver stream: dnf update brings its kmod package for that kernel)")


def _trusted_signers():
    """The signers the kernel would accept: enrolled MOK certificates and the keys it holds."""
    _, said = _run(["mokutil", "--list-enrolled"])
    names = set(re.findall(r"Subject:.*?CN\s*=\s*([^,/;]+?)\s*(?:[,/;]|$)", said))
    for line in (nvgpu_node.read_file(nvgpu_node.PROC_KEYS) or "").splitlines():
        # "... asymmetri Build time autogenerated kernel key: 5d2f...: X509.rsa 5d2f... []"
        fields = line.split(None, 8)
        if len(fields) == 9 and fields[7].startswith("asymmetri"):
            names.add(fields[8].split(": ")[0].strip())
    return names


def _secure_boot(release):
    if not salt.utils.path.which("mokutil"):
        return _check("secure-boot", "driver", "skip", "mokutil is not installed: the Secure Boot state is unknown")
    argv = ["mokutil", "--sb-state"]
    _, said = _run(argv)
    evidence = f"{_cmd(argv)} said: {said}"
    if "SecureBoot enabled" not in said:
        if "SecureBoot disabled" in said:
            return _check("secure-boot", "driver", "ok", evidence + ": any module loads")
        return _check("secure-boot", "driver", "skip", evidence)
    if not nvgpu_node.nvidia_ko_present(release):
        return _check("secure-boot", "driver", "skip", f"{evidence}; no nvidia.ko for {release} to check (nvidia-ko)")
    signer_argv = ["modinfo", "-k", release, "-F", "signer", "nvidia"]
    retcode, signer = _run(signer_argv)
    evidence += f"; {_cmd(signer_argv)} said: {signer}"
    if retcode != 0:
        return _check("secure-boot", "driver", "skip", evidence)
    if signer == "no output":
        return _check("secure-boot", "driver", "fail",
                      f"{evidence}: the module is unsigned, the kernel refuses it (\"Key was rejected by service\")",
                      nvgpu_failures.SECURE_BOOT_FIX)
    trusted = _trusted_signers()
    if signer not in trusted:
        return _check("secure-boot", "driver", "fail",
                      f"{evidence}: {signer!r} is not enrolled (`mokutil --list-enrolled`: "
                      f"{', '.join(sorted(trusted)) or 'none'}), the kernel refuses the module "
                      "(\"Key was rejected by service\")", nvgpu_failures.SECURE_BOOT_FIX)
    return _check("secure-boot", "driver", "ok", f"{evidence}: enrolled")


def _nouveau():
    if nvgpu_node.module_loaded("nouveau"):
        return _check("nouveau", "kernel-modules", "fail",
                      f"{nvgpu_node.SYS_MODULE}/nouveau exists: nouveau is loaded",
                      nvgpu_failures.NOUVEAU_LOADED["fix"])
    return _check("nouveau", "kernel-modules", "ok", "nouveau is not loaded")


def _nvidia_loaded():
    missing = [name for name in ("nvidia", "nvidia_uvm") if not nvgpu_node.module_loaded(name)]
    if missing:
        return _check("nvidia-loaded", "kernel-modules", "fail",
                      f"not loaded (no {nvgpu_node.SYS_MODULE}/<name>): {', '.join(missing)}",
                      nvgpu_failures.LOAD_MODULES_FIX)
    return _check("nvidia-loaded", "kernel-modules", "ok", "nvidia and nvidia_uvm are loaded")


def _driver_version(loaded, installed):
    if loaded is None or installed is None:
        what = "no driver loaded" if loaded is None else "no driver installed"
        return _check("driver-version", "kernel-modules", "skip", f"{what}: nothing to compare")
    evidence = f"loaded {loaded} ({nvgpu_node.SYS_DRIVER_VERSION}), installed {installed} ({nvgpu_node.DRIVER_LIB_GLOB})"
    if loaded != installed:
        return _check("driver-version", "kernel-modules", "fail",
                      f"{evidence}: reload or reboot required", nvgpu_failures.RELOAD_FIX)
    return _check("driver-version", "kernel-modules", "ok", evidence)


def _device_nodes(loaded):
    nodes = nvgpu_node.device_nodes()
    names = {os.path.basename(path) for path in nodes}
    missing = [name for name in ("nvidiactl", "nvidia-uvm") if name not in names]
    if not any(name[len("nvidia"):].isdigit() for name in names):
        missing.insert(0, "nvidia0..N")
    if missing:
        why = "" if loaded else " (the driver is not loaded)"
        return _check("device-nodes", "kernel-modules", "fail",
                      f"missing in {nvgpu_node.DEV}: {', '.join(missing)}{why}", nvgpu_failures.LOAD_MODULES_FIX)
    closed = []
    # MIG capability nodes (/dev/nvidia-caps/*) are 0400 by design: only the device nodes count.
    for path in (p for p in nodes if os.path.dirname(p) == nvgpu_node.DEV):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            continue
        if mode & 0o006 != 0o006:
            closed.append(f"{path} {mode:04o}")
    if closed:
        return _check("device-nodes", "kernel-modules", "warn",
                      f"not read-write for all users (rootless containers need 0666): {', '.join(closed)}",
                      "chmod 0666 /dev/nvidia* (the driver's NVreg_DeviceFileMode=0666, the default)")
    return _check("device-nodes", "kernel-modules", "ok", ", ".join(nodes))


# ---------------------------------------------------------------------------
# NVSwitch fabric
# ---------------------------------------------------------------------------


# systemctl's words where systemd is not PID 1 (a container, a chroot): no service to ask.
_NO_SYSTEMD = ("has not been booted with systemd", "Failed to connect to bus")


def _service(name):
    """(active: True/False, or None where systemd cannot be asked; evidence)."""
    if not salt.utils.path.which("systemctl"):
        return None, f"no systemctl to ask about {name}"
    argv = ["systemctl", "is-active", name]
    retcode, said = _run(argv)
    evidence = f"{_cmd(argv)} said: {said}"
    if any(text in said for text in _NO_SYSTEMD):
        return None, evidence
    return retcode == 0 and said == "active", evidence


def _persistenced():
    active, evidence = _service(nvgpu_node.PERSISTENCED_SERVICE)
    if active is None:
        return _check("persistenced", "kernel-modules", "skip", evidence)
    if not active:
        # NVIDIA's "Driver Persistence" notes: without a client holding the GPUs, the driver
        # tears their state down when the last one exits, and sets it up again (slowly) for the next.
        return _check("persistenced", "kernel-modules", "warn",
                      f"{evidence}: without it the driver deinitialises the GPUs whenever no program uses them, "
                      "and each first CUDA call pays their initialisation again",
                      f"systemctl enable --now {nvgpu_node.PERSISTENCED_SERVICE} (package nvidia-persistenced "
                      "of the driver stream)")
    return _check("persistenced", "kernel-modules", "ok", evidence)


def _fabric_manager(loaded):
    switches = nvgpu_node.nvswitches()
    if not switches:
        return _check("fabric-manager", "fabric", "skip",
                      f"no NVSwitch in {nvgpu_node.SYS_PCI_DEVICES} (vendor {nvgpu_node.NVIDIA_PCI_VENDOR}, "
                      f"device {' or '.join(nvgpu_node.NVSWITCH_DEVICE_IDS)}): no fabric manager needed")
    found = f"{len(switches)} NVSwitch ({', '.join(switches)})"
    active, said = _service(nvgpu_node.FABRIC_MANAGER_SERVICE)
    evidence = f"{found}; {said}"
    if active is None:
        return _check("fabric-manager", "fabric", "skip", evidence)
    # Exactly the driver's version: the fabric manager refuses to start on another one.
    version = None
    if salt.utils.path.which("rpm"):
        query = ["rpm", "-q", "--qf", "%{VERSION}", nvgpu_node.FABRIC_MANAGER_PACKAGE]
        rc, version = _run(query)
        evidence += f"; {_cmd(query)} said: {version}"
        version = version if rc == 0 else None
    if version and loaded and version != loaded:
        return _check("fabric-manager", "fabric", "fail",
                      f"{evidence}; the loaded driver is {loaded}: the fabric manager runs only with its own "
                      "driver version (CUDA fails with error 802, system not yet initialized)",
                      f"dnf install {nvgpu_node.FABRIC_MANAGER_PACKAGE}-{loaded} (the driver stream's fm profile: "
                      f"dnf module install nvidia-driver:STREAM/fm), then systemctl restart "
                      f"{nvgpu_node.FABRIC_MANAGER_SERVICE}")
    if not active:
        return _check("fabric-manager", "fabric", "fail",
                      evidence + " (CUDA fails with error 802, system not yet initialized)",
                      nvgpu_failures.FABRIC_MANAGER_FIX)
    smi = salt.utils.path.which("nvidia-smi")
    if smi and loaded:
        query = [smi, "--query-gpu=index,fabric.state", "--format=csv,noheader"]
        rc, states = _run(query)
        evidence += f"; {_cmd(query)} said: {states}"
        rows = [row.split(",", 1) for row in states.split("; ")] if rc == 0 else []
        pending = [f"GPU {index.strip()} {state.strip()}" for index, state in (r for r in rows if len(r) == 2)
                   if state.strip() not in (nvgpu_node.FABRIC_COMPLETED, *nvgpu_node.FABRIC_NOT_REPORTED)]
        if pending:
            return _check("fabric-manager", "fabric", "fail",
                          f"{evidence}: the NVLink fabric is not trained ({', '.join(pending)}); CUDA waits "
                          "(error 802, system not yet initialized)",
                          f"journalctl -u {nvgpu_node.FABRIC_MANAGER_SERVICE} for its reason, then systemctl "
                          f"restart {nvgpu_node.FABRIC_MANAGER_SERVICE}")
    return _check("fabric-manager", "fabric", "ok", evidence)


# ---------------------------------------------------------------------------
# Podman and the toolkit
# ---------------------------------------------------------------------------


def _podman():
    """(check, version or None)."""
    podman = salt.utils.path.which("podman")
    if not podman:
        return _check("podman", "podman", "fail", "podman is not in PATH",
                      f"{STATE_APPLY} (pillar gpu:runtime; dnf install podman, on RHEL 8 "
                      "dnf module install container-tools)"), None
    argv = [podman, "--version"]
    retcode, said = _run(argv)
    version = nvgpu_node.parse_podman_version(said) if retcode == 0 else None
    evidence = f"{_cmd(argv)} said: {said}"
    if not version:
        return _check("podman", "podman", "fail", evidence, "reinstall podman: dnf reinstall podman"), None
    return _check("podman", "podman", "ok", evidence), version


def _toolkit():
    ctk = salt.utils.path.which("nvidia-ctk")
    if not ctk:
        package = _pillar("gpu:toolkit:package", "nvidia-container-toolkit")
        return _check("toolkit", "toolkit", "fail", "nvidia-ctk is not in PATH",
                      f"{STATE_APPLY} (pillar gpu:toolkit:package: dnf install {package})")
    return _check("toolkit", "toolkit", "ok", f"nvidia-ctk is {ctk}")


def _mode(podman_version):
    """(check, the mode in effect or None)."""
    configured = _pillar("gpu:toolkit:mode", "auto")
    try:
        effective = nvgpu_node.resolve_mode(configured, podman_version)
    except ValueError as err:
        return _check("mode", "toolkit", "fail", f"pillar gpu:toolkit:mode: {err}",
                      f"set pillar gpu:toolkit:mode to one of {', '.join(nvgpu_node.MODES)}"), None
    if effective is None:
        return _check("mode", "toolkit", "skip",
                      "pillar gpu:toolkit:mode is auto and Podman is not installed: no mode yet"), None
    how = f" (Podman {podman_version})" if configured == "auto" else ""
    return _check("mode", "toolkit", "ok", f"pillar gpu:toolkit:mode {configured}{how} -> {effective}"), effective


def _cdi_owner():
    """(the owner of the CDI spec as the container_toolkit state resolves it, refresh usable,
    the owner's spec path)."""
    # The state's rule: systemd's service module is loaded only where systemd runs.
    refresh = __salt__["nvgpu_toolkit.cdi_refresh_shipped"]() and "service.enable" in __salt__
    configured = _pillar("gpu:toolkit:cdi_owner", "auto")
    try:
        owner = nvgpu_node.resolve_cdi_owner(configured, refresh)
    except ValueError:
        owner = "formula"
    ours = nvgpu_node.CDI_REFRESH_SPEC if owner == "refresh" else _pillar("gpu:toolkit:cdi_path",
                                                                        nvgpu_node.CDI_SPEC_PATH)
    return owner, refresh, ours


def _cdi_refresh(mode, owner, refresh):
    """nvidia-cdi-refresh present, and enabled exactly when it owns the spec."""
    if mode != "cdi":
        return _check("cdi-refresh", "toolkit", "skip", f"mode is {mode}, not cdi")
    configured = _pillar("gpu:toolkit:cdi_owner", "auto")
    units = (nvgpu_node.CDI_REFRESH_PATH_UNIT, nvgpu_node.CDI_REFRESH_SERVICE)
    if not __salt__["nvgpu_toolkit.cdi_refresh_shipped"]():
        return _check("cdi-refresh", "toolkit", "ok", f"no {nvgpu_node.CDI_REFRESH_SERVICE} in "
                      f"{' or '.join(nvgpu_node.SYSTEMD_UNIT_DIRS)} (toolkit before 1.18): the spec is the formula's")
    if not refresh:
        return _check("cdi-refresh", "toolkit", "skip", f"{nvgpu_node.CDI_REFRESH_SERVICE} is installed but "
                      "systemd does not run here: it never runs, the spec is the formula's")
    enabled = [unit for unit in units if __salt__["service.enabled"](unit)]
    watching = __salt__["service.status"](nvgpu_node.CDI_REFRESH_PATH_UNIT)
    evidence = (f"pillar gpu:toolkit:cdi_owner {configured} -> {owner}; enabled: {', '.join(enabled) or 'none'}; "
                f"{nvgpu_node.CDI_REFRESH_PATH_UNIT} {'active' if watching else 'inactive'}")
    if owner == "refresh":
        if len(enabled) < len(units) or not watching:
            return _check("cdi-refresh", "toolkit", "fail",
                          f"{evidence}: nvidia-cdi-refresh owns the spec but does not watch for driver changes, "
                          f"so {nvgpu_node.CDI_REFRESH_SPEC} goes stale (or missing after a boot)",
                          f"systemctl enable {' '.join(units)}; systemctl start {units[0]} (or {STATE_APPLY})")
        return _check("cdi-refresh", "toolkit", "ok", f"{evidence}: the spec {nvgpu_node.CDI_REFRESH_SPEC} is "
                      "nvidia-cdi-refresh's")
    if enabled or watching:
        return _check("cdi-refresh", "toolkit", "fail",
                      f"{evidence}: the formula owns the spec, but nvidia-cdi-refresh would write "
                      f"{nvgpu_node.CDI_REFRESH_SPEC} too, which Podman prefers",
                      f"systemctl disable --now {' '.join(units)} (or {STATE_APPLY})")
    return _check("cdi-refresh", "toolkit", "ok", f"{evidence}: the spec is the formula's")


def _cdi_specs(mode, loaded, ours, owner):
    """The checks of the CDI specs of kind nvidia.com/gpu: one of them, readable, for the loaded driver."""
    names = ("cdi-spec-count", "cdi-spec-readable", "cdi-spec-driver")
    if mode != "cdi":
        return [_check(name, "toolkit", "skip", f"mode is {mode}, not cdi") for name in names]
    specs = []
    for path in nvgpu_node.cdi_spec_files():
        spec = __salt__["nvgpu_toolkit.cdi_spec"](path)
        if spec["kind"] == nvgpu_node.CDI_KIND:
            specs.append((path, spec))
    where = " and ".join(nvgpu_node.CDI_DIRS)
    generate = f"nvidia-ctk cdi generate --output={ours}, or {STATE_APPLY}"
    paths = [path for path, _ in specs]
    if not specs:
        checks = [_check(names[0], "toolkit", "fail", f"no CDI spec of kind {nvgpu_node.CDI_KIND} in {where}",
                         generate)]
        return checks + [_check(name, "toolkit", "skip", "no CDI spec") for name in names[1:]]
    if len(specs) > 1:
        # Podman reads the directories in order: for a device named twice the later spec wins.
        extra = [path for path in paths if path != ours] if ours in paths else paths[:-1]
        checks = [_check(names[0], "toolkit", "fail",
                         f"{len(specs)} specs of kind {nvgpu_node.CDI_KIND}: {', '.join(paths)}; Podman uses "
                         f"{paths[-1]} for the devices they share",
                         f"keep one: rm {' '.join(extra)} (one in /var/run/cdi is written by the toolkit's "
                         "nvidia-cdi-refresh: pillar gpu:toolkit:cdi_owner says whose spec it is, and "
                         f"{STATE_APPLY} keeps that one only)")]
    else:
        checks = [_check(names[0], "toolkit", "ok", f"one spec of kind {nvgpu_node.CDI_KIND}: {paths[0]}")]
    modes = ", ".join(f"{path} {spec['mode']}" for path, spec in specs)
    closed = [path for path, spec in specs if not spec["mode"] or not int(spec["mode"], 8) & 0o004]
    if closed:
        checks.append(_check(names[1], "toolkit", "fail", f"not readable by all users (rootless Podman): {modes}",
                             f"chmod 0644 {' '.join(closed)}"))
    else:
        checks.append(_check(names[1], "toolkit", "ok", f"readable by all: {modes}"))
    if loaded is None:
        checks.append(_check(names[2], "toolkit", "skip", "no driver loaded to compare with"))
        return checks
    said = ", ".join(f"{path} for {spec['driver_version']}" for path, spec in specs)
    stale = [path for path, spec in specs if spec["driver_version"] != loaded]
    if stale:
        if stale == [ours]:
            fix = (f"systemctl restart {nvgpu_node.CDI_REFRESH_SERVICE} (it regenerates it), or {STATE_APPLY}"
                   if owner == "refresh" else nvgpu_failures.CDI_REGENERATE_FIX)
        else:
            fix = f"rm or regenerate {' '.join(stale)}: {generate}"
        checks.append(_check(names[2], "toolkit", "fail", f"driver {loaded} is loaded; {said}", fix))
    else:
        checks.append(_check(names[2], "toolkit", "ok", f"driver {loaded} is loaded; {said}"))
    return checks


def _hook(mode):
    path = _pillar("gpu:toolkit:hook_path", nvgpu_node.OCI_HOOK_PATH)
    binary = _pillar("gpu:toolkit:hook_binary", nvgpu_node.OCI_HOOK_BINARY)
    current = __salt__["nvgpu_toolkit.oci_hook"](path)
    wanted = __salt__["nvgpu_toolkit.oci_hook_content"](binary)
    if mode != "hook":
        if mode == "cdi" and current == wanted:
            return _check("oci-hook", "toolkit", "warn",
                          f"{path} is NVIDIA's hook, and the mode is cdi: the GPU is injected twice",
                          f"{STATE_APPLY} (it removes the hook in cdi mode), or rm {path}")
        return _check("oci-hook", "toolkit", "skip", f"mode is {mode}, not hook")
    if current != wanted:
        what = "absent or not valid JSON" if current is None else "not NVIDIA's hook (different content)"
        return _check("oci-hook", "toolkit", "fail", f"{path} is {what}", f"{STATE_APPLY} (it writes NVIDIA's hook)")
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        return _check("oci-hook", "toolkit", "fail", f"{path} is NVIDIA's hook but {binary} is not an executable",
                      "dnf reinstall nvidia-container-toolkit (it provides nvidia-container-runtime-hook)")
    return _check("oci-hook", "toolkit", "ok", f"{path} is NVIDIA's hook; {binary} exists")


def _no_cgroups(mode, users):
    if mode != "hook":
        return _check("no-cgroups", "rootless", "skip", f"mode is {mode}: only the hook sets up device cgroups")
    if not users:
        return _check("no-cgroups", "rootless", "skip", "no rootless users (pillar gpu:rootless_users)")
    value = __salt__["nvgpu_toolkit.config_value"](nvgpu_node.NO_CGROUPS_KEY)
    evidence = f"{nvgpu_node.NO_CGROUPS_KEY} = {value} in {nvgpu_node.TOOLKIT_CONFIG}; rootless users: {', '.join(users)}"
    if value is not True:
        return _check("no-cgroups", "rootless", "fail", evidence,
                      nvgpu_failures.NO_CGROUPS_FIX)
    return _check("no-cgroups", "rootless", "ok", evidence)


# ---------------------------------------------------------------------------
# SELinux
# ---------------------------------------------------------------------------


def _selinux():
    mode = __salt__["nvgpu_selinux.mode"]()
    checks = []
    if mode == "Disabled":
        return [_check("selinux-mode", "selinux", "skip", "getenforce: Disabled"),
                _check("selinux-policy", "selinux", "skip", "SELinux is disabled"),
                _check("selinux-labels", "selinux", "skip", "SELinux is disabled")]
    checks.append(_check("selinux-mode", "selinux", "ok", f"getenforce: {mode}"))
    if not _pillar("gpu:selinux:enabled", True):
        checks.append(_check("selinux-policy", "selinux", "skip", "pillar gpu:selinux:enabled is false"))
        checks.append(_check("selinux-labels", "selinux", "skip", "pillar gpu:selinux:enabled is false"))
        return checks
    method = __salt__["nvgpu_selinux.method"](_pillar("gpu:selinux:method", "auto"))
    if method == "boolean":
        name = nvgpu_node.SELINUX_BOOLEAN
        value = __salt__["nvgpu_selinux.boolean"](name)
        if value != "on":
            checks.append(_check("selinux-policy", "selinux", "fail",
                                 f"method boolean: `getsebool {name}` says {value or 'not defined'}",
                                 f"salt-call state.apply gpu.selinux; by hand: setsebool -P {name} on"))
        else:
            checks.append(_check("selinux-policy", "selinux", "ok", f"method boolean: `getsebool {name}` says on"))
    else:
        module = _pillar("gpu:selinux:module_name", "nvidia-container")
        modules = __salt__["nvgpu_selinux.policy_modules"]()
        if module not in modules:
            checks.append(_check("selinux-policy", "selinux", "fail",
                                 f"`semodule -l` lists {len(modules)} modules, not {module}",
                                 f"salt-call state.apply gpu.selinux (pillar gpu:selinux:policy_source); "
                                 f"by hand: {nvgpu_failures.SELINUX_FIX}"))
        else:
            checks.append(_check("selinux-policy", "selinux", "ok", f"`semodule -l` lists {module}"))
    # Either method: the formula relabels what restorecon says is wrong.
    checks.append(_selinux_labels())
    return checks


def _selinux_labels():
    if not _pillar("gpu:selinux:relabel", True):
        return _check("selinux-labels", "selinux", "skip", "pillar gpu:selinux:relabel is false")
    # What the formula relabels besides /dev: the driver's files the toolkit puts into
    # containers (nvidia-container-cli list names them; found here without running it).
    globs = (nvgpu_node.DRIVER_LIB_GLOB, nvgpu_node.DRIVER_LIBS_GLOB, nvgpu_node.DRIVER_BIN_GLOB)
    files = sorted({path for pattern in globs for path in glob.glob(pattern)})
    try:
        wrong = __salt__["nvgpu_selinux.relabel_needed"]([nvgpu_node.DEV], recursive=True)
        wrong += [p for p in __salt__["nvgpu_selinux.relabel_needed"](files) if p not in wrong] if files else []
    except CommandExecutionError as err:
        return _check("selinux-labels", "selinux", "warn", f"restorecon -n failed: {err}",
                      "check the SELinux policy (sestatus) and run restorecon -n -v -R /dev by hand")
    checked = f"`restorecon -n -v -R {nvgpu_node.DEV}` and {len(files)} driver files"
    if wrong:
        return _check("selinux-labels", "selinux", "fail", f"{checked}: would relabel {', '.join(wrong)}",
                      f"restorecon -v {' '.join(wrong)} (or salt-call state.apply gpu.selinux)")
    return _check("selinux-labels", "selinux", "ok", f"{checked}: every label is the policy's")


# ---------------------------------------------------------------------------
# Rootless users
# ---------------------------------------------------------------------------


def _rootless_users(user):
    if user is not None:
        return [str(user)]
    names = []
    for entry in _pillar("gpu:rootless_users", []) or []:
        name = entry.get("name") if isinstance(entry, dict) else entry
        if name and str(name) not in names:
            names.append(str(name))
    return names


def _subids(name, kind, own_id):
    ranges = __salt__["nvgpu_rootless.subids"](name, kind=kind)
    path = nvgpu_node.SUBID_FILES[kind]
    check = f"{kind}:{name}"
    fix = (f"{STATE_APPLY} (pillar gpu:rootless_users), or usermod --add-{kind}s 100000-165535 {name}; "
           f"then podman system migrate as {name}")
    if not ranges:
        return _check(check, "rootless", "fail", f"no range for {name} in {path}", fix)
    said = ", ".join(f"{r['start']}+{r['count']}" for r in ranges)
    for r in ranges:
        if own_id is not None and r["start"] <= own_id < r["start"] + r["count"]:
            return _check(check, "rootless", "fail", f"{name}'s range {said} in {path} contains its own id {own_id}",
                          nvgpu_failures.SUBID_OWN_ID_FIX)
        taken = __salt__["nvgpu_rootless.overlaps"](name, r["start"], r["count"], kind=kind)
        if taken:
            others = ", ".join(f"{t['user']} {t['start']}+{t['count']}" for t in taken)
            return _check(check, "rootless", "fail", f"{name}'s range {said} in {path} overlaps {others}",
                          f"give {name} a free range: pillar gpu:rootless_users[].subuid_start, or drop the "
                          f"overlapping one (usermod --del-{kind}s)")
    return _check(check, "rootless", "ok", f"{name}: {said} in {path}")


def _runtime_dir(name, uid):
    check = f"runtime-dir:{name}"
    path = os.path.join(nvgpu_node.USER_RUNTIME_DIR, str(uid))
    linger = nvgpu_node.linger_file(name)
    try:
        owner = os.stat(path).st_uid
    except OSError:
        owner = None
    if owner is not None:
        if owner != uid:
            return _check(check, "rootless", "fail", f"{path} belongs to uid {owner}, not {name} ({uid}): "
                          "rootless Podman refuses it", f"rm -rf {path}; loginctl enable-linger {name}")
        return _check(check, "rootless", "ok", f"{path} exists, owned by {name}")
    if os.path.exists(linger):
        return _check(check, "rootless", "ok", f"lingering is on ({linger}): systemd makes {path} at boot")
    if not os.path.isdir(nvgpu_node.SYSTEMD_RUN_DIR):
        return _check(check, "rootless", "skip", f"no {path} and systemd is not the init system (no "
                      f"{nvgpu_node.SYSTEMD_RUN_DIR}): Podman uses $TMPDIR/podman-run-{uid}")
    return _check(check, "rootless", "warn",
                  f"no {path} and lingering is off (no {linger}): rootless Podman run without a login session "
                  f"(salt runas, cron) falls back to /tmp/podman-run-{uid}, and systemd stops {name}'s "
                  "containers when the last session ends", f"loginctl enable-linger {name}")


def _user_checks(name):
    info = __salt__["user.info"](name)
    if not info:
        checks = [_check(f"account:{name}", "rootless", "fail", f"no user {name} (user.info)",
                         f"{STATE_APPLY} (pillar gpu:rootless_users), or useradd {name}")]
        return checks + [_check(f"{kind}:{name}", "rootless", "skip", f"no user {name}")
                         for kind in (*nvgpu_node.SUBID_FILES, "runtime-dir")]
    checks = [_check(f"account:{name}", "rootless", "ok", f"{name}: uid {info['uid']}, gid {info['gid']}")]
    checks.append(_subids(name, "subuid", info["uid"]))
    checks.append(_subids(name, "subgid", info["gid"]))
    checks.append(_runtime_dir(name, info["uid"]))
    return checks


# ---------------------------------------------------------------------------
# The validation image
# ---------------------------------------------------------------------------


def _image(podman):
    image = _pillar("gpu:validate:image", nvgpu_node.DEFAULT_IMAGE)
    if not podman:
        return _check("image", "image", "skip", "podman is not installed")
    argv = [podman, "image", "exists", image]
    retcode, _ = _run(argv)
    if retcode == 0:
        return _check("image", "image", "ok", f"{_cmd(argv)}: {image} is in root's image store")
    # Not here: can it be pulled? Read the manifest from the registry, never pull it.
    skopeo = salt.utils.path.which("skopeo")
    remote = [skopeo, "inspect", "--raw", f"docker://{image}"] if skopeo else [podman, "manifest", "inspect", image]
    retcode, said = _run(remote)
    evidence = f"{_cmd(argv)}: not in root's image store; {_cmd(remote)}"
    # Podman before 4.4 reads only manifest lists: for an image's own manifest it fails
    # with "parsing manifest blob" (seen with 4.3.1), which still means the registry has it.
    if retcode != 0 and "parsing manifest blob" not in said:
        return _check("image", "image", "fail", f"{evidence} said: {said}",
                      f"check the name and the registry (podman pull {image}); air-gapped sites mirror it and "
                      "set pillar gpu:validate:image")
    if _pillar("gpu:validate:pull", "missing") == "never":
        return _check("image", "image", "fail", f"{evidence}: the registry has it, but pillar gpu:validate:pull "
                      "is never", f"podman pull {image} (and as each rootless user)")
    return _check("image", "image", "warn", f"{evidence}: the registry has it, the vector add pulls it first",
                  f"podman pull {image} (and as each rootless user), or pillar gpu:validate:pull")


# ---------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------


@nvgpu_state.raises_unloaded_modules
def run(user=None):
    """
    Check the node layer by layer and say which layer is broken, how that was found,
    and the fix. Changes nothing on the node.

    user
        Check this rootless user only. Default: every user of pillar ``gpu:rootless_users``.

    Returns ``{"ok": bool, "first_failing_layer": str|None, "checks": [{"name", "layer",
    "status": ok|fail|warn|skip, "evidence", "fix"}], "gpus": [{"index", "uuid", "name", "pci",
    "healthy", "causes"}], "gpus_healthy": int, "gpus_failing": int}`` (the GPUs as
    ``nvgpu_health.check`` sees them); the job's exit code is 1 when a check fails.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_doctor.run
        salt '*' nvgpu_doctor.run user=gpuuser
    """
    release = nvgpu_node.kernel_release()
    loaded = nvgpu_node.loaded_driver_version()
    installed = nvgpu_node.installed_driver_version()
    users = _rootless_users(user)

    checks = [
        _kernel_devel(release),
        _nvidia_ko(release),
        _nvidia_ko_newest(release),
        _secure_boot(release),
        _nouveau(),
        _nvidia_loaded(),
        _driver_version(loaded, installed),
        _device_nodes(loaded),
        _persistenced(),
        _fabric_manager(loaded),
    ]
    # Each GPU's health (nvgpu_health): on the bus, Xid errors, ECC and remapped memory.
    health = __salt__["nvgpu_health.check"](loaded=loaded is not None)
    checks += health["checks"]
    podman, podman_version = _podman()
    checks += [podman, _toolkit()]
    mode_check, mode = _mode(podman_version)
    checks.append(mode_check)
    owner, refresh, ours = _cdi_owner()
    checks += _cdi_specs(mode, loaded, ours, owner)
    checks.append(_cdi_refresh(mode, owner, refresh))
    checks += [_hook(mode), _no_cgroups(mode, users)]
    checks += _selinux()
    for name in users:
        checks += _user_checks(name)
    checks.append(_image(salt.utils.path.which("podman")))

    failing = [check for check in checks if check["status"] == "fail"]
    if failing:
        __context__["retcode"] = 1
    return {"ok": not failing, "first_failing_layer": failing[0]["layer"] if failing else None, "checks": checks,
            "gpus": health["gpus"], "gpus_healthy": health["healthy"], "gpus_failing": health["failing"]}
