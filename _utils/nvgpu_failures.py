"""
The one knowledge base of GPU node failures: what a failure looks like (a text pattern
in a tool's or container's output, a CUDA driver API error, a state of the node), its
likely cause, the fix, and the layer of the node that is broken.

Every diagnosis nvgpu gives comes from here: ``nvgpu.diagnose``, ``run_vector_add``,
``load_modules``, the host check (``nvgpu_cuda``) and the fleet report. A diagnosis is
``{"cause": str, "fix": str, "layer": str}``.

To teach nvgpu a new failure: add a ``Failure`` to ``TEXT_FAILURES`` (specific patterns
before general ones: the first match wins) or an entry to ``CUDA_ERRORS``, with a unit
test in tests/unit/utils/test_nvgpu_failures.py that feeds it the real message.
"""

import re
from collections import namedtuple

# The layers of a GPU container node, from the bottom up.
LAYERS = ("driver", "kernel-modules", "gpu", "fabric", "toolkit", "selinux", "rootless", "podman", "image")

# example: a real message it matches (its source in a comment beside it), shown in
# docs/troubleshooting.md; the unit tests check that each example finds its own entry.
Failure = namedtuple("Failure", "pattern cause fix layer example")

DRIVER_PACKAGE_HINT = "install the NVIDIA driver: dnf module install nvidia-driver:STREAM (e.g. latest-dkms)"
LOAD_MODULES_FIX = "salt-call nvgpu.load_modules (nvidia-modprobe && nvidia-modprobe -u)"
SELINUX_FIX = (
    "install the SELinux policy module (semodule -i nvidia-container.pp from NVIDIA/dgx-selinux), "
    "relabel (nvidia-container-cli -k list | restorecon -v -f -; restorecon -Rv /dev), run rootless "
    "containers with --security-opt label=type:nvidia_container_t, and check that /dev/nvidia* are "
    "mode 0666 (ausearch -m avc shows denials)"
)
GPU_FIX = (
    "look for Xid errors from NVRM in dmesg (journalctl -k | grep -i xid) and at "
    "nvidia-smi -q -d ECC,PAGE_RETIREMENT; drain the node and reset the GPU (nvidia-smi -r) or "
    "reboot; if it recurs, the GPU needs service"
)
DRIVER_UPGRADE_FIX = "upgrade the driver stream (pillar gpu:driver:stream), then reboot"
RELOAD_FIX = "reload the driver (salt-call nvgpu.reload_driver, when no process uses the GPU) or reboot"
NO_CGROUPS_FIX = (
    "set no-cgroups for rootless use: nvidia-ctk config --set nvidia-container-cli.no-cgroups=true "
    "--in-place (in /etc/nvidia-container-runtime/config.toml), or use CDI (mode=cdi)"
)
SUBID_OWN_ID_FIX = (
    "give the user a range above the system's uids (pillar gpu:rootless_users[].subuid_start, at "
    "least 100000), then podman system migrate as that user"
)
CDI_REGENERATE_FIX = (
    "regenerate it: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml (the "
    "nvgpu.container_toolkit state does this when the driver version changes)"
)
SECURE_BOOT_FIX = (
    "enroll the module's signing key: mokutil --import /var/lib/dkms/mok.pub (the key DKMS signs "
    "with), reboot and confirm it in the MOK manager at the console; or sign the module with a key "
    "already enrolled; or turn Secure Boot off in the firmware"
)
FABRIC_MANAGER_FIX = (
    "install nvidia-fabricmanager of the driver's version and run systemctl enable --now nvidia-fabricmanager"
)

# ---------------------------------------------------------------------------
# Text in the output of Podman, the OCI hook, nvidia-container-cli and the vector add
# ---------------------------------------------------------------------------

