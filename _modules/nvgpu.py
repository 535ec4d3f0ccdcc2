"""
Execution module for NVIDIA GPU nodes that run Podman containers.

Finds the facts a GPU container node stands on (loaded kernel modules, driver and
Podman versions, the host files ``nvidia-container-cli`` injects into containers),
loads the driver, and runs the validation workload (the CUDA vector add) as root or
as a rootless user, with a diagnosis when it fails.

Loads on any Linux minion, GPU or not; a function that needs a missing tool says which
tool and which package provides it.

:depends: nvidia-modprobe (NVIDIA driver), nvidia-container-cli (libnvidia-container-tools),
          podman
"""

import configparser
import glob
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time

import salt.utils.files
import salt.utils.path
import salt.utils.yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "nvgpu"

# /sys/module/<name> exists for every loaded or built-in module, also on kernels
# without loadable-module support, where /proc/modules is absent.
_SYS_MODULE = "/sys/module"
_PROC_MODULES = "/proc/modules"
_KERNEL_MODULES = ("nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm", "nouveau")
_LIB_MODULES = "/lib/modules"
_OSRELEASE = "/proc/sys/kernel/osrelease"
_DEV = "/dev"
_SYS_DRIVER_VERSION = "/sys/module/nvidia/version"
_PROC_DRIVER_VERSION = "/proc/driver/nvidia/version"
_CDI_DIRS = ("/etc/cdi", "/var/run/cdi")

DEFAULT_IMAGE = "docker.io/mirrorgooglecontainers/cuda-vector-add:v0.1"

_DRIVER_PACKAGE_HINT = "install the NVIDIA driver: dnf module install nvidia-driver:STREAM (e.g. latest-dkms)"


def __virtual__():
    if __grains__.get("kernel") != "Linux":
        return (False, "The nvgpu execution module only runs on Linux minions")
    return __virtualname__


def _which(tool, hint):
    """
    Absolute path of ``tool``; raise naming the tool and where it comes from.
    """
    path = salt.utils.path.which(tool)
    if not path:
        raise CommandExecutionError(f"{tool} not found in PATH: {hint}")
    return path


def _read(path):
    try:
        with salt.utils.files.fopen(path, "r") as fh_:
            return fh_.read()
    except OSError:
        return None


def _tool_error(what, ret, diagnosis=None, extra=None):
    """
    CommandExecutionError carrying the tool's own words plus cause and fix.
    """
    said = (ret.get("stderr") or "").strip() or (ret.get("stdout") or "").strip()
    message = f"{what} failed (exit {ret.get('retcode')})"
    if said:
        message += f": {said}"
    if diagnosis:
        message += f"\nLikely cause: {diagnosis['cause']}\nFix: {diagnosis['fix']}"
    info = {
        "retcode": ret.get("retcode"),
        "stdout": ret.get("stdout", ""),
        "stderr": ret.get("stderr", ""),
        "diagnosis": diagnosis,
    }
    if extra:
        info.update(extra)
    return CommandExecutionError(message, info=info)


# ---------------------------------------------------------------------------
# Kernel modules
# ---------------------------------------------------------------------------


def _proc_modules():
    text = _read(_PROC_MODULES)
    if text is None:
        return None
    return {line.split()[0] for line in text.splitlines() if line.strip()}


def loaded_modules():
    """
    Which of the NVIDIA kernel modules (and nouveau, which blocks them) are loaded.

    Read from ``/sys/module/<name>``, with ``/proc/modules`` as the fallback where
    ``/sys/module`` is not available.

    Returns ``{"nvidia": bool, "nvidia_uvm": bool, "nvidia_modeset": bool,
    "nvidia_drm": bool, "nouveau": bool}``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.loaded_modules
    """
    return {name: _module_loaded(name) for name in _KERNEL_MODULES}


def _module_loaded(name):
    """The one reading of "is this kernel module loaded" (/sys/module, else /proc/modules)."""
    if os.path.isdir(_SYS_MODULE):
        path = os.path.join(_SYS_MODULE, name)
        # A module being removed keeps its directory until it is gone; initstate
        # says so. Built-in modules have no initstate.
        state = _read(os.path.join(path, "initstate"))
        return os.path.isdir(path) and (state is None or state.strip() == "live")
    return name in (_proc_modules() or set())


def _device_nodes():
    nodes = [path for path in glob.glob(os.path.join(_DEV, "nvidia*")) if not os.path.isdir(path)]
    nodes.extend(glob.glob(os.path.join(_DEV, "nvidia-caps", "*")))
    return sorted(nodes)


def _kernel_release():
    # The running kernel's own answer; uname gives the same on a normal host.
    text = _read(_OSRELEASE)
    if text and text.strip():
        return text.strip()
    return os.uname().release


def _nvidia_ko_present(release):
    """
    True when an nvidia.ko[.xz|.zst|.gz] exists for ``release`` (extra/, updates/dkms/,
    weak-updates/, ... wherever DKMS or a kmod package put it).
    """
    pattern = re.compile(r"^nvidia\.ko(\.(xz|zst|gz))?$")
    for _root, _dirs, files in os.walk(os.path.join(_LIB_MODULES, release)):
        if any(pattern.match(name) for name in files):
            return True
    return False


def _load_failure_diagnosis():
    """
    Why nvidia-modprobe could not load the driver, from the node's state. Both
    blockers can hold at once (a fresh install: nouveau bound, DKMS build failed);
    then both are named, the missing module first, since it must be fixed first.
    """
    found = []
    release = _kernel_release()
    if not _nvidia_ko_present(release):
        found.append(
            (
                f"no nvidia kernel module is built for the running kernel {release}",
                f"install kernel-devel-{release} and kernel-headers-{release}, then rebuild "
                "the driver with DKMS (dkms autoinstall, or reinstall the nvidia-driver stream)",
            )
        )
    if loaded_modules()["nouveau"]:
        found.append(
            (
                "the nouveau driver is loaded and holds the GPU",
                "unload nouveau (modprobe -r nouveau) and blacklist it (blacklist nouveau in "
                "/etc/modprobe.d, rd.driver.blacklist=nouveau on the kernel command line; reboot "
                "if it is in use)",
            )
        )
    if not found:
        found.append(
            (
                "the kernel refused the nvidia module",
                "read the NVRM lines in dmesg (journalctl -k), e.g. a Secure Boot signature "
                "or a GPU not supported by this driver branch",
            )
        )
    return {
        "cause": "; and ".join(cause for cause, _fix in found),
        "fix": "; then ".join(fix for _cause, fix in found),
    }


