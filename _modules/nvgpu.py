"""
Execution module for NVIDIA GPU nodes that run Podman containers: the node's GPU facts
and the checks a user runs.

Finds the facts a GPU container node stands on (loaded kernel modules, driver and
Podman versions, the host files ``nvidia-container-cli`` injects into containers),
loads and reloads the driver, runs the validation workload (the CUDA vector add) as
root or as a rootless user, and says what a failure means.

The toolkit, SELinux, dnf module streams, rootless users' ids and the host CUDA check
have execution modules of their own (``nvgpu_toolkit``, ``nvgpu_selinux``,
``dnf_module``, ``nvgpu_rootless``, ``nvgpu_cuda``); what they all share is in
``_utils/nvgpu_node.py`` and the failure knowledge in ``_utils/nvgpu_failures.py``.

Loads on any Linux minion, GPU or not; a function that needs a missing tool says which
tool and which package provides it.

:depends: nvidia-modprobe (NVIDIA driver), nvidia-container-cli (libnvidia-container-tools),
          podman
"""

import contextvars
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import nvgpu_failures
import nvgpu_node
import nvgpu_pillar
import nvgpu_state
import salt.utils.data
import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "nvgpu"

# The kernel modules loaded_modules reports: NVIDIA's, and nouveau, which blocks them.
_KERNEL_MODULES = ("nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm", "nouveau")
# NVIDIA modules, users before what they use: the order `modprobe -r` needs.
_NVIDIA_UNLOAD_ORDER = ("nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia")


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


# ---------------------------------------------------------------------------
# Kernel modules and the driver
# ---------------------------------------------------------------------------


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
    return {name: nvgpu_node.module_loaded(name) for name in _KERNEL_MODULES}


def kernel_module_loaded(name):
    """
    Return True when the kernel module ``name`` is loaded (or built in), read the
    same way as :py:func:`loaded_modules`.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.kernel_module_loaded nouveau
    """
    return nvgpu_node.module_loaded(name)


def _load_failure_diagnosis(ret=None):
    """
    Why nvidia-modprobe could not load the driver: what the kernel said (``ret``, the
    failed command's result: "Key was rejected by service" is Secure Boot), else the
    node's state. Both blockers can hold at once (a fresh install: nouveau bound, DKMS
    build failed); then both are named, the missing module first, since it must be fixed first.
    """
    said = nvgpu_failures.diagnose_text((ret or {}).get("stderr", "")) if ret else None
    if said and said["layer"] == "driver":
        return said
    found = []
    release = nvgpu_node.kernel_release()
    if not nvgpu_node.nvidia_ko_present(release):
        found.append(nvgpu_failures.no_module_for_kernel(release))
    if nvgpu_node.module_loaded("nouveau"):
        found.append(nvgpu_failures.NOUVEAU_LOADED)
    return nvgpu_failures.combine(found or [nvgpu_failures.KERNEL_REFUSED])


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
        return {"modules": before, "device_nodes": nvgpu_node.device_nodes(), "changed": False}

    tool = _which("nvidia-modprobe", nvgpu_failures.DRIVER_PACKAGE_HINT)
    for argv in ([tool], [tool, "-u"]) if uvm else ([tool],):
        nvgpu_node.run_checked(__salt__["cmd.run_all"], argv, "loading the NVIDIA kernel modules",
                               diagnosis=_load_failure_diagnosis)

    after = loaded_modules()
    missing = [name for name in wanted if not after[name]]
    if missing:
        # nvidia-modprobe is a setuid helper that often exits 0 and says nothing.
        diagnosis = _load_failure_diagnosis()
        err = CommandExecutionError(
            "nvidia-modprobe ran but {} is not loaded\nLikely cause: {}\nFix: {}".format(
                ", ".join(missing), diagnosis["cause"], diagnosis["fix"]
            )
        )
        # An attribute, not info=: Salt appends info= to the message a state shows.
        err.info = {"modules": after, "diagnosis": diagnosis}
        raise err
    return {"modules": after, "device_nodes": nvgpu_node.device_nodes(), "changed": after != before}


