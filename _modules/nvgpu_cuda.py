"""
Host-level CUDA check: the cuda-samples vectorAdd run directly through the CUDA driver API.

It loads ``libcuda.so.1`` with ctypes, JIT-compiles a PTX kernel kept in this file, adds two
50000-element vectors on the GPU and verifies the sum on the host. It needs the NVIDIA driver
and nothing else: no compiler, no CUDA toolkit, no container. Run it first when a GPU node
misbehaves: if the driver cannot run this, no container on the node can run CUDA either.

The check runs in a child process (this same file, run by the minion's own Python) so that a
driver call that hangs ends at ``timeout`` instead of hanging the minion.
"""

import ctypes
import json
import logging
import operator
import os
import sys
import time
from array import array

log = logging.getLogger(__name__)

__virtualname__ = "nvgpu_cuda"

# vectorAdd from NVIDIA's cuda-samples, emitted by `nvcc -ptx` (CUDA 13.0), with the header
# lowered from `.version 9.0` / `.target sm_75` to `.version 6.4` / `.target sm_52`: the kernel
# uses nothing newer, and every driver from CUDA 10.1 on (418+, so 535, 550 and 580) JIT-compiles
# PTX ISA 6.4 for its GPUs, where 9.0 would need a CUDA 13 (580+) driver.
VECTOR_ADD_PTX = b"""\
.version 6.4
.target sm_52
.address_size 64

.visible .entry vectorAdd(
	.param .u64 vectorAdd_param_0,
	.param .u64 vectorAdd_param_1,
	.param .u64 vectorAdd_param_2,
	.param .u32 vectorAdd_param_3
)
{
	.reg .pred 	%p<2>;
	.reg .f32 	%f<4>;
	.reg .b32 	%r<6>;
	.reg .b64 	%rd<11>;

	ld.param.u64 	%rd1, [vectorAdd_param_0];
	ld.param.u64 	%rd2, [vectorAdd_param_1];
	ld.param.u64 	%rd3, [vectorAdd_param_2];
	ld.param.u32 	%r2, [vectorAdd_param_3];
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %ctaid.x;
	mov.u32 	%r5, %tid.x;
	mad.lo.s32 	%r1, %r3, %r4, %r5;
	setp.ge.s32 	%p1, %r1, %r2;
	@%p1 bra 	$L__BB0_2;

	cvta.to.global.u64 	%rd4, %rd1;
	mul.wide.s32 	%rd5, %r1, 4;
	add.s64 	%rd6, %rd4, %rd5;
	cvta.to.global.u64 	%rd7, %rd2;
	add.s64 	%rd8, %rd7, %rd5;
	ld.global.f32 	%f1, [%rd8];
	ld.global.f32 	%f2, [%rd6];
	add.f32 	%f3, %f2, %f1;
	cvta.to.global.u64 	%rd9, %rd3;
	add.s64 	%rd10, %rd9, %rd5;
	st.global.f32 	[%rd10], %f3;

$L__BB0_2:
	ret;
}
\0"""

_LIBCUDA = "libcuda.so.1"
_DRIVER_FIX = (
    "Install the NVIDIA driver (salt-call state.apply gpu, or dnf module install "
    "nvidia-driver:<stream>), then load it: salt-call nvgpu.load_modules"
)
_GPU_FIX = (
    "Look for Xid errors from NVRM in `dmesg` and at `nvidia-smi -q -d ECC,PAGE_RETIREMENT`; "
    "drain the node and reset the GPU (nvidia-smi -r) or reboot; if it recurs, the GPU needs service"
)