def load_modules(uvm=True):
    """
    Load the NVIDIA kernel modules the way the driver packages do: ``nvidia-modprobe``
    (nvidia, /dev/nvidiactl, /dev/nvidiaN), then ``nvidia-modprobe -u`` (nvidia_uvm,
    /dev/nvidia-uvm*). Runs nothing when they are already loaded.

    uvm
        Also load nvidia_uvm, which CUDA needs. Default True.

    Returns ``{"modules": {...as loaded_modules...}, "device_nodes": [paths], "changed": bool}``.
    Raises CommandExecutionError with the tool's message and the likely cause
    (nouveau loaded, no module for the running kernel, driver not installed).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.load_modules
        salt '*' nvgpu.load_modules uvm=False
    """
    wanted = ["nvidia", "nvidia_uvm"] if uvm else ["nvidia"]
    before = loaded_modules()
    if all(before[name] for name in wanted):
        return {"modules": before, "device_nodes": _device_nodes(), "changed": False}

    tool = _which("nvidia-modprobe", _DRIVER_PACKAGE_HINT)
    for argv in ([tool], [tool, "-u"]) if uvm else ([tool],):
        ret = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
        if ret["retcode"] != 0:
            raise _tool_error(" ".join(argv), ret, _load_failure_diagnosis(), {"command": argv})

    after = loaded_modules()
    missing = [name for name in wanted if not after[name]]
    if missing:
        # nvidia-modprobe is a setuid helper that often exits 0 and says nothing.
        diagnosis = _load_failure_diagnosis()
        raise CommandExecutionError(
            "nvidia-modprobe ran but {} is not loaded\nLikely cause: {}\nFix: {}".format(
                ", ".join(missing), diagnosis["cause"], diagnosis["fix"]
            ),
            info={"modules": after, "diagnosis": diagnosis},
        )
    return {"modules": after, "device_nodes": _device_nodes(), "changed": after != before}


# ---------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------

_PROC_VERSION_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)*)")


def _parse_proc_driver_version(text):
    """
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.08  ..." -> "550.127.08"
    (also the open modules' "... Open Kernel Module for x86_64  550.127.05 ...").
    """
    match = _PROC_VERSION_RE.search(text or "")
    return match.group(1) if match else None


def driver_version():
    """
    Version of the loaded NVIDIA kernel driver, e.g. ``"550.127.08"``, or None when
    the driver is not loaded.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.driver_version
    """
    text = _read(_SYS_DRIVER_VERSION)
    if text and text.strip():
        return text.strip()
    return _parse_proc_driver_version(_read(_PROC_DRIVER_VERSION))


_PODMAN_VERSION_RE = re.compile(r"version\s+(\S+)")


def _parse_podman_version(text):
    match = _PODMAN_VERSION_RE.search(text or "")
    return match.group(1) if match else None


def podman_version():
    """
    Installed Podman version, e.g. ``"4.3.1"``, or None when Podman is not installed.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.podman_version
    """
    podman = salt.utils.path.which("podman")
    if not podman:
        return None
    ret = __salt__["cmd.run_all"]([podman, "--version"], python_shell=False, ignore_retcode=True)
    if ret["retcode"] != 0:
        raise _tool_error("podman --version", ret)
    return _parse_podman_version(ret["stdout"])


# ---------------------------------------------------------------------------
# Files nvidia-container-cli injects into containers
# ---------------------------------------------------------------------------

CONTAINER_FILE_KINDS = ("devices", "mig", "binaries", "libraries", "libraries32", "ipcs", "firmware", "other")

_MIG_PREFIXES = ("/dev/nvidia-caps/", "/proc/driver/nvidia/capabilities/", "/proc/driver/nvidia-caps/")
_FIRMWARE_PREFIXES = ("/lib/firmware/", "/usr/lib/firmware/")
_IPC_PREFIXES = ("/run/", "/var/run/", "/tmp/nvidia-mps")
_LIB64_PREFIXES = (
    "/usr/lib64/",
    "/lib64/",
    "/usr/local/nvidia/lib64/",
    "/usr/lib/x86_64-linux-gnu/",
    "/lib/x86_64-linux-gnu/",
    "/usr/lib/aarch64-linux-gnu/",
    "/lib/aarch64-linux-gnu/",
    "/usr/lib/powerpc64le-linux-gnu/",
    "/lib/powerpc64le-linux-gnu/",
)
# Checked after the 64-bit ones: on RHEL, /usr/lib and /lib hold the 32-bit libraries.
_LIB32_PREFIXES = (
    "/usr/lib32/",
    "/usr/lib/i386-linux-gnu/",
    "/lib/i386-linux-gnu/",
    "/usr/local/nvidia/lib/",
    "/usr/lib/",
    "/lib/",
)


def _path_kind(path):
    if path.startswith(_MIG_PREFIXES) or path == "/dev/nvidia-caps":
        return "mig"
    if path.startswith("/dev/"):
        return "devices"
    if path.startswith(_FIRMWARE_PREFIXES):
        return "firmware"
    if path.startswith(_IPC_PREFIXES):
        return "ipcs"
    if os.path.basename(os.path.dirname(path)) in ("bin", "sbin"):
        return "binaries"
    if path.startswith(_LIB64_PREFIXES):
        return "libraries"
    if path.startswith(_LIB32_PREFIXES):
        return "libraries32"
    return "other"