def unload_kernel_module(name):
    """
    Unload the kernel module ``name``: ``modprobe -r NAME``. Returns True.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.unload_kernel_module nouveau
    """
    nvgpu_node.run_checked(
        __salt__["cmd.run_all"],
        ["modprobe", "-r", name],
        f"unloading kernel module {name}",
        "stop what uses it first (for nouveau: the display manager, systemctl isolate "
        f"multi-user.target), or reboot with the module blacklisted (rd.driver.blacklist={name} "
        "and the modprobe.d file)",
    )
    return True


def reload_driver(uvm=True):
    """
    Unload the loaded NVIDIA kernel modules (``modprobe -r nvidia_uvm nvidia_drm
    nvidia_modeset nvidia``, only those loaded) and load them again with
    ``load_modules``, so that the kernel runs the installed driver after an upgrade.
    The driver's own daemons keep the GPU open (nvidia-persistenced, nvidia-fabricmanager):
    those running are stopped first and left stopped (their states start them again, of
    the new version). Fails while another process uses the GPU (then reboot): the error's
    ``gpu_busy`` is True, and nothing was stopped when CUDA programs were seen first
    (nvidia_uvm's reference count). Returns
    ``load_modules``' result with ``stopped``: the daemons it stopped.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.reload_driver
    """
    loaded = [name for name in _NVIDIA_UNLOAD_ORDER if nvgpu_node.module_loaded(name)]
    stopped = []
    users = nvgpu_node.cuda_processes()
    if users:
        # Nothing stopped or unloaded: a running CUDA program keeps the old driver.
        err = CommandExecutionError(
            f"CUDA programs hold the GPU (/sys/module/nvidia_uvm/refcnt is {users}; see lsof /dev/nvidia-uvm): "
            "the driver cannot be unloaded until they end; reboot to run the upgraded driver")
        err.gpu_busy = True
        raise err
    if loaded:
        if "service.status" in __salt__:
            for service in nvgpu_node.DRIVER_SERVICES:
                if __salt__["service.status"](service):
                    __salt__["service.stop"](service)
                    stopped.append(service)
        try:
            nvgpu_node.run_checked(
                __salt__["cmd.run_all"],
                ["modprobe", "-r"] + loaded,
                "unloading the NVIDIA kernel modules " + ", ".join(loaded),
                "a process still uses the GPU (a container, a CUDA job, a display server: see "
                "lsof /dev/nvidia*); stop it and run again, or reboot to run the upgraded driver",
            )
        except CommandExecutionError as err:
            # Back as it was: what modprobe -r did unload, and the daemons.
            if any(not nvgpu_node.module_loaded(name) for name in loaded):
                load_modules(uvm=uvm)
            for service in stopped:
                try:
                    __salt__["service.start"](service)
                except CommandExecutionError:
                    pass  # e.g. a fabric manager already upgraded: its state reports it
            err.gpu_busy = "in use" in str(err)
            raise
    result = load_modules(uvm=uvm)
    result["stopped"] = stopped
    return result


def cuda_processes():
    """
    How many open handles CUDA programs hold on ``/dev/nvidia-uvm`` (``nvidia_uvm``'s
    reference count): while above 0, the driver cannot be reloaded.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.cuda_processes
    """
    return nvgpu_node.cuda_processes()


def reboot_required():
    """
    Whether the node must reboot (or reload the driver) to run its installed driver:
    ``{"required": bool, "reason": str or None}``. The grain ``nvgpu:reboot_required`` says
    the same.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.reboot_required
    """
    reason = nvgpu_node.reboot_required()
    return {"required": bool(reason), "reason": reason}


def driver_version():
    """
    Version of the loaded NVIDIA kernel driver, e.g. ``"550.127.08"``, or None when
    the driver is not loaded.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.driver_version
    """
    return nvgpu_node.loaded_driver_version()


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
    return nvgpu_node.installed_driver_version()


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
    ret = nvgpu_node.run_checked(__salt__["cmd.run_all"], [podman, "--version"], "asking Podman its version")
    return nvgpu_node.parse_podman_version(ret["stdout"])


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
    ret = nvgpu_node.run_checked(
        __salt__["cmd.run_all"], argv, "listing the files NVIDIA puts into containers",
        diagnosis=lambda failed: diagnose(f"{failed.get('stderr', '')}\n{failed.get('stdout', '')}"),
    )
    files = _categorise(ret["stdout"])
    return files if kind is None else files[kind]


# ---------------------------------------------------------------------------
# What a failure means
# ---------------------------------------------------------------------------