TEXT_FAILURES = [
    Failure(
        # crun's and runc's words for a bind-mount source that is gone.
        re.compile(
            r"error stat'?ing file\W*\S*\.so\.\d"
            r"|error mounting \"[^\"]*\.so\.\d[^\"]*\"[^\n]*no such file or directory",
            re.I,
        ),
        "the CDI spec names driver libraries that no longer exist: it was generated for an older "
        "driver and the driver has been upgraded since",
        CDI_REGENERATE_FIX,
        "toolkit",
        # crun's words (runc's: error mounting "...libcuda.so.550.127.08" ... no such file or directory).
        example="Error: crun: error stat'ing file `/usr/lib64/libcuda.so.550.54.14`: No such file or directory",
    ),
    Failure(
        re.compile(r"unresolvable CDI devices", re.I),
        "Podman found no CDI device nvidia.com/gpu: no CDI spec in /etc/cdi or /var/run/cdi, or "
        "the spec is not readable by the user running Podman",
        "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml, make it world-readable (0644), "
        "check with nvidia-ctk cdi list; or run with mode=hook",
        "toolkit",
        # Podman 4.x (pkg/specgen, CDI device resolution).
        example="Error: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=all",
    ),
    Failure(
        re.compile(r"driver/library version mismatch", re.I),
        "the loaded nvidia kernel module and the installed driver libraries are different "
        "versions: the driver was upgraded and the old module is still loaded",
        RELOAD_FIX,
        "kernel-modules",
        # NVML's nvmlErrorString(NVML_ERROR_LIB_RM_VERSION_MISMATCH), as nvidia-smi prints it.
        example="Failed to initialize NVML: Driver/library version mismatch",
    ),
    Failure(
        # The kernel's module_sig_check() (kernel/module/signing.c): with signatures enforced
        # (Secure Boot), an unsigned module or one signed by a key the kernel does not hold
        # fails with EKEYREJECTED; modprobe prints strerror(EKEYREJECTED):
        # "modprobe: ERROR: could not insert 'nvidia': Key was rejected by service".
        re.compile(r"Key was rejected by service|Loading of (?:unsigned )?module[^\n]* is rejected", re.I),
        "Secure Boot is on and the nvidia module is unsigned or signed by a key that is not "
        "enrolled, so the kernel refuses to load it",
        SECURE_BOOT_FIX,
        "driver",
        example="modprobe: ERROR: could not insert 'nvidia': Key was rejected by service",
    ),
    Failure(
        re.compile(r"nvml error: driver not loaded", re.I),
        "the NVIDIA kernel module is not loaded on the host",
        "load it: " + LOAD_MODULES_FIX,
        "kernel-modules",
        # libnvidia-container (nvc_init), through Podman's hook error.
        example="nvidia-container-cli: initialization error: nvml error: driver not loaded",
    ),
    Failure(
        re.compile(r"load library failed: libnvidia-ml\.so|libnvidia-ml\.so\S*: cannot open shared", re.I),
        "the NVIDIA driver's user-space libraries (libnvidia-ml) are not installed on the host",
        DRIVER_PACKAGE_HINT,
        "driver",
        # libnvidia-container's dlopen of NVML.
        example="nvidia-container-cli: initialization error: load library failed: libnvidia-ml.so.1: "
                "cannot open shared object file: no such file or directory",
    ),
    Failure(
        re.compile(r"insufficient permissions|(?:open|stat)\S* /dev/nvidia\S*: permission denied", re.I),
        "access to the GPU device nodes was denied: an SELinux denial (AVC on /dev/nvidia* with "
        "tcontext ...xserver_misc_device_t) or the device nodes' permissions",
        SELINUX_FIX,
        "selinux",
        # NVML's nvmlErrorString(NVML_ERROR_NO_PERMISSION), as nvidia-smi prints it in a container.
        example="Failed to initialize NVML: Insufficient Permissions",
    ),
    Failure(
        re.compile(
            r"cgroup subsystem devices not found|bpf_prog_query\(BPF_CGROUP_DEVICE\) failed"
            r"|failed to add device rules",
            re.I,
        ),
        "the NVIDIA hook tried to set up the device cgroup, which a rootless container may not do",
        NO_CGROUPS_FIX,
        "rootless",
        # libnvidia-container's cgroup v2 device filter (NVIDIA/nvidia-container-toolkit issues
        # on rootless Podman), as the OCI hook reports it.
        example="nvidia-container-cli: mount error: failed to add device rules: unable to find any existing "
                "device filters attached to the cgroup: bpf_prog_query(BPF_CGROUP_DEVICE) failed: "
                "operation not permitted",
    ),
    Failure(
        # Podman refuses a user whose subordinate range contains the user's own uid.
        re.compile(r"mapping [^\n]*includes the user UID", re.I),
        "the user's subordinate id range in /etc/subuid or /etc/subgid contains the user's own uid, "
        "which rootless Podman refuses",
        SUBID_OWN_ID_FIX,
        "rootless",
        # Podman 4.3 on the simulated node.
        example='Error: invalid configuration: the specified mapping 1000:65536 in "/etc/subuid" includes the user UID',
    ),
    Failure(
        re.compile(
            r"cannot find newuidmap|cannot find newgidmap|newuidmap\S*: not found|newgidmap\S*: not found"
            r"|exec: \"new[ug]idmap\": executable file not found"
            r"|no subuid ranges found|no subgid ranges found|not enough IDs available",
            re.I,
        ),
        "rootless Podman cannot map the user's IDs: newuidmap/newgidmap are missing or the user has "
        "no range in /etc/subuid and /etc/subgid",
        "dnf install shadow-utils; usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER; "
        "then podman system migrate as that user",
        "rootless",
        # Podman 4.3 on the simulated node.
        example='Error: no subuid ranges found for user "gpuuser" in /etc/subuid',
    ),
    Failure(
        re.compile(
            r"manifest unknown|initializing source|no such host|connection refused|i/o timeout"
            r"|requested access to the resource is denied|image not known|unable to pull|name unknown",
            re.I,
        ),
        "Podman could not get the validation image (wrong name or tag, registry unreachable, or "
        "pull=never with the image not present)",
        "check the image and the registry with podman pull IMAGE as the same user; on air-gapped "
        "sites mirror the image to a local registry and pass image=",
        "image",
        # Podman's pull through containers/image.
        example="Error: initializing source docker://docker.io/mirrorgooglecontainers/cuda-vector-add:v0.2: "
                "reading manifest v0.2 in docker.io/mirrorgooglecontainers/cuda-vector-add: manifest unknown",
    ),
    Failure(
        re.compile(r"error running (?:prestart )?hook|nvidia-container-runtime-hook\S*: no such file", re.I),
        "the NVIDIA OCI hook failed before the container started",
        "run nvidia-container-cli -k -d /dev/tty info as root to see why; check the hook file in "
        "/usr/share/containers/oci/hooks.d and /etc/nvidia-container-runtime/config.toml",
        "toolkit",
        # runc, for a hook that exits non-zero.
        example="Error: OCI runtime error: runc: error running hook #0: exit status 127",
    ),
    Failure(
        re.compile(r"CUDA driver version is insufficient for CUDA runtime version", re.I),
        "libcuda was not injected into the container (no NVIDIA OCI hook, no CDI device, or the "
        "wrong runtime); on a host, the driver is older than the CUDA runtime",
        "install nvidia-container-toolkit and its OCI hook, or generate a CDI spec and run with "
        "--device nvidia.com/gpu=all (mode=cdi); on a host, upgrade the driver stream",
        "toolkit",
        # NVIDIA's vectorAdd sample (cudaGetErrorString(cudaErrorInsufficientDriver), error 35).
        example="Failed to allocate device vector A (error code CUDA driver version is insufficient for CUDA "
                "runtime version)!",
    ),
    Failure(
        re.compile(r"system not yet initialized|cudaErrorSystemNotReady", re.I),
        "CUDA reports the system not yet initialised: on an NVSwitch system (HGX/DGX) the NVIDIA "
        "Fabric Manager is not running or does not match the driver",
        FABRIC_MANAGER_FIX,
        "fabric",
        # cudaGetErrorString(cudaErrorSystemNotReady), CUDA error 802 (CUDA runtime API, enum
        # cudaError): CUDA on an NVSwitch system without a running fabric manager.
        example="CUDA error 802: system not yet initialized",
    ),
    Failure(
        re.compile(r"no CUDA-capable device is detected", re.I),
        "no /dev/nvidia* device reached the program: the hook or CDI device is missing, or the "
        "driver is not loaded",
        "salt-call nvgpu.load_modules; then check the OCI hook or the CDI spec (nvidia-ctk cdi list)",
        "toolkit",
        # NVIDIA's vectorAdd sample (cudaGetErrorString(cudaErrorNoDevice), error 100).
        example="Failed to allocate device vector A (error code no CUDA-capable device is detected)!",
    ),
    Failure(
        # cudaErrorECCUncorrectable's text, as the vectorAdd sample prints it (cudaGetErrorString).
        re.compile(r"uncorrectable ECC error encountered", re.I),
        "the GPU has an uncorrectable ECC memory error: the GPU is bad until it is reset, and may "
        "need service",
        GPU_FIX,
        "gpu",
        # cuda-samples vectorAdd.cu's message with cudaGetErrorString(cudaErrorECCUncorrectable).
        example="Failed to allocate device vector A (error code uncorrectable ECC error encountered)!",
    ),
    Failure(
        re.compile(r"Failed to launch vectorAdd kernel|Result verification failed", re.I),
        "the GPU itself misbehaves: the kernel did not run or computed wrong results",
        GPU_FIX,
        "gpu",
        # NVIDIA's vectorAdd sample.
        example="Failed to launch vectorAdd kernel (error code unspecified launch failure)!",
    ),
    Failure(
        # What cmd.run_all reports when its timeout fires.
        re.compile(r"Timed out after [\d.]+ seconds", re.I),
        "the run did not finish within the timeout (a slow image pull, or a hung GPU)",
        "pull the image first or raise timeout=; check nvidia-smi and dmesg for a hung GPU",
        "podman",
        example="['podman', 'run'] : Timed out after 300 seconds",
    ),
]