# What a CUDA driver API error most often means on a node, by its cuGetErrorName name. The
# runtime API's cudaErrorInsufficientDriver (35) has no driver API twin: an old driver shows up
# here as CUDA_ERROR_UNSUPPORTED_PTX_VERSION or CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER.
_DIAGNOSES = {
    "CUDA_ERROR_NO_DEVICE": (
        "The driver sees no CUDA-capable GPU: the /dev/nvidia* device nodes are missing or not "
        "accessible to this user, the GPU is not bound to the nvidia driver, or "
        "CUDA_VISIBLE_DEVICES hides it",
        "Run salt-call nvgpu.load_modules (it creates /dev/nvidia*), check `nvidia-smi -L` and "
        "`lspci -k -d 10de:`, and unset CUDA_VISIBLE_DEVICES",
    ),
    "CUDA_ERROR_INVALID_DEVICE": (
        "There is no GPU with the requested index on this node",
        "Pass a device index that `nvidia-smi -L` lists",
    ),
    "CUDA_ERROR_NOT_INITIALIZED": (
        "The CUDA driver could not be initialised: the nvidia kernel module is not loaded or "
        "failed to initialise the GPU",
        "Run salt-call nvgpu.load_modules and read `dmesg | grep NVRM` for the driver's reason",
    ),
    "CUDA_ERROR_DEINITIALIZED": (
        "The CUDA driver is shutting down or was unloaded while the check ran",
        "Run the check again; if it repeats, read `dmesg | grep NVRM`",
    ),
    "CUDA_ERROR_UNKNOWN@cuInit": (
        "cuInit failed without a specific reason: most often the nvidia_uvm module is not "
        "loaded (/dev/nvidia-uvm missing), or the kernel module and libcuda come from "
        "different driver versions",
        "Run salt-call nvgpu.load_modules (nvidia-modprobe -u loads nvidia_uvm); if it is "
        "loaded, compare /sys/module/nvidia/version with the libcuda.so version and reboot "
        "after a driver upgrade",
    ),
    "CUDA_ERROR_STUB_LIBRARY": (
        "The libcuda.so.1 that was loaded is the CUDA toolkit's stub (lib64/stubs), not the "
        "driver's library",
        "Remove the CUDA toolkit's stubs directory from LD_LIBRARY_PATH and /etc/ld.so.conf.d, "
        "then run ldconfig",
    ),
    "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH": (
        "The loaded nvidia kernel module and the user-space driver libraries are from different "
        "driver versions (typically: the driver was upgraded and the node not rebooted)",
        "Reboot the node, or unload and reload the nvidia modules, so that both sides match",
    ),
    "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE": (
        "A CUDA forward-compatibility libcuda (cuda-compat) is in use on a GPU that does not "
        "support it",
        "Remove the cuda-compat directory from LD_LIBRARY_PATH, or upgrade the driver stream",
    ),
    "CUDA_ERROR_SYSTEM_NOT_READY": (
        "The system is not ready for CUDA: on NVSwitch systems (HGX/DGX) the NVIDIA Fabric "
        "Manager is not running or does not match the driver",
        "Install nvidia-fabricmanager of the driver's version and run "
        "`systemctl enable --now nvidia-fabricmanager`",
    ),
    "CUDA_ERROR_DEVICE_UNAVAILABLE": (
        "The GPU is busy or unavailable: it is in exclusive-process compute mode and another "
        "process holds it, or it is being reset",
        "Check `nvidia-smi` for the compute mode and processes; `nvidia-smi -c DEFAULT` allows "
        "shared use",
    ),
    "CUDA_ERROR_OUT_OF_MEMORY": (
        "The GPU's memory is full",
        "See which processes hold GPU memory with `nvidia-smi` and stop them",
    ),
    "CUDA_ERROR_UNSUPPORTED_PTX_VERSION": (
        "CUDA driver version is insufficient: the driver is too old for the PTX of the check",
        "Upgrade the driver stream (pillar gpu:driver:stream), then reboot",
    ),
    "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER": (
        "CUDA driver version is insufficient for a call the check makes",
        "Upgrade the driver stream (pillar gpu:driver:stream), then reboot",
    ),
    "CUDA_ERROR_JIT_COMPILER_NOT_FOUND": (
        "The driver's PTX JIT compiler (libnvidia-ptxjitcompiler.so.1) is missing",
        "Reinstall the driver's CUDA libraries (the nvidia-driver-cuda-libs package of the stream)",
    ),
    "CUDA_ERROR_JIT_COMPILATION_DISABLED": (
        "PTX JIT compilation is disabled (CUDA_DISABLE_PTX_JIT or the driver's settings)",
        "Unset CUDA_DISABLE_PTX_JIT in the minion's environment",
    ),
    "CUDA_ERROR_INVALID_PTX": (
        "The driver's JIT compiler rejected the check's PTX: the driver's PTX compiler is "
        "damaged or older than the PTX",
        "Reinstall or upgrade the driver stream (nvidia-driver-cuda-libs provides the JIT compiler)",
    ),
    "CUDA_ERROR_NO_BINARY_FOR_GPU": (
        "The driver could not produce code for this GPU from the check's PTX",
        "Upgrade the driver stream to one that supports this GPU",
    ),
    "CUDA_ERROR_INVALID_IMAGE": (
        "The driver rejected the check's kernel image",
        "Reinstall the driver stream; if it repeats, upgrade it",
    ),
    "CUDA_ERROR_OPERATING_SYSTEM": (
        "An operating-system call inside the driver failed (device-node permissions, limits, "
        "or an SELinux denial)",
        "Check the /dev/nvidia* permissions, `ausearch -m avc -ts recent`, and `dmesg | grep NVRM`",
    ),
}
_GPU_FAULTS = {
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
_NAMES = {
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


def __virtual__():
    """
    Loads on Linux; whether a driver is there is what vector_add finds out.
    """
    if sys.platform.startswith("linux"):
        return __virtualname__
    return (False, "nvgpu_cuda: the NVIDIA CUDA driver API check runs on Linux only")


def diagnosis(error, call=None, text=None):
    """
    Return ``{"cause": ..., "fix": ...}`` for a CUDA driver API error name (as cuGetErrorName
    gives it, e.g. ``CUDA_ERROR_NO_DEVICE``, or the code as an int), the call that returned it,
    and the driver's own text for it.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_cuda.diagnosis CUDA_ERROR_NO_DEVICE call=cuInit
    """
    if isinstance(error, int) or str(error).isdigit():
        error = _NAMES.get(int(error), f"CUDA error {int(error)}")
    said = f"{call} returned {error}" + (f" ({text})" if text else "")
    found = _DIAGNOSES.get(f"{error}@{call}") or _DIAGNOSES.get(error)
    if found:
        return {"cause": f"{found[0]}. [{said}]", "fix": found[1]}
    if error in _GPU_FAULTS:
        return {
            "cause": f"The GPU failed while running the kernel (a hardware or driver fault). [{said}]",
            "fix": _GPU_FIX,
        }
    return {
        "cause": f"The CUDA driver failed the check. [{said}]",
        "fix": "Read `dmesg | grep -e NVRM -e Xid` and `nvidia-smi -q` for the driver's view of the GPU",
    }


class _CudaError(Exception):
    def __init__(self, call, code, name, text):
        super().__init__(f"{call} failed (error code {name}: {text})")
        self.call, self.code, self.name, self.text = call, code, name, text


def _random_floats(count):
    """
    ``count`` random float32 in [1, 2) with 15 random mantissa bits, so that the sum of two is
    exact in float32 and the check can demand equality. Made with whole-buffer integer
    operations: Python loops over 50000 elements would cost more than the kernel.
    """
    ones = int.from_bytes(b"\x00\x00\x80\x3f" * count, "little")  # 1.0f
    mantissa = int.from_bytes(b"\x00\xff\x7f\x00" * count, "little")
    bits = int.from_bytes(os.urandom(4 * count), "little") & mantissa | ones
    return array("f", bits.to_bytes(4 * count, "little"))


def _check(elements, threads, device, report):
    """
    The check itself, in the child process: the same steps and messages as vectorAdd. The
    result goes to ``report`` as soon as it is known, before the context is torn down
    (cuCtxDestroy and the process exit take about 0.1 s on an H200, and change nothing).
    """
    out, err = [], []
    res = {"stdout": out, "stderr": err, "timings": {}, "error": None, "passed": False}
    start = time.perf_counter()
    mark = start

    def lap(name):
        nonlocal mark
        now = time.perf_counter()
        res["timings"][name] = round(now - mark, 6)
        mark = now

    try:
        cuda = ctypes.CDLL(_LIBCUDA)
    except OSError as exc:
        err.append(f"Failed to load {_LIBCUDA} ({exc})")
        res["error"] = {"call": "dlopen", "name": "NO_LIBCUDA", "text": str(exc)}
        report(res)
        return

    def name_of(code):
        ptr = ctypes.c_char_p()
        if cuda.cuGetErrorName(code, ctypes.byref(ptr)) == 0 and ptr.value:
            return ptr.value.decode()
        return _NAMES.get(code, f"CUDA error {code}")

    def text_of(code):
        ptr = ctypes.c_char_p()
        if cuda.cuGetErrorString(code, ctypes.byref(ptr)) == 0 and ptr.value:
            return ptr.value.decode()
        return "unknown error"

    def call(fname, *args):
        code = getattr(cuda, fname)(*args)
        if code:
            raise _CudaError(fname, code, name_of(code), text_of(code))

    version = ctypes.c_int()
    if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0:
        res["cuda_driver_version"] = f"{version.value // 1000}.{version.value % 1000 // 10}"

    u64 = ctypes.c_uint64
    ctx, module, func = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    ptrs = [u64(), u64(), u64()]
    nbytes = elements * 4
    blocks = (elements + threads - 1) // threads
    out.append(f"[Vector addition of {elements} elements]")
    stage = "Failed to initialise the CUDA driver"
    try:
        call("cuInit", ctypes.c_uint(0))
        dev = ctypes.c_int()
        call("cuDeviceGet", ctypes.byref(dev), ctypes.c_int(device))
        name = ctypes.create_string_buffer(256)
        call("cuDeviceGetName", name, ctypes.c_int(256), dev)
        res["device_name"] = name.value.decode(errors="replace")
        call("cuCtxCreate_v2", ctypes.byref(ctx), ctypes.c_uint(0), dev)
        lap("init_s")

        stage = "Failed to load the vectorAdd kernel"
        call("cuModuleLoadData", ctypes.byref(module), ctypes.c_char_p(VECTOR_ADD_PTX))
        call("cuModuleGetFunction", ctypes.byref(func), module, b"vectorAdd")
        lap("module_load_s")

        host_a, host_b = _random_floats(elements), _random_floats(elements)
        host_c = array("f", bytes(nbytes))
        for label, ptr in zip("ABC", ptrs):
            stage = f"Failed to allocate device vector {label}"
            call("cuMemAlloc_v2", ctypes.byref(ptr), ctypes.c_size_t(nbytes))
        out.append("Copy input data from the host memory to the CUDA device")
        for label, ptr, host in (("A", ptrs[0], host_a), ("B", ptrs[1], host_b)):
            stage = f"Failed to copy vector {label} from host to device"
            addr, _ = host.buffer_info()
            call("cuMemcpyHtoD_v2", ptr, ctypes.c_void_p(addr), ctypes.c_size_t(nbytes))
        lap("copy_in_s")

        out.append(f"CUDA kernel launch with {blocks} blocks of {threads} threads")
        stage = "Failed to launch vectorAdd kernel"
        count = ctypes.c_int(elements)
        params = (ctypes.c_void_p * 4)(*(ctypes.addressof(p) for p in (*ptrs, count)))
        call(
            "cuLaunchKernel", func,
            ctypes.c_uint(blocks), ctypes.c_uint(1), ctypes.c_uint(1),
            ctypes.c_uint(threads), ctypes.c_uint(1), ctypes.c_uint(1),
            ctypes.c_uint(0), ctypes.c_void_p(), params, ctypes.c_void_p(),
        )
        call("cuCtxSynchronize")
        lap("kernel_s")

        out.append("Copy output data from the CUDA device to the host memory")
        stage = "Failed to copy vector C from device to host"
        addr, _ = host_c.buffer_info()
        call("cuMemcpyDtoH_v2", ctypes.c_void_p(addr), ptrs[2], ctypes.c_size_t(nbytes))
        expected = array("f", map(operator.add, host_a, host_b))
        if host_c != expected:
            bad = next(i for i in range(elements) if expected[i] != host_c[i])
            err.append(f"Result verification failed at element {bad}!")
            res["error"] = {"call": "verify", "name": "RESULT_MISMATCH", "text": f"element {bad}"}
            return
        lap("copy_out_verify_s")

        stage = "Failed to free device memory"
        for ptr in ptrs:
            call("cuMemFree_v2", ptr)
        ptrs = []
        out.append("Test PASSED")
        res["passed"] = True
        out.append("Done")
    except _CudaError as exc:
        err.append(f"{stage} ({exc.call}: error code {exc.name}: {exc.text})!")
        res["error"] = {"call": exc.call, "code": exc.code, "name": exc.name, "text": exc.text}
    finally:
        res["timings"]["total_s"] = round(time.perf_counter() - start, 6)
        report(res)
        for ptr in ptrs:
            if ptr.value:
                cuda.cuMemFree_v2(ptr)
        if ctx.value:
            cuda.cuCtxDestroy_v2(ctx)


def _child_main(arg):
    def report(res):
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()
        # The parent stops reading once it has the result: what the teardown might print
        # must not hit a closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)

    _check(*json.loads(arg), report=report)


def _read_result(proc, timeout):
    """
    The child's one-line JSON result, or None if it exited without one. Raises TimeoutError.
    """
    import select

    deadline = time.monotonic() + timeout
    fd, buf = proc.stdout.fileno(), b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def _result_diagnosis(error, timeout):
    name, call = error["name"], error["call"]
    if name == "NO_LIBCUDA":
        if os.path.isdir("/sys/module/nvidia"):
            return {
                "cause": (
                    "The nvidia kernel module is loaded but libcuda.so.1, the driver's CUDA "
                    f"library, cannot be loaded: {error['text']}"
                ),
                "fix": (
                    "Install the driver stream's CUDA libraries (nvidia-driver-cuda-libs) and run "
                    "ldconfig; the minion must see the same libraries as the kernel module"
                ),
            }
        return {
            "cause": f"No NVIDIA driver installed/loaded: libcuda.so.1 cannot be loaded ({error['text']})",
            "fix": _DRIVER_FIX,
        }
    if name == "RESULT_MISMATCH":
        return {
            "cause": f"The GPU computed a wrong sum (result verification failed at {error['text']})",
            "fix": _GPU_FIX,
        }
    if name == "TIMEOUT":
        return {
            "cause": (
                f"The check did not finish within {timeout} s: a CUDA driver call hung (a hung or "
                "resetting GPU, or a driver waiting on a locked device)"
            ),
            "fix": _GPU_FIX,
        }
    if name == "CRASHED":
        return {
            "cause": f"The check process died inside the CUDA driver ({error['text']})",
            "fix": _GPU_FIX,
        }
    return diagnosis(name, call=call, text=error.get("text"))


def vector_add(elements=50000, threads=256, timeout=300, device=0):
    """
    Run the CUDA vectorAdd sample's check directly on the host, through the CUDA driver API
    (``libcuda.so.1``): no container, no compiler, no CUDA toolkit. The return has the shape of
    ``nvgpu.run_vector_add`` (``passed``, ``stdout`` with the sample's lines, ``diagnosis`` with
    cause and fix on failure, ...) plus ``driver_version``, ``cuda_driver_version``,
    ``device_name`` and ``timings`` (``init_s`` is cuInit plus context creation, the floor of any
    CUDA program). A failed check is a result with ``passed: False`` and makes salt-call exit 1.

    elements
        Number of floats in each vector (the sample's 50000).

    threads
        Threads per block (the sample's 256).

    timeout
        Seconds after which a hung check is killed and reported as failed.

    device
        CUDA device index.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_cuda.vector_add
        salt '*' nvgpu.run_vector_add runtime=host
    """
    from salt.exceptions import SaltInvocationError

    try:
        elements, threads, device = int(elements), int(threads), int(device)
        timeout = float(timeout)
    except (TypeError, ValueError) as exc:
        raise SaltInvocationError(f"elements, threads, device and timeout must be numbers: {exc}") from exc
    if elements < 1 or not 1 <= threads <= 1024 or device < 0 or timeout <= 0:
        raise SaltInvocationError(
            "elements and timeout must be positive, threads 1..1024 and device >= 0"
        )

    command = ["cuda-driver-api", "vectorAdd", str(elements)]
    ret = {
        "passed": False,
        "elements": None,
        "blocks": None,
        "threads": None,
        "user": None,
        "command": command,
        "retcode": 1,
        "stdout": "",
        "stderr": "",
        "diagnosis": None,
        "duration_s": 0.0,
        "driver_version": __salt__["nvgpu.driver_version"](),
    }
    # Imported here, not at the top: the child runs this same file and needs no subprocess.
    import subprocess

    start = time.monotonic()
    # -I -S: only the standard library, whatever PYTHONPATH the minion runs with.
    argv = [sys.executable, "-I", "-S", __file__, json.dumps([elements, threads, device])]
    log.debug("nvgpu_cuda: running %s", argv)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        result = _read_result(proc, timeout)
    except TimeoutError:
        proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("nvgpu_cuda: check process %s does not die (stuck in the driver)", proc.pid)
        error = {"call": "child", "name": "TIMEOUT", "text": f"{timeout} s"}
        result = {"stdout": [], "stderr": [f"Timed out after {timeout} s"], "error": error}
    else:
        if result is None:
            status = proc.wait()
            said = proc.stderr.read().decode(errors="replace").strip()
            error = {"call": "child", "name": "CRASHED", "text": f"exit status {status}"}
            result = {"stdout": [], "stderr": [said], "error": error, "passed": False}
    # A child that gave its result is not waited for: it is tearing its context down, and
    # Python reaps it later (or init does, when this job process ends).
    ret["duration_s"] = round(time.monotonic() - start, 3)

    for key in ("cuda_driver_version", "device_name", "timings"):
        if key in result:
            ret[key] = result[key]
    ret["stdout"] = "".join(f"{line}\n" for line in result["stdout"])
    ret["stderr"] = "".join(f"{line}\n" for line in result["stderr"] if line)
    # Like the sample's output parsed: the sizes are known once the lines saying them were printed.
    if result["stdout"]:
        ret["elements"] = elements
    if len(result["stdout"]) > 2:
        ret["blocks"] = (elements + threads - 1) // threads
        ret["threads"] = threads
    if result.get("passed"):
        ret["passed"] = True
        ret["retcode"] = 0
    else:
        ret["diagnosis"] = _result_diagnosis(result["error"], timeout)
        if result["error"]["name"] == "TIMEOUT":
            ret["retcode"] = 124
        __context__["retcode"] = 1
    return ret


if __name__ == "__main__":
    _child_main(sys.argv[1])