def diagnose(text):
    """
    Cause, fix and broken layer for a GPU container failure text (vector-add output,
    Podman or NVIDIA hook error, nvidia-container-cli message), or None when nothing
    known matches.

    Returns ``{"cause": str, "fix": str, "layer": str}`` or None.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.diagnose 'nvidia-container-cli: initialization error: nvml error: driver not loaded'
    """
    # From the CLI a text such as "123" or "a: b" arrives already parsed as YAML.
    return nvgpu_failures.diagnose_text("" if text is None else str(text))


# ---------------------------------------------------------------------------
# The validation workload
# ---------------------------------------------------------------------------

_ELEMENTS_RE = re.compile(r"\[Vector addition of (\d+) elements\]")
_LAUNCH_RE = re.compile(r"CUDA kernel launch with (\d+) blocks of (\d+) threads")
_PASSED_RE = re.compile(r"^\s*Test PASSED\s*$", re.M)

_RUNTIMES = ("podman", "host")
_PULL = nvgpu_node.PULL_POLICIES
_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")

# The guide's rootless flags, verbatim, after --user UID:GID; then the SELinux type
# (the guide's nvidia_container_t with NVIDIA's policy module, container_t with the boolean).
_ROOTLESS_FLAGS = [
    "--security-opt=no-new-privileges",
    "--cap-drop=ALL",
    "--security-opt",
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


_GPU_RE = re.compile(r"all|each|\d{1,3}|GPU-[0-9a-fA-F-]{8,64}")


def _validate_vector_add_args(image, user, runtime, mode, timeout, pull, gpus="all"):
    if not isinstance(gpus, (str, int)) or isinstance(gpus, bool) or not _GPU_RE.fullmatch(str(gpus)):
        raise SaltInvocationError(
            f"gpus must be all, each, a GPU index or a GPU UUID (GPU-..., nvidia-smi -L), not {gpus!r}"
        )
    if runtime not in _RUNTIMES:
        raise SaltInvocationError(f"runtime must be one of {', '.join(_RUNTIMES)}, not {runtime!r}")
    if mode not in nvgpu_node.MODES:
        raise SaltInvocationError(f"mode must be one of {', '.join(nvgpu_node.MODES)}, not {mode!r}")
    if pull not in _PULL:
        raise SaltInvocationError(f"pull must be one of {', '.join(_PULL)}, not {pull!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise SaltInvocationError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if user is not None:
        if runtime == "host":
            raise SaltInvocationError("user= only applies to runtime=podman")
        if not isinstance(user, str) or not _USER_RE.fullmatch(user):
            raise SaltInvocationError(f"invalid user name {user!r}")
    if runtime == "podman":
        # The image becomes one argv element; refuse what Podman would read as an option.
        if not isinstance(image, str) or not image or image.startswith("-") or re.search(r"\s", image):
            raise SaltInvocationError(f"invalid image reference {image!r}")


@nvgpu_state.raises_unloaded_modules
def run_vector_add(
    image=nvgpu_node.DEFAULT_IMAGE,
    user=None,
    runtime="podman",
    mode="auto",
    timeout=300,
    pull="missing",
    gpus="all",
):
    """
    Validate the node: run the CUDA vector add in a Podman container (or on the host)
    and say whether it passed, and if not, why and what to do.

    As root it is the guide's root test (``podman run --privileged IMAGE``). With
    ``user=`` Podman runs AS that user, with the guide's rootless flags
    (``--user UID:GID --security-opt=no-new-privileges --cap-drop=ALL
    --security-opt label=type:nvidia_container_t``), never ``--privileged``; the type is
    ``container_t`` where SELinux lets containers use the GPU by container-selinux's
    boolean (pillar ``gpu:selinux:method``, ``auto`` decided as the
    ``nvgpu.selinux_ready`` state decides it: ``nvgpu_selinux.method``).

    image
        The validation image. Default ``docker.io/mirrorgooglecontainers/cuda-vector-add:v0.1``.

    user
        Run rootless as this local user. Default: root.

    runtime
        ``podman`` (default), or ``host``: run the check on the host through the CUDA
        driver (``nvgpu_cuda.vector_add``), no container.

    mode
        How the GPU reaches the container: ``hook`` (the NVIDIA OCI hook), ``cdi``
        (``--device nvidia.com/gpu=all``) or ``auto``: what the node is configured
        for, decided as the ``nvgpu.container_toolkit`` state decides it: pillar
        ``gpu:toolkit:mode`` where it says hook or cdi, else cdi with Podman 4.1 or
        newer and hook before.

    timeout
        Seconds before the run counts as failed. Default 300.

    pull
        Podman's ``--pull`` policy: always, missing (default), never, newer.

    gpus
        Which GPUs the check sees: ``all`` (default: every GPU, and the sample runs on the
        first), one GPU by index or UUID (``GPU-...``; in a container through CDI
        ``--device nvidia.com/gpu=ID``, with the hook ``NVIDIA_VISIBLE_DEVICES=ID``), or
        ``each``: one check per GPU the driver lists (``nvgpu_health.gpus``), all at once,
        each seeing only its GPU; it passes only when every GPU passes. See
        :py:func:`_run_each` for its return.

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
        salt '*' nvgpu.run_vector_add gpus=each
        salt '*' nvgpu.run_vector_add runtime=host gpus=each
    """
    _validate_vector_add_args(image, user, runtime, mode, timeout, pull, gpus)
    gpus = str(gpus)

    if runtime == "host":
        if "nvgpu_cuda.vector_add" not in __salt__:
            raise CommandExecutionError(
                "runtime=host needs the nvgpu_cuda execution module, which is not loaded on this minion"
            )
        if gpus == "each":
            return _run_each(image, user, runtime, None, timeout, pull)
        result = __salt__["nvgpu_cuda.vector_add"](timeout=timeout, **({} if gpus == "all" else {"gpu": gpus}))
        if not result.get("passed"):
            __context__["retcode"] = 1
        return result

    podman = _which(
        "podman", "install podman (dnf install podman; on RHEL 8 dnf module install container-tools)"
    )
    if mode == "auto":
        # What the formula configured this node for (pillar gpu:toolkit:mode), by the
        # same rule as the container_toolkit state: the ad-hoc check and the formula agree.
        # Read from __pillar__: Salt 3008's pillar.get masks values ("**********") for callers.
        configured = salt.utils.data.traverse_dict_and_list(__pillar__, "gpu:toolkit:mode", "auto")
        mode = configured if configured in ("hook", "cdi") else nvgpu_node.resolve_mode("auto", podman_version())
    if gpus == "each":
        return _run_each(image, user, runtime, mode, timeout, pull)

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
        method = salt.utils.data.traverse_dict_and_list(__pillar__, "gpu:selinux:method", "auto")
        argv.append("label=type:" + __salt__["nvgpu_selinux.container_type"](method))
    if mode == "cdi":
        argv.extend(["--device", f"nvidia.com/gpu={gpus}"])
    elif gpus != "all":
        # The hook's choice of GPU; CUDA's too, since --privileged shows every device node.
        argv.extend(["--env", f"NVIDIA_VISIBLE_DEVICES={gpus}", "--env", f"CUDA_VISIBLE_DEVICES={gpus}"])
    argv.append(image)
    run_argv = argv
    if user is not None:
        run_argv, user_kwargs = nvgpu_node.as_user(argv, user, info)
        run_kwargs.update(user_kwargs)

    start = time.monotonic()
    ret = __salt__["cmd.run_all"](run_argv, **run_kwargs)
    duration = round(time.monotonic() - start, 3)

    stdout = ret.get("stdout") or ""
    stderr = ret.get("stderr") or ""
    parsed = _parse_vector_add(stdout, stderr)
    passed = ret["retcode"] == 0 and parsed["passed_text"]
    diagnosis = None
    if not passed:
        diagnosis = diagnose(f"{stderr}\n{stdout}") or dict(nvgpu_failures.UNKNOWN)
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


def _cdi_names():
    """The device names of every CDI spec of kind nvidia.com/gpu on the node."""
    names = set()
    for path in nvgpu_node.cdi_spec_files():
        spec = __salt__["nvgpu_toolkit.cdi_spec"](path)
        if spec["kind"] == nvgpu_node.CDI_KIND:
            names.update(str(name) for name in spec["devices"])
    return names


def _run_each(image, user, runtime, mode, timeout, pull):
    """
    ``run_vector_add gpus=each``: one check per GPU the driver lists, all at once. On the host,
    one CUDA process per GPU with only that GPU visible (``nvgpu_cuda.vector_add_each``); in
    containers, one ``podman run`` per GPU with only that GPU's CDI device (by UUID where the
    spec names GPUs by UUID, else by index) or, with the hook, ``NVIDIA_VISIBLE_DEVICES``.

    Returns ``{"passed": bool (every GPU passed), "gpus": [{"index", "uuid", "name", "pci",
    ...that GPU's run_vector_add return...}], "failed_gpus": [{"index", "uuid", "name", "pci",
    "cause", "fix", "layer"}], "user", "runtime", "mode", "diagnosis": None|{"cause", "fix",
    "layer"} (naming each failed GPU), "duration_s"}``.
    """
    start = time.monotonic()
    ret = {"passed": False, "gpus": [], "failed_gpus": [], "user": user, "runtime": runtime, "mode": mode,
           "diagnosis": None, "duration_s": 0.0}
    try:
        found = __salt__["nvgpu_health.gpus"]()
    except CommandExecutionError as err:
        ret["diagnosis"] = diagnose(str(err)) or {
            "cause": f"the driver could not list the GPUs: {err}",
            "fix": nvgpu_failures.LOAD_MODULES_FIX, "layer": "kernel-modules"}
        found = []
    if not found and ret["diagnosis"] is None:
        ret["diagnosis"] = {"cause": "the driver lists no GPU (nvidia-smi --query-gpu printed none)",
                            "fix": nvgpu_failures.GPU_OFF_BUS_FIX, "layer": "gpu"}
    if runtime == "host" and found:
        results = __salt__["nvgpu_cuda.vector_add_each"]([gpu["uuid"] for gpu in found], timeout=timeout)
    elif found:
        names = _cdi_names() if mode == "cdi" else set()

        def one(gpu):
            chosen = gpu["uuid"] if mode != "cdi" or gpu["uuid"] in names or str(gpu["index"]) not in names \
                else str(gpu["index"])
            return run_vector_add(image=image, user=user, runtime=runtime, mode=mode, timeout=timeout,
                                  pull=pull, gpus=chosen)

        # Threads, each with its own copy of the loader's context (Salt's __salt__ lives in a
        # contextvar); each waits on its own podman process.
        with ThreadPoolExecutor(max_workers=len(found)) as pool:
            futures = [pool.submit(contextvars.copy_context().run, one, gpu) for gpu in found]
            results = [future.result() for future in futures]
    else:
        results = []
    for gpu, result in zip(found, results):
        ret["gpus"].append({**gpu, **result})
        if not result["passed"]:
            diagnosis = result.get("diagnosis") or dict(nvgpu_failures.UNKNOWN)
            ret["failed_gpus"].append({**gpu, **{key: diagnosis.get(key) for key in ("cause", "fix", "layer")}})
    if ret["failed_gpus"]:
        first = ret["failed_gpus"][0]
        ret["diagnosis"] = {
            "cause": "; ".join(f"GPU {gpu['index']} ({gpu['uuid']}, {gpu['name']}): {gpu['cause']}"
                               for gpu in ret["failed_gpus"]),
            "fix": first["fix"], "layer": first["layer"]}
    ret["passed"] = bool(found) and not ret["failed_gpus"] and ret["diagnosis"] is None
    if not ret["passed"]:
        __context__["retcode"] = 1
    ret["duration_s"] = round(time.monotonic() - start, 3)
    return ret


@nvgpu_state.raises_unloaded_modules
def validation_inputs(user=None, image=nvgpu_node.DEFAULT_IMAGE, mode="auto", pull="missing"):
    """
    What a vector add's result depends on, read from the node without starting a
    container: the ``nvgpu.vector_add_passes`` state runs the container again only
    when one of these changed since the last run that passed (``gpu:validate:when:
    changed``).

    Returns ``{"boot_id", "driver", "cdi_specs": {path: sha256}, "oci_hooks": {path:
    sha256}, "toolkit_config": sha256|None, "fabric_manager": its `systemctl is-active` on
    NVSwitch systems|None, "selinux": {"mode", "modules", "boolean"
    (container_use_xserver_devices)}, "podman": "path size mtime"|None, "image", "image_id", "mode", "pull",
    "user", "subuid", "subgid"}``. Reads files, plus ``podman image inspect`` (as the
    user for a rootless one) and, with SELinux on, ``getsebool`` and ``semodule -l`` (once per run).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.validation_inputs
        salt '*' nvgpu.validation_inputs user=gpuuser
    """
    _validate_vector_add_args(image, user, "podman", mode, 300, pull)
    info = None
    if user is not None:
        info = __salt__["user.info"](user)
        if not info:
            raise SaltInvocationError(f"no such user {user!r}")
    selinux = {"mode": __salt__["nvgpu_selinux.mode"]()}
    if selinux["mode"] != "Disabled":
        selinux["modules"] = __salt__["nvgpu_selinux.policy_modules"]()
        selinux["boolean"] = __salt__["nvgpu_selinux.boolean"]()
    podman = salt.utils.path.which("podman")
    image_id = None
    if podman:
        argv = [podman, "image", "inspect", "--format", "{{.Id}}", image]
        kwargs = {"python_shell": False, "ignore_retcode": True}
        if user is not None:
            argv, user_kwargs = nvgpu_node.as_user(argv, user, info)
            kwargs.update(user_kwargs)
        found = __salt__["cmd.run_all"](argv, **kwargs)
        image_id = ((found.get("stdout") or "").strip() or None) if found["retcode"] == 0 else None
        stat = os.stat(podman)
        podman = f"{podman} {stat.st_size} {stat.st_mtime_ns}"
    # On NVSwitch systems CUDA works only while the fabric manager runs (error 802 else):
    # its state is an input there, one `systemctl is-active` (none on other nodes).
    fabric_manager = None
    if nvgpu_node.nvswitches() and salt.utils.path.which("systemctl"):
        fabric_manager = __salt__["cmd.run_all"](["systemctl", "is-active", nvgpu_node.FABRIC_MANAGER_SERVICE],
                                                 python_shell=False, ignore_retcode=True)["stdout"].strip()
    ranges = {}
    for kind in ("subuid", "subgid"):
        ranges[kind] = (
            [[start, count] for name, start, count in nvgpu_node.parse_subids(
                nvgpu_node.read_file(nvgpu_node.SUBID_FILES[kind])) if name == user]
            if user is not None else None
        )
    return {
        "boot_id": (nvgpu_node.read_file(nvgpu_node.BOOT_ID) or "").strip() or None,
        "driver": nvgpu_node.loaded_driver_version(),
        "cdi_specs": {path: nvgpu_node.file_sha256(path) for path in nvgpu_node.cdi_spec_files()},
        "oci_hooks": {path: nvgpu_node.file_sha256(path) for path in nvgpu_node.oci_hook_files()},
        "toolkit_config": nvgpu_node.file_sha256(nvgpu_node.TOOLKIT_CONFIG),
        "fabric_manager": fabric_manager,
        "selinux": selinux,
        "podman": podman,
        "image": image,
        "image_id": image_id,
        "mode": mode,
        "pull": pull,
        "user": user,
        **ranges,
    }


@nvgpu_state.raises_unloaded_modules
def doctor(user=None):
    """
    Check the node layer by layer and say which layer is broken, how that was found and
    the fix; read-only. ``user``: check this rootless user only (default: pillar
    ``gpu:rootless_users``). Returns ``nvgpu_doctor.run``'s ``{"ok", "first_failing_layer",
    "checks": [{"name", "layer", "status", "evidence", "fix"}]}``; exit code 1 on a failure.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.doctor
        salt '*' nvgpu.doctor user=gpuuser
    """
    result = __salt__["nvgpu_doctor.run"](user=user)
    if not result.get("ok"):
        __context__["retcode"] = 1
    return result


# ---------------------------------------------------------------------------
# The formula's pillar
# ---------------------------------------------------------------------------


def check_pillar(gpu):
    """
    Check the gpu formula's settings (defaults, per-OS values and pillar ``gpu``,
    merged as map.jinja merges them) and return every bad key with its value and what
    is allowed; an empty list when all is well. map.jinja stops the run on any.

    To check a node's pillar, render the formula: ``salt '*' state.show_sls gpu``
    fails with every bad key this returns, before anything runs.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu.check_pillar '{"driver": {"stream": "550:dkms"}}'
    """
    return nvgpu_pillar.check(gpu)