UNKNOWN = {
    "cause": "the vector add did not report Test PASSED and the output matches no known failure",
    "fix": "read stdout and stderr; rerun the command shown in 'command' by hand",
    "layer": "unknown",
}


def _diagnosis(cause, fix, layer):
    return {"cause": cause, "fix": fix, "layer": layer}


def diagnose_text(text):
    """The diagnosis of the first known failure in ``text``, or None."""
    for failure in TEXT_FAILURES:
        if failure.pattern.search(text or ""):
            return _diagnosis(failure.cause, failure.fix, failure.layer)
    return None


# ---------------------------------------------------------------------------
# CUDA driver API errors (the host check)
# ---------------------------------------------------------------------------

# What a CUDA driver API error most often means on a node, by its cuGetErrorName name
# (``NAME@call`` for a meaning that holds for one call only). The runtime API's
# cudaErrorInsufficientDriver (35) has no driver API twin: an old driver shows up here
# as CUDA_ERROR_UNSUPPORTED_PTX_VERSION or CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER.
CUDA_ERRORS = {
    "CUDA_ERROR_NO_DEVICE": (
        "The driver sees no CUDA-capable GPU: the /dev/nvidia* device nodes are missing or not "
        "accessible to this user, the GPU is not bound to the nvidia driver, or "
        "CUDA_VISIBLE_DEVICES hides it",
        "Run salt-call nvgpu.load_modules (it creates /dev/nvidia*), check `nvidia-smi -L` and "
        "`lspci -k -d 10de:`, and unset CUDA_VISIBLE_DEVICES",
        "kernel-modules",
    ),
    "CUDA_ERROR_INVALID_DEVICE": (
        "There is no GPU with the requested index on this node",
        "Pass a device index that `nvidia-smi -L` lists",
        "gpu",
    ),
    "CUDA_ERROR_NOT_INITIALIZED": (
        "The CUDA driver could not be initialised: the nvidia kernel module is not loaded or "
        "failed to initialise the GPU",
        "Run salt-call nvgpu.load_modules and read `dmesg | grep NVRM` for the driver's reason",
        "kernel-modules",
    ),
    "CUDA_ERROR_DEINITIALIZED": (
        "The CUDA driver is shutting down or was unloaded while the check ran",
        "Run the check again; if it repeats, read `dmesg | grep NVRM`",
        "kernel-modules",
    ),
    "CUDA_ERROR_UNKNOWN@cuInit": (
        "cuInit failed without a specific reason: most often the nvidia_uvm module is not "
        "loaded (/dev/nvidia-uvm missing), or the kernel module and libcuda come from "
        "different driver versions",
        "Run salt-call nvgpu.load_modules (nvidia-modprobe -u loads nvidia_uvm); if it is "
        "loaded, compare /sys/module/nvidia/version with the libcuda.so version and reboot "
        "after a driver upgrade",
        "kernel-modules",
    ),
    "CUDA_ERROR_STUB_LIBRARY": (
        "The libcuda.so.1 that was loaded is the CUDA toolkit's stub (lib64/stubs), not the "
        "driver's library",
        "Remove the CUDA toolkit's stubs directory from LD_LIBRARY_PATH and /etc/ld.so.conf.d, "
        "then run ldconfig",
        "driver",
    ),
    "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH": (
        "The loaded nvidia kernel module and the user-space driver libraries are from different "
        "driver versions (typically: the driver was upgraded and the node not rebooted)",
        "Reboot the node, or unload and reload the nvidia modules, so that both sides match",
        "kernel-modules",
    ),
    "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE": (
        "A CUDA forward-compatibility libcuda (cuda-compat) is in use on a GPU that does not "
        "support it",
        "Remove the cuda-compat directory from LD_LIBRARY_PATH, or upgrade the driver stream",
        "driver",
    ),
    "CUDA_ERROR_SYSTEM_NOT_READY": (
        "The system is not ready for CUDA: on NVSwitch systems (HGX/DGX) the NVIDIA Fabric "
        "Manager is not running or does not match the driver",
        "Install nvidia-fabricmanager of the driver's version and run "
        "`systemctl enable --now nvidia-fabricmanager`",
        "fabric",
    ),
    "CUDA_ERROR_DEVICE_UNAVAILABLE": (
        "The GPU is busy or unavailable: it is in exclusive-process compute mode and another "
        "process holds it, or it is being reset",
        "Check `nvidia-smi` for the compute mode and processes; `nvidia-smi -c DEFAULT` allows "
        "shared use",
        "gpu",
    ),
    "CUDA_ERROR_OUT_OF_MEMORY": (
        "The GPU's memory is full",
        "See which processes hold GPU memory with `nvidia-smi` and stop them",
        "gpu",
    ),
    "CUDA_ERROR_UNSUPPORTED_PTX_VERSION": (
        "CUDA driver version is insufficient: the driver is too old for the PTX of the check",
        DRIVER_UPGRADE_FIX,
        "driver",
    ),
    "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER": (
        "CUDA driver version is insufficient for a call the check makes",
        DRIVER_UPGRADE_FIX,
        "driver",
    ),
    "CUDA_ERROR_JIT_COMPILER_NOT_FOUND": (
        "The driver's PTX JIT compiler (libnvidia-ptxjitcompiler.so.1) is missing",
        "Reinstall the driver's CUDA libraries (the nvidia-driver-cuda-libs package of the stream)",
        "driver",
    ),
    "CUDA_ERROR_JIT_COMPILATION_DISABLED": (
        "PTX JIT compilation is disabled (CUDA_DISABLE_PTX_JIT or the driver's settings)",
        "Unset CUDA_DISABLE_PTX_JIT in the minion's environment",
        "driver",
    ),
    "CUDA_ERROR_INVALID_PTX": (
        "The driver's JIT compiler rejected the check's PTX: the driver's PTX compiler is "
        "damaged or older than the PTX",
        "Reinstall or upgrade the driver stream (nvidia-driver-cuda-libs provides the JIT compiler)",
        "driver",
    ),
    "CUDA_ERROR_NO_BINARY_FOR_GPU": (
        "The driver could not produce code for this GPU from the check's PTX",
        "Upgrade the driver stream to one that supports this GPU",
        "driver",
    ),
    "CUDA_ERROR_INVALID_IMAGE": (
        "The driver rejected the check's kernel image",
        "Reinstall the driver stream; if it repeats, upgrade it",
        "driver",
    ),
    "CUDA_ERROR_OPERATING_SYSTEM": (
        "An operating-system call inside the driver failed (device-node permissions, limits, "
        "or an SELinux denial)",
        "Check the /dev/nvidia* permissions, `ausearch -m avc -ts recent`, and `dmesg | grep NVRM`",
        "selinux",
    ),
}
# Errors that mean the GPU failed while running the kernel.
CUDA_GPU_FAULTS = {
    "CUDA_ERROR_ECC_UNCORRECTABLE",
    "CUDA_ERROR_ILLEGAL_ADDRESS",
    "CUDA_ERROR_ILLEGAL_INSTRUCTION",
    "CUDA_ERROR_HARDWARE_STACK_ERROR",
    "CUDA_ERROR_MISALIGNED_ADDRESS",
    "CUDA_ERROR_INVALID_PC",
    "CUDA_ERROR_LAUNCH_FAILED",
    "CUDA_ERROR_LAUNCH_TIMEOUT",
    "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
    "CUDA_ERROR_NVLINK_UNCORRECTABLE",
    "CUDA_ERROR_CONTAINED",
    "CUDA_ERROR_UNKNOWN",
}
# CUresult names for when cuGetErrorName itself is unusable.
CUDA_ERROR_NAMES = {
    1: "CUDA_ERROR_INVALID_VALUE",
    2: "CUDA_ERROR_OUT_OF_MEMORY",
    3: "CUDA_ERROR_NOT_INITIALIZED",
    4: "CUDA_ERROR_DEINITIALIZED",
    34: "CUDA_ERROR_STUB_LIBRARY",
    36: "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER",
    46: "CUDA_ERROR_DEVICE_UNAVAILABLE",
    100: "CUDA_ERROR_NO_DEVICE",
    101: "CUDA_ERROR_INVALID_DEVICE",
    200: "CUDA_ERROR_INVALID_IMAGE",
    209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
    214: "CUDA_ERROR_ECC_UNCORRECTABLE",
    218: "CUDA_ERROR_INVALID_PTX",
    221: "CUDA_ERROR_JIT_COMPILER_NOT_FOUND",
    222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
    223: "CUDA_ERROR_JIT_COMPILATION_DISABLED",
    304: "CUDA_ERROR_OPERATING_SYSTEM",
    700: "CUDA_ERROR_ILLEGAL_ADDRESS",
    719: "CUDA_ERROR_LAUNCH_FAILED",
    802: "CUDA_ERROR_SYSTEM_NOT_READY",
    803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
    804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
    999: "CUDA_ERROR_UNKNOWN",
}