def _categorise(text):
    """
    Sort the output of ``nvidia-container-cli list`` by what each path is, from the
    path alone. Order is kept, duplicates dropped, lines that are not absolute paths
    ignored; every path lands in exactly one list.
    """
    ret = {kind: [] for kind in CONTAINER_FILE_KINDS}
    seen = set()
    for line in (text or "").splitlines():
        path = line.strip()
        if not path.startswith("/"):
            continue
        if path in seen:
            continue
        seen.add(path)
        ret[_path_kind(path)].append(path)
    return ret


def list_container_files(kind=None, load_kmods=True):
    """
    The host files the NVIDIA hook (or CDI spec) puts into a GPU container, from
    ``nvidia-container-cli [-k] list``, sorted by kind from the path alone.

    kind
        Return only this list: one of devices, mig (MIG capability files), binaries,
        libraries (64-bit), libraries32, ipcs (sockets and pipes), firmware, other.

    load_kmods
        Pass ``-k``: let nvidia-container-cli load the kernel modules first. Default True.

    Returns ``{"devices": [...], "mig": [...], "binaries": [...], "libraries": [...],
    "libraries32": [...], "ipcs": [...], "firmware": [...], "other": [...]}``, or one list
    with ``kind``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.list_container_files
        salt '*' nvgpu.list_container_files kind=libraries
    """
    if kind is not None and kind not in CONTAINER_FILE_KINDS:
        raise SaltInvocationError(
            "Unknown kind {!r}: valid kinds are {}".format(kind, ", ".join(CONTAINER_FILE_KINDS))
        )
    cli = _which(
        "nvidia-container-cli",
        "install nvidia-container-toolkit (package libnvidia-container-tools provides nvidia-container-cli)",
    )
    argv = [cli, "-k", "list"] if load_kmods else [cli, "list"]
    ret = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    if ret["retcode"] != 0:
        text = "{}\n{}".format(ret.get("stderr", ""), ret.get("stdout", ""))
        raise _tool_error("nvidia-container-cli " + " ".join(argv[1:]), ret, diagnose(text))
    files = _categorise(ret["stdout"])
    return files if kind is None else files[kind]


# ---------------------------------------------------------------------------
# What a failure text means: (pattern, cause, fix), first match wins, so the
# specific entries come before the general ones. Used for the vector add's output,
# the OCI hook's errors that Podman passes on, and nvidia-container-cli's messages.
# ---------------------------------------------------------------------------

_SELINUX_FIX = (
    "install the SELinux policy module (semodule -i nvidia-container.pp from NVIDIA/dgx-selinux), "
    "relabel (nvidia-container-cli -k list | restorecon -v -f -; restorecon -Rv /dev), run rootless "
    "containers with --security-opt label=type:nvidia_container_t, and check that /dev/nvidia* are "
    "mode 0666 (ausearch -m avc shows denials)"
)

_DIAGNOSES = [
    (
        # crun's and runc's words for a bind-mount source that is gone.
        re.compile(
            r"error stat'?ing file\W*\S*\.so\.\d"
            r"|error mounting \"[^\"]*\.so\.\d[^\"]*\"[^\n]*no such file or directory",
            re.I,
        ),
        "the CDI spec names driver libraries that no longer exist: it was generated for an older "
        "driver and the driver has been upgraded since",
        "regenerate it: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml (the "
        "nvgpu.container_toolkit state does this when the driver version changes)",
    ),
    (
        re.compile(r"unresolvable CDI devices", re.I),
        "Podman found no CDI device nvidia.com/gpu: no CDI spec in /etc/cdi or /var/run/cdi, or "
        "the spec is not readable by the user running Podman",
        "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml, make it world-readable (0644), "
        "check with nvidia-ctk cdi list; or run with mode=hook",
    ),
    (
        re.compile(r"nvml error: driver not loaded", re.I),
        "the NVIDIA kernel module is not loaded on the host",
        "load it: salt-call nvgpu.load_modules (nvidia-modprobe && nvidia-modprobe -u)",
    ),
    (
        re.compile(r"load library failed: libnvidia-ml\.so|libnvidia-ml\.so\S*: cannot open shared", re.I),
        "the NVIDIA driver's user-space libraries (libnvidia-ml) are not installed on the host",
        _DRIVER_PACKAGE_HINT,
    ),
    (
        re.compile(
            r"insufficient permissions|(?:open|stat)\S* /dev/nvidia\S*: permission denied",
            re.I,
        ),
        "access to the GPU device nodes was denied: an SELinux denial (AVC on /dev/nvidia* with "
        "tcontext ...xserver_misc_device_t) or the device nodes' permissions",
        _SELINUX_FIX,
    ),
    (
        re.compile(
            r"cgroup subsystem devices not found|bpf_prog_query\(BPF_CGROUP_DEVICE\) failed"
            r"|failed to add device rules",
            re.I,
        ),
        "the NVIDIA hook tried to set up the device cgroup, which a rootless container may not do",
        "set no-cgroups for rootless use: nvidia-ctk config --set nvidia-container-cli.no-cgroups=true "
        "--in-place (in /etc/nvidia-container-runtime/config.toml), or use CDI (mode=cdi)",
    ),
    (
        re.compile(
            r"cannot find newuidmap|cannot find newgidmap|newuidmap\S*: not found|newgidmap\S*: not found"
            r"|no subuid ranges found|no subgid ranges found|not enough IDs available",
            re.I,
        ),
        "rootless Podman cannot map the user's IDs: newuidmap/newgidmap are missing or the user has "
        "no range in /etc/subuid and /etc/subgid",
        "dnf install shadow-utils; usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER; "
        "then podman system migrate as that user",
    ),
    (
        re.compile(
            r"manifest unknown|initializing source|no such host|connection refused|i/o timeout"
            r"|requested access to the resource is denied|image not known|unable to pull|name unknown",
            re.I,
        ),
        "Podman could not get the validation image (wrong name or tag, registry unreachable, or "
        "pull=never with the image not present)",
        "check the image and the registry with podman pull IMAGE as the same user; on air-gapped "
        "sites mirror the image to a local registry and pass image=",
    ),
    (
        re.compile(r"error running (?:prestart )?hook|nvidia-container-runtime-hook\S*: no such file", re.I),
        "the NVIDIA OCI hook failed before the container started",
        "run nvidia-container-cli -k -d /dev/tty info as root to see why; check the hook file in "
        "/usr/share/containers/oci/hooks.d and /etc/nvidia-container-runtime/config.toml",
    ),
    (
        re.compile(r"CUDA driver version is insufficient for CUDA runtime version", re.I),
        "libcuda was not injected into the container (no NVIDIA OCI hook, no CDI device, or the "
        "wrong runtime); on a host, the driver is older than the CUDA runtime",
        "install nvidia-container-toolkit and its OCI hook, or generate a CDI spec and run with "
        "--device nvidia.com/gpu=all (mode=cdi); on a host, upgrade the driver stream",
    ),
    (
        re.compile(r"no CUDA-capable device is detected", re.I),
        "no /dev/nvidia* device reached the program: the hook or CDI device is missing, or the "
        "driver is not loaded",
        "salt-call nvgpu.load_modules; then check the OCI hook or the CDI spec (nvidia-ctk cdi list)",
    ),
    (
        re.compile(r"Failed to launch vectorAdd kernel|Result verification failed", re.I),
        "the GPU itself misbehaves: the kernel did not run or computed wrong results",
        "look for Xid errors in dmesg (journalctl -k | grep -i xid) and check nvidia-smi -q; "
        "drain and reset or replace the GPU",
    ),
    (
        # What cmd.run_all reports when its timeout fires.
        re.compile(r"Timed out after [\d.]+ seconds", re.I),
        "the run did not finish within the timeout (a slow image pull, or a hung GPU)",
        "pull the image first or raise timeout=; check nvidia-smi and dmesg for a hung GPU",
    ),
]

_UNKNOWN_FAILURE = {
    "cause": "the vector add did not report Test PASSED and the output matches no known failure",
    "fix": "read stdout and stderr; rerun the command shown in 'command' by hand",
}


def diagnose(text):
    """
    Cause and fix for a GPU container failure text (vector-add output, Podman or
    NVIDIA hook error, nvidia-container-cli message), or None when nothing known
    matches.

    Returns ``{"cause": str, "fix": str}`` or None.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.diagnose 'nvidia-container-cli: initialization error: nvml error: driver not loaded'
    """
    # From the CLI a text such as "123" or "a: b" arrives already parsed as YAML.
    text = "" if text is None else str(text)
    for pattern, cause, fix in _DIAGNOSES:
        if pattern.search(text):
            return {"cause": cause, "fix": fix}
    return None


# ---------------------------------------------------------------------------
# The validation workload
# ---------------------------------------------------------------------------

_ELEMENTS_RE = re.compile(r"\[Vector addition of (\d+) elements\]")
_LAUNCH_RE = re.compile(r"CUDA kernel launch with (\d+) blocks of (\d+) threads")
_PASSED_RE = re.compile(r"^\s*Test PASSED\s*$", re.M)

_MODES = ("hook", "cdi", "auto")
_RUNTIMES = ("podman", "host")
_PULL = ("always", "missing", "never", "newer")
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")

# The guide's rootless flags, verbatim, after --user UID:GID.
_ROOTLESS_FLAGS = [
    "--security-opt=no-new-privileges",
    "--cap-drop=ALL",
    "--security-opt",
    "label=type:nvidia_container_t",
]


def _parse_vector_add(stdout, stderr=""):
    """
    {"passed_text": bool, "elements", "blocks", "threads"} from the vector add's output.
    """
    text = "{}\n{}".format(stdout or "", stderr or "").replace("\r\n", "\n").replace("\r", "\n")
    elements = _ELEMENTS_RE.search(text)
    launch = _LAUNCH_RE.search(text)
    return {
        "passed_text": bool(_PASSED_RE.search(text)),
        "elements": int(elements.group(1)) if elements else None,
        "blocks": int(launch.group(1)) if launch else None,
        "threads": int(launch.group(2)) if launch else None,
    }


def _cdi_gpu_spec_exists():
    for directory in _CDI_DIRS:
        for path in sorted(glob.glob(os.path.join(directory, "*"))):
            if not path.endswith((".yaml", ".yml", ".json")):
                continue
            try:
                spec = salt.utils.yaml.safe_load(_read(path) or "")
            except Exception:  # pylint: disable=broad-except
                # Podman ignores a spec it cannot parse; so do we.
                log.debug("nvgpu: cannot parse CDI spec %s", path)
                continue
            if isinstance(spec, dict) and spec.get("kind") == "nvidia.com/gpu":
                return True
    return False