def diagnose_cuda(error, call=None, text=None):
    """
    The diagnosis of a CUDA driver API error: its cuGetErrorName name (or the code as an
    int), the call that returned it, and the driver's own text for it.
    """
    if isinstance(error, int) or str(error).isdigit():
        error = CUDA_ERROR_NAMES.get(int(error), f"CUDA error {int(error)}")
    said = f"{call} returned {error}" + (f" ({text})" if text else "")
    found = CUDA_ERRORS.get(f"{error}@{call}") or CUDA_ERRORS.get(error)
    if found:
        cause, fix, layer = found
        return _diagnosis(f"{cause}. [{said}]", fix, layer)
    if error in CUDA_GPU_FAULTS:
        return _diagnosis(
            f"The GPU failed while running the kernel (a hardware or driver fault). [{said}]", GPU_FIX, "gpu"
        )
    return _diagnosis(
        f"The CUDA driver failed the check. [{said}]",
        "Read `dmesg | grep -e NVRM -e Xid` and `nvidia-smi -q` for the driver's view of the GPU",
        "driver",
    )


# The host check's own findings (nvgpu_cuda), by the name its child process reports;
# ``{text}`` is what the child said.
HOST_CHECK_FAILURES = {
    "NO_LIBCUDA_WITH_MODULE": (
        "The nvidia kernel module is loaded but libcuda.so.1, the driver's CUDA library, cannot be "
        "loaded: {text}",
        "Install the driver stream's CUDA libraries (nvidia-driver-cuda-libs) and run ldconfig; the "
        "minion must see the same libraries as the kernel module",
        "driver",
    ),
    "NO_LIBCUDA": (
        "No NVIDIA driver installed/loaded: libcuda.so.1 cannot be loaded ({text})",
        "Install the NVIDIA driver (salt-call state.apply gpu, or dnf module install "
        "nvidia-driver:<stream>), then load it: salt-call nvgpu.load_modules",
        "driver",
    ),
    "RESULT_MISMATCH": ("The GPU computed a wrong sum (result verification failed at {text})", GPU_FIX, "gpu"),
    "TIMEOUT": (
        "The check did not finish within {text}: a CUDA driver call hung (a hung or resetting GPU, "
        "or a driver waiting on a locked device)",
        GPU_FIX,
        "gpu",
    ),
    "CRASHED": ("The check process died inside the CUDA driver ({text})", GPU_FIX, "gpu"),
}