def _validate_vector_add_args(image, user, runtime, mode, timeout, pull):
    if runtime not in _RUNTIMES:
        raise SaltInvocationError(f"runtime must be one of {', '.join(_RUNTIMES)}, not {runtime!r}")
    if mode not in _MODES:
        raise SaltInvocationError(f"mode must be one of {', '.join(_MODES)}, not {mode!r}")
    if pull not in _PULL:
        raise SaltInvocationError(f"pull must be one of {', '.join(_PULL)}, not {pull!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise SaltInvocationError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if user is not None:
        if runtime == "host":
            raise SaltInvocationError("user= only applies to runtime=podman")
        if not isinstance(user, str) or not _USER_RE.match(user):
            raise SaltInvocationError(f"invalid user name {user!r}")
    if runtime == "podman":
        # The image becomes one argv element; refuse what Podman would read as an option.
        if not isinstance(image, str) or not image or image.startswith("-") or re.search(r"\s", image):
            raise SaltInvocationError(f"invalid image reference {image!r}")


def run_vector_add(
    image=DEFAULT_IMAGE,
    user=None,
    runtime="podman",
    mode="auto",
    timeout=300,
    pull="missing",
):
    """
    Validate the node: run the CUDA vector add in a Podman container (or on the host)
    and say whether it passed, and if not, why and what to do.

    As root it is the guide's root test (``podman run --privileged IMAGE``). With
    ``user=`` Podman runs AS that user, with the guide's rootless flags
    (``--user UID:GID --security-opt=no-new-privileges --cap-drop=ALL
    --security-opt label=type:nvidia_container_t``), never ``--privileged``.

    image
        The validation image. Default ``docker.io/mirrorgooglecontainers/cuda-vector-add:v0.1``.

    user
        Run rootless as this local user. Default: root.

    runtime
        ``podman`` (default), or ``host``: run the check on the host through the CUDA
        driver (``nvgpu_cuda.vector_add``), no container.

    mode
        How the GPU reaches the container: ``hook`` (the NVIDIA OCI hook), ``cdi``
        (``--device nvidia.com/gpu=all``) or ``auto`` (cdi when a CDI spec for
        nvidia.com/gpu exists in /etc/cdi or /var/run/cdi, else hook).

    timeout
        Seconds before the run counts as failed. Default 300.

    pull
        Podman's ``--pull`` policy: always, missing (default), never, newer.

    Returns ``{"passed": bool, "elements": int|None, "blocks": int|None, "threads": int|None,
    "user": str|None, "mode": str, "command": [argv], "retcode": int, "stdout": str,
    "stderr": str, "diagnosis": None|{"cause": str, "fix": str}, "duration_s": float}``.
    A failed test is a result, not an error, and makes the job's exit code non-zero;
    only unusable arguments or a missing Podman raise.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.run_vector_add
        salt '*' nvgpu.run_vector_add user=gpuuser mode=cdi
        salt '*' nvgpu.run_vector_add image=registry.example.com/cuda-vector-add:v0.1
    """
    _validate_vector_add_args(image, user, runtime, mode, timeout, pull)

    if runtime == "host":
        if "nvgpu_cuda.vector_add" not in __salt__:
            raise CommandExecutionError(
                "runtime=host needs the nvgpu_cuda execution module, which is not loaded on this minion"
            )
        result = __salt__["nvgpu_cuda.vector_add"](timeout=timeout)
        if not result.get("passed"):
            __context__["retcode"] = 1
        return result

    podman = _which(
        "podman", "install podman (dnf install podman; on RHEL 8 dnf module install container-tools)"
    )
    if mode == "auto":
        mode = "cdi" if _cdi_gpu_spec_exists() else "hook"

    # No network: the vector add needs none, and leaving it out keeps the result
    # about the GPU (no CNI/netavark or slirp4netns setup that can fail on its own).
    argv = [podman, "run", "--rm", f"--pull={pull}", "--network=none"]
    run_kwargs = {"python_shell": False, "ignore_retcode": True, "timeout": timeout}
    if user is None:
        if mode == "hook":
            # The guide's root test; the hook does the injection.
            argv.append("--privileged")
    else:
        info = __salt__["user.info"](user)
        if not info:
            raise SaltInvocationError(f"no such user {user!r}")
        uid, gid = info["uid"], info["gid"]
        argv.extend(["--user", f"{uid}:{gid}"])
        argv.extend(_ROOTLESS_FLAGS)
        home = info.get("home") or "/"
        env = {"HOME": home}
        runtime_dir = f"/run/user/{uid}"
        if os.path.isdir(runtime_dir):
            env["XDG_RUNTIME_DIR"] = runtime_dir
        # clean_env: the user's login environment only; root's XDG_RUNTIME_DIR and
        # friends would point rootless Podman at root's storage.
        run_kwargs.update(runas=user, env=env, clean_env=True, cwd=home if os.path.isdir(home) else "/")
    if mode == "cdi":
        argv.extend(["--device", "nvidia.com/gpu=all"])
    argv.append(image)

    start = time.monotonic()
    ret = __salt__["cmd.run_all"](argv, **run_kwargs)
    duration = round(time.monotonic() - start, 3)

    stdout = ret.get("stdout") or ""
    stderr = ret.get("stderr") or ""
    parsed = _parse_vector_add(stdout, stderr)
    passed = ret["retcode"] == 0 and parsed["passed_text"]
    diagnosis = None
    if not passed:
        diagnosis = diagnose(f"{stderr}\n{stdout}") or dict(_UNKNOWN_FAILURE)
        __context__["retcode"] = 1
    return {
        "passed": passed,
        "elements": parsed["elements"],
        "blocks": parsed["blocks"],
        "threads": parsed["threads"],
        "user": user,
        "mode": mode,
        "command": argv,
        "retcode": ret["retcode"],
        "stdout": stdout,
        "stderr": stderr,
        "diagnosis": diagnosis,
        "duration_s": duration,
    }


# ---------------------------------------------------------------------------
# Facts and actions used by the states: dnf module streams, toolkit config,
# CDI spec, SELinux labels.
# ---------------------------------------------------------------------------

_MODULES_D = "/etc/dnf/modules.d"
_TOOLKIT_CONFIG = "/etc/nvidia-container-runtime/config.toml"
_CDI_SPEC = "/etc/cdi/nvidia.yaml"
_SUBID_FILES = {"subuid": "/etc/subuid", "subgid": "/etc/subgid"}
# NVIDIA's OCI hook for Podman, as the toolkit RPMs shipped it up to v1.14 and as
# `nvidia-ctk runtime configure --config-mode=oci-hook` still writes it.
_OCI_HOOK_BINARY = "/usr/bin/nvidia-container-runtime-hook"
_OCI_HOOK_ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _checked_run(argv, what, fix):
    """
    Run ``argv`` (a list, no shell) and return its cmd.run_all result; raise
    CommandExecutionError naming ``what`` failed, the tool's own message and ``fix``.
    """

    res = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    if res["retcode"] != 0:
        said = (res.get("stderr") or res.get("stdout") or "").strip() or "no output"
        raise CommandExecutionError(
            "{} failed (`{}` exited {}): {}. {}".format(what, " ".join(argv), res["retcode"], said, fix),
            info={"command": argv, "retcode": res["retcode"], "stdout": res.get("stdout", ""),
                  "stderr": res.get("stderr", "")},
        )
    return res


def _module_spec(name, stream, profile=None):

    if not name or not stream or ":" in name or "/" in str(stream):
        raise SaltInvocationError(
            f"bad module stream {name!r}:{stream!r}; expected e.g. nvidia-driver, latest-dkms"
        )
    spec = f"{name}:{stream}"
    if profile:
        spec += f"/{profile}"
    return spec


def _dnf_argv(platform=None):
    argv = ["dnf", "-y"]
    if platform:
        argv.append(f"--setopt=module_platform_id={platform}")
    return argv


def module_stream(name):
    """
    Return the state of the dnf module ``name`` as dnf recorded it in
    ``/etc/dnf/modules.d/<name>.module``, without running dnf:
    ``{"name", "stream", "profiles": [installed profiles], "state"}`` (``state`` is
    ``enabled``, ``disabled`` or None; absent values are None / []).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.module_stream nvidia-driver
    """

    ret = {"name": name, "stream": None, "profiles": [], "state": None}
    path = os.path.join(_MODULES_D, f"{name}.module")
    text = _read(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text or "")
    except configparser.Error:
        return ret
    if not parser.has_section(name):
        return ret
    sect = parser[name]
    ret["stream"] = sect.get("stream", "").strip() or None
    ret["state"] = sect.get("state", "").strip() or None
    # dnf joins installed profiles with commas
    ret["profiles"] = [p.strip() for p in sect.get("profiles", "").split(",") if p.strip()]
    return ret


def module_install(name, stream, profile=None, platform=None):
    """
    Enable the dnf module stream ``name:stream`` and install ``profile`` (its
    default profile when None): ``dnf -y module install name:stream[/profile]``.
    ``platform`` (e.g. ``platform:el8``) is passed as ``module_platform_id`` for
    hosts whose os-release lacks PLATFORM_ID. Returns the new ``module_stream``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.module_install nvidia-driver latest-dkms profile=default
    """
    spec = _module_spec(name, stream, profile)
    _checked_run(
        _dnf_argv(platform) + ["module", "install", spec],
        f"installing module stream {spec}",
        "Check that the repository providing the module is configured and reachable "
        f"(`dnf module list {name}`), that the stream and profile exist, and for DKMS streams that "
        "kernel-devel for the running kernel is available.",
    )
    return module_stream(name)


def module_reset(name, platform=None):
    """
    Reset the dnf module ``name`` (forget its enabled stream): ``dnf -y module reset name``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.module_reset nvidia-driver
    """
    _checked_run(
        _dnf_argv(platform) + ["module", "reset", name],
        f"resetting module {name}",
        f"Run `dnf module reset {name}` by hand to see the full error.",
    )
    return module_stream(name)


def module_switch(name, stream, profile=None, platform=None):
    """
    Move the dnf module ``name`` to another stream, replacing its packages:
    ``dnf -y module switch-to name:stream[/profile]``. On a dnf without
    ``switch-to`` (before RHEL 8.6) it resets the module and installs the stream.
    Returns the new ``module_stream``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.module_switch nvidia-driver 550-dkms profile=default
    """

    spec = _module_spec(name, stream, profile)
    argv = _dnf_argv(platform) + ["module", "switch-to", spec]
    res = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    if res["retcode"] == 0:
        return module_stream(name)
    said = (res.get("stderr") or "") + (res.get("stdout") or "")
    if "invalid choice" in said or "No such command" in said:
        module_reset(name, platform=platform)
        return module_install(name, stream, profile=profile, platform=platform)
    raise CommandExecutionError(
        "switching module {} to {} failed (`{}` exited {}): {}. Check that the stream exists "
        "(`dnf module list {}`); packages held by another module or versionlock can block the "
        "switch.".format(name, spec, " ".join(argv), res["retcode"], said.strip() or "no output", name),
        info={"command": argv, "retcode": res["retcode"], "stdout": res.get("stdout", ""),
              "stderr": res.get("stderr", "")},
    )


def _parse_toml_value(text):
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_parse_toml_value(v) for v in inner.split(",") if v.strip()] if inner else []
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _loads_toml(text):
    """
    TOML to dict: tomllib (Python 3.11+), else the ``toml`` package, else a small
    parser for what config.toml holds (tables, ``key = scalar``, one-line arrays).
    """
    try:
        import tomllib

        return tomllib.loads(text)
    except ImportError:
        pass
    try:
        import toml

        return toml.loads(text)
    except ImportError:
        pass
    data = {}
    table = data
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            table = data
            for part in line.strip("[]").strip().split("."):
                table = table.setdefault(part.strip().strip('"'), {})
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            if "#" in value and not value.strip().startswith(("\"", "'")):
                value = value.split("#", 1)[0]
            table[key.strip().strip('"')] = _parse_toml_value(value)
    return data


def toolkit_config(path=_TOOLKIT_CONFIG):
    """
    Return the NVIDIA container toolkit configuration
    (``/etc/nvidia-container-runtime/config.toml``) as a dict; ``{}`` when the file
    does not exist (toolkit not installed).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.toolkit_config
    """

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return {}
    try:
        return _loads_toml(text)
    except ValueError as err:
        raise CommandExecutionError(
            f"{path} is not valid TOML ({err}). Fix or remove it and reinstall nvidia-container-toolkit."
        ) from err


def toolkit_config_value(key, path=_TOOLKIT_CONFIG):
    """
    Return one dotted key of the toolkit configuration, e.g.
    ``nvidia-container-cli.no-cgroups``; None when not set.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.toolkit_config_value nvidia-container-cli.no-cgroups
    """
    node = toolkit_config(path)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_toolkit_config(key, value):
    """
    Set one toolkit configuration key in place:
    ``nvidia-ctk config --set KEY=VALUE --in-place`` (booleans as true/false).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.set_toolkit_config nvidia-container-cli.no-cgroups true
    """
    if isinstance(value, bool):
        value = "true" if value else "false"
    _checked_run(
        ["nvidia-ctk", "config", "--set", f"{key}={value}", "--in-place"],
        f"setting {key}={value} in the toolkit configuration",
        "Check that nvidia-container-toolkit is installed (it provides nvidia-ctk) and that "
        f"{_TOOLKIT_CONFIG} is writable.",
    )
    return toolkit_config_value(key)