def diagnose_host_check(name, text):
    """The diagnosis of one of the host check's own findings (HOST_CHECK_FAILURES)."""
    cause, fix, layer = HOST_CHECK_FAILURES[name]
    return _diagnosis(cause.format(text=text), fix, layer)


# ---------------------------------------------------------------------------
# Why the driver does not load, from the state of the node
# ---------------------------------------------------------------------------


def no_module_for_kernel(release):
    return _diagnosis(
        f"no nvidia kernel module is built for the running kernel {release}",
        f"install kernel-devel-{release} and kernel-headers-{release}, then rebuild the driver with "
        "DKMS (dkms autoinstall, or reinstall the nvidia-driver stream)",
        "driver",
    )


NOUVEAU_LOADED = _diagnosis(
    "the nouveau driver is loaded and holds the GPU",
    "unload nouveau (modprobe -r nouveau) and blacklist it (blacklist nouveau in /etc/modprobe.d, "
    "rd.driver.blacklist=nouveau on the kernel command line; reboot if it is in use)",
    "kernel-modules",
)
KERNEL_REFUSED = _diagnosis(
    "the kernel refused the nvidia module",
    "read the NVRM lines in dmesg (journalctl -k), e.g. a Secure Boot signature or a GPU not "
    "supported by this driver branch",
    "kernel-modules",
)