def oci_hook(path="/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json"):
    """
    Return the OCI hook file at ``path`` parsed as JSON, None when it does not exist
    or is not valid JSON.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.oci_hook
    """

    text = _read(path)
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def oci_hook_content(hook_binary=_OCI_HOOK_BINARY):
    """
    Return NVIDIA's OCI prestart hook for Podman (the content of
    ``oci-nvidia-hook.json``) as a dict.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.oci_hook_content
    """
    return {
        "version": "1.0.0",
        "hook": {
            "path": hook_binary,
            "args": [hook_binary.rsplit("/", 1)[-1], "prestart"],
            "env": [_OCI_HOOK_ENV_PATH],
        },
        "when": {"always": True, "commands": [".*"]},
        "stages": ["prestart"],
    }


def _atomic_write(path, data, mode=0o644):

    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".nvgpu-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_oci_hook(
    path="/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json", hook_binary=_OCI_HOOK_BINARY
):
    """
    Write NVIDIA's OCI hook JSON to ``path`` atomically (mode 0644) and return its content.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.write_oci_hook
    """

    content = oci_hook_content(hook_binary)
    _atomic_write(path, json.dumps(content, indent=4) + "\n")
    return content


def _cdi_driver_version(spec):

    pattern = re.compile(r"/libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$")
    edits = [spec.get("containerEdits") or {}]
    edits += [(d or {}).get("containerEdits") or {} for d in spec.get("devices") or []]
    for edit in edits:
        for mount in edit.get("mounts") or []:
            match = pattern.search(str((mount or {}).get("hostPath", "")))
            if match:
                return match.group(1)
    return None


def cdi_spec(path=_CDI_SPEC):
    """
    Describe the CDI spec at ``path``: ``{"exists", "kind", "devices": [names],
    "driver_version", "mode"}``. ``driver_version`` comes from the versioned
    ``libcuda.so.<version>`` the spec mounts (None when absent); ``mode`` is the
    file's permission bits as an octal string such as ``"0644"``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.cdi_spec
    """


    ret = {"exists": False, "kind": None, "devices": [], "driver_version": None, "mode": None}
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ret
    ret["exists"] = True
    ret["mode"] = f"{stat.S_IMODE(st.st_mode):04o}"
    try:
        with open(path, encoding="utf-8") as fh:
            spec = salt.utils.yaml.safe_load(fh) or {}
    except (OSError, salt.utils.yaml.YAMLError):
        return ret
    if not isinstance(spec, dict):
        return ret
    ret["kind"] = spec.get("kind")
    ret["devices"] = [d.get("name") for d in spec.get("devices") or [] if isinstance(d, dict)]
    ret["driver_version"] = _cdi_driver_version(spec)
    return ret