def combine(diagnoses):
    """
    Several findings that hold at once, as one diagnosis: causes joined with "and", fixes
    in the order given (the first must be fixed first), the first finding's layer.
    """
    return _diagnosis(
        "; and ".join(d["cause"] for d in diagnoses),
        "; then ".join(d["fix"] for d in diagnoses),
        diagnoses[0]["layer"],
    )


# ---------------------------------------------------------------------------
# One GPU's health: Xid errors, ECC, retired and remapped memory, a GPU off the bus
# ---------------------------------------------------------------------------

DRAIN_RESET_FIX = (
    "drain the node (no new jobs), then reset the GPU (nvidia-smi -r -i {index}, with no process on it) "
    "or reboot the node"
)
RMA_FIX = "if it recurs after the reset, the GPU needs service (RMA): nvidia-bug-report.sh for the vendor"
NO_SPARE_ROWS_FIX = "drain the node: the GPU has no spare memory rows left and needs service (RMA)"
GPU_OFF_BUS_FIX = (
    "drain the node and reboot it (a GPU off the bus comes back only with a reboot or a PCI reset); "
    "if it stays missing, reseat or replace it (RMA); dmesg shows the driver's reason (Xid 79, RmInitAdapter)"
)
# What an Xid error means and whether it makes the GPU unhealthy (fail) or is usually caused
# by an application (warn), after NVIDIA's Xid catalog
# (https://docs.nvidia.com/deploy/xid-errors/); Xids not listed are reported as warnings.
XIDS = {
    13: ("warn", "graphics engine exception (usually an application fault)"),
    31: ("warn", "GPU memory page fault (usually an application fault)"),
    43: ("warn", "GPU stopped processing (usually an application fault)"),
    45: ("warn", "preemptive cleanup after a previous error"),
    48: ("fail", "double bit ECC error (DBE): uncorrectable GPU memory error"),
    61: ("fail", "internal micro-controller breakpoint/warning"),
    62: ("fail", "internal micro-controller halt"),
    63: ("fail", "ECC page retirement or row remapping recorded: the GPU needs a reset to use it"),
    64: ("fail", "ECC page retirement or row remapping failure"),
    74: ("fail", "NVLink error"),
    79: ("fail", "GPU has fallen off the bus"),
    92: ("fail", "high single-bit ECC error rate"),
    94: ("fail", "contained ECC error"),
    95: ("fail", "uncontained ECC error"),
    109: ("warn", "context switch timeout"),
    119: ("fail", "GSP RPC timeout"),
    120: ("fail", "GSP error"),
    140: ("fail", "unrecovered ECC error"),
}


def xid_meaning(xid):
    """(status, meaning) of an Xid error number: status fail (the GPU is unhealthy) or warn."""
    return XIDS.get(int(xid), ("warn", "see NVIDIA's Xid catalog"))