def cdi_generate(path=_CDI_SPEC):
    """
    Generate the CDI spec for this host's GPUs and driver with
    ``nvidia-ctk cdi generate`` into a temporary file next to ``path``, make it
    world-readable (0644) and move it into place atomically, so that Podman never
    sees a half-written spec. Returns the new ``cdi_spec``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.cdi_generate
    """

    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    # A sub-directory keeps the half-written file out of Podman's spec search (it
    # reads *.yaml / *.json in /etc/cdi, not below) and keeps the extension
    # nvidia-ctk takes the output format from.
    tmpdir = tempfile.mkdtemp(dir=directory, prefix=".nvgpu-")
    tmp = os.path.join(tmpdir, os.path.basename(path))
    try:
        _checked_run(
            ["nvidia-ctk", "cdi", "generate", f"--output={tmp}"],
            f"generating the CDI spec {path}",
            "Check that the NVIDIA driver is installed and loaded (`nvidia-smi`), and that "
            "nvidia-container-toolkit is installed.",
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return cdi_spec(path)


def selinux_mode():
    """
    Return the SELinux mode: ``Enforcing``, ``Permissive`` or ``Disabled``
    (``getenforce``; a host without it counts as Disabled).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.selinux_mode
    """

    if not salt.utils.path.which("getenforce"):
        return "Disabled"
    res = __salt__["cmd.run_all"](["getenforce"], python_shell=False, ignore_retcode=True)
    mode = (res.get("stdout") or "").strip().capitalize()
    if res["retcode"] != 0 or mode not in ("Enforcing", "Permissive", "Disabled"):
        return "Disabled"
    return mode


def policy_modules():
    """
    Return the names of the installed SELinux policy modules (first column of
    ``semodule -l``; RHEL 7 adds a version column, RHEL 8+ does not).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.policy_modules
    """
    res = _checked_run(
        ["semodule", "-l"],
        "listing SELinux policy modules",
        "Check that policycoreutils is installed and the SELinux policy store is readable.",
    )
    return sorted({line.split()[0] for line in res["stdout"].splitlines() if line.strip()})


def install_policy(path):
    """
    Install the SELinux policy module package ``path`` (a ``.pp``): ``semodule -i PATH``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.install_policy /root/nvidia-container.pp
    """
    _checked_run(
        ["semodule", "-i", path],
        f"installing SELinux policy module {path}",
        "Check that the file is a policy package built for this policy version (for RHEL 8 take "
        "NVIDIA dgx-selinux bin/RHEL8/nvidia-container.pp) and that the policy it needs "
        "(container-selinux) is installed.",
    )
    return True


def _relabel_paths(output):

    # libselinux >= 2.7 prints "Would relabel|Relabeled PATH from OLD to NEW";
    # RHEL 7's restorecon printed "restorecon reset PATH context OLD->NEW".
    pattern = re.compile(r"^(?:Would relabel|Relabeled|restorecon reset) (\S+) (?:from|context) ")
    found = []
    for line in output.splitlines():
        match = pattern.match(line.strip())
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return found


def _restorecon(paths, recursive, dry_run):

    if isinstance(paths, str):
        paths = [paths]
    existing = [p for p in paths if os.path.lexists(p)]
    if not existing:
        return []
    argv = ["restorecon"] + (["-n"] if dry_run else []) + ["-v"] + (["-R"] if recursive else []) + existing
    res = _checked_run(
        argv,
        "checking SELinux labels" if dry_run else "relabelling files",
        "Check that the SELinux policy is installed and loaded (`sestatus`), then run the command by hand.",
    )
    return _relabel_paths(res["stdout"] + "\n" + res.get("stderr", ""))


def relabel_needed(paths, recursive=False):
    """
    Return the paths (of ``paths``, or below them with ``recursive``) whose SELinux
    label differs from the policy's: ``restorecon -n -v [-R] PATHS``, which changes
    nothing. Paths that do not exist are skipped.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.relabel_needed /dev recursive=True
    """
    return _restorecon(paths, recursive, dry_run=True)


def relabel(paths, recursive=False):
    """
    Restore the policy's SELinux labels on ``paths``: ``restorecon -v [-R] PATHS``.
    Returns the paths that were relabelled.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.relabel /dev recursive=True
    """
    return _restorecon(paths, recursive, dry_run=False)


def kernel_module_loaded(name):
    """
    Return True when the kernel module ``name`` is loaded (or built in), read the
    same way as :py:func:`loaded_modules`.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.kernel_module_loaded nouveau
    """
    return _module_loaded(name.replace("-", "_"))


def unload_kernel_module(name):
    """
    Unload the kernel module ``name``: ``modprobe -r NAME``. Returns True.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.unload_kernel_module nouveau
    """
    _checked_run(
        ["modprobe", "-r", name],
        f"unloading kernel module {name}",
        "Stop what uses it first (for nouveau: the display manager, "
        "`systemctl isolate multi-user.target`), or reboot with the module blacklisted "
        f"(rd.driver.blacklist={name} and the modprobe.d file).",
    )
    return True


def _read_subids(path):
    entries = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    entries.append((parts[0], int(parts[1]), int(parts[2])))
    except FileNotFoundError:
        pass
    return entries


def subid_range(name, kind="subuid"):
    """
    Return the subordinate id ranges of user ``name`` from ``/etc/subuid``
    (``kind=subgid``: ``/etc/subgid``) as a list of ``{"start", "count"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.subid_range gpuuser kind=subgid
    """
    return [{"start": s, "count": c} for n, s, c in _read_subids(_SUBID_FILES[kind]) if n == name]


def free_subid_start(count=65536, kind="subuid", minimum=100000):
    """
    Return the first start >= ``minimum`` where ``count`` subordinate ids overlap no
    range in ``/etc/subuid`` (or ``/etc/subgid``).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.free_subid_start
    """
    start = minimum
    for _, s, c in sorted(_read_subids(_SUBID_FILES[kind]), key=lambda e: e[1]):
        if s < start + count and start < s + c:
            start = s + c
    return start


def set_subid_range(name, start, count=65536, kind="subuid"):
    """
    Make ``name:start:count`` the only range of user ``name`` in ``/etc/subuid``
    (``kind=subgid``: ``/etc/subgid``), written atomically; other users' lines are kept.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.set_subid_range gpuuser 200000 65536
    """


    if kind not in _SUBID_FILES:
        raise SaltInvocationError("kind must be subuid or subgid")
    path = _SUBID_FILES[kind]
    lines = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [ln.rstrip("\n") for ln in fh if ln.split(":", 1)[0] != name]
    except FileNotFoundError:
        pass
    lines.append(f"{name}:{int(start)}:{int(count)}")
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
    _atomic_write(path, "\n".join(lines) + "\n", mode=mode)
    return subid_range(name, kind)


# NVIDIA modules, users before what they use: the order `modprobe -r` needs.
_NVIDIA_UNLOAD_ORDER = ("nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia")
_DRIVER_LIB_GLOB = "/usr/lib64/libcuda.so.*.*"


def installed_driver_version():
    """
    Return the version of the installed user-space driver (from the versioned
    ``/usr/lib64/libcuda.so.<version>`` its package installs), None when no driver
    is installed. After a driver upgrade it differs from ``driver_version()`` (the
    loaded kernel module) until the modules are reloaded or the host reboots.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.installed_driver_version
    """

    versions = []
    for path in glob.glob(_DRIVER_LIB_GLOB):
        match = re.search(r"libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$", path)
        if match:
            versions.append(match.group(1))
    if not versions:
        return None
    return max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def reload_driver(uvm=True):
    """
    Unload the loaded NVIDIA kernel modules (``modprobe -r nvidia_uvm nvidia_drm
    nvidia_modeset nvidia``, only those loaded) and load them again with
    ``load_modules``, so that the kernel runs the installed driver after an upgrade.
    Fails while a process uses the GPU (then reboot). Returns ``load_modules``' result.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.reload_driver
    """
    loaded = [name for name in _NVIDIA_UNLOAD_ORDER if kernel_module_loaded(name)]
    if loaded:
        _checked_run(
            ["modprobe", "-r"] + loaded,
            "unloading the NVIDIA kernel modules " + ", ".join(loaded),
            "A process still uses the GPU (nvidia-persistenced, a display server, a container: see "
            "`lsof /dev/nvidia*`); stop it, or reboot to run the upgraded driver.",
        )
    return load_modules(uvm=uvm)


def remove_oci_hook(path="/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json"):
    """
    Remove the OCI hook file at ``path``; True when it was there.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.remove_oci_hook
    """

    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
