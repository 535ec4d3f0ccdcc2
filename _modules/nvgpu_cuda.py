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

# The check's child process runs this file with the standard library alone
# (python -I -S): it needs none of Salt or the shared layer, and cannot import them.
if __name__ != "__main__":
    import nvgpu_failures
    import nvgpu_node

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

def __virtual__():
    """
    Loads on Linux; whether a driver is there is what vector_add finds out.
    """
    if sys.platform.startswith("linux"):
        return __virtualname__
    return (False, "nvgpu_cuda: the NVIDIA CUDA driver API check runs on Linux only")


def diagnosis(error, call=None, text=None):
    """
    Return ``{"cause": ..., "fix": ..., "layer": ...}`` for a CUDA driver API error name (as
    cuGetErrorName gives it, e.g. ``CUDA_ERROR_NO_DEVICE``, or the code as an int), the call
    that returned it, and the driver's own text for it.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_cuda.diagnosis CUDA_ERROR_NO_DEVICE call=cuInit
    """
    return nvgpu_failures.diagnose_cuda(error, call=call, text=text)


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


def _uuid_text(raw):
    """cuDeviceGetUuid's 16 bytes as nvidia-smi spells a GPU's UUID: GPU-8-4-4-4-12 hex digits."""
    text = raw.hex()
    return f"GPU-{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


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
        return f"CUDA error {code}"

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
        res["cuda_driver_version"] = version.value

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
        uuid = (ctypes.c_ubyte * 16)()
        if getattr(cuda, "cuDeviceGetUuid", None) is not None and cuda.cuDeviceGetUuid(uuid, dev) == 0:
            res["device_uuid"] = _uuid_text(bytes(uuid))
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


def _result_diagnosis(error):
    name = error["name"]
    if name == "NO_LIBCUDA" and nvgpu_node.module_loaded("nvidia"):
        name = "NO_LIBCUDA_WITH_MODULE"
    if name in nvgpu_failures.HOST_CHECK_FAILURES:
        return nvgpu_failures.diagnose_host_check(name, error["text"])
    # Where the driver could not name an error, the child gives its code.
    error_id = error["code"] if name.startswith("CUDA error") else name
    return diagnosis(error_id, call=error["call"], text=error.get("text"))


def _arguments(elements, threads, timeout, device):
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
    return elements, threads, timeout, device


def _start(elements, threads, device, gpu):
    """The check's child process, started; ``gpu`` (a UUID or index) is all it can see."""
    # Imported here, not at the top: the child runs this same file and needs no subprocess.
    import subprocess

    env = None
    if gpu is not None:
        # CUDA_VISIBLE_DEVICES: the driver shows the child this one GPU, as its device 0,
        # whatever CUDA's own enumeration order (fastest first) would make of the indexes.
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
    # -I -S: only the standard library, whatever PYTHONPATH the minion runs with.
    argv = [sys.executable, "-I", "-S", __file__, json.dumps([elements, threads, device])]
    log.debug("nvgpu_cuda: running %s (CUDA_VISIBLE_DEVICES=%s)", argv, gpu)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env), time.monotonic()


def _finish(proc, started, elements, threads, timeout, deadline=None):
    """The return of one check whose child ``proc`` was started at ``started``."""
    import subprocess

    ret = {
        "passed": False,
        "elements": None,
        "blocks": None,
        "threads": None,
        "user": None,
        "command": ["cuda-driver-api", "vectorAdd", str(elements)],
        "retcode": 1,
        "stdout": "",
        "stderr": "",
        "diagnosis": None,
        "duration_s": 0.0,
        "driver_version": nvgpu_node.loaded_driver_version(),
    }
    try:
        # At least a moment: a child that has already answered is read, not timed out.
        result = _read_result(proc, max((deadline or started + timeout) - time.monotonic(), 0.01))
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
    ret["duration_s"] = round(time.monotonic() - started, 3)

    for key in ("device_name", "device_uuid", "timings"):
        if key in result:
            ret[key] = result[key]
    if "cuda_driver_version" in result:
        ret["cuda_driver_version"] = nvgpu_node.cuda_version_string(result["cuda_driver_version"])
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
        ret["diagnosis"] = _result_diagnosis(result["error"])
        if result["error"]["name"] == "TIMEOUT":
            ret["retcode"] = 124
    return ret


def vector_add(elements=50000, threads=256, timeout=300, device=0, gpu=None):
    """
    Run the CUDA vectorAdd sample's check directly on the host, through the CUDA driver API
    (``libcuda.so.1``): no container, no compiler, no CUDA toolkit. The return has the shape of
    ``nvgpu.run_vector_add`` (``passed``, ``stdout`` with the sample's lines, ``diagnosis`` with
    cause and fix on failure, ...) plus ``driver_version``, ``cuda_driver_version``,
    ``device_name``, ``device_uuid`` and ``timings`` (``init_s`` is cuInit plus context creation,
    the floor of any CUDA program). A failed check is a result with ``passed: False`` and makes
    salt-call exit 1.

    elements
        Number of floats in each vector (the sample's 50000).

    threads
        Threads per block (the sample's 256).

    timeout
        Seconds after which a hung check is killed and reported as failed.

    device
        CUDA device index.

    gpu
        Check this GPU only: its UUID (``GPU-...``, as ``nvidia-smi -L`` lists it) or index, put
        in ``CUDA_VISIBLE_DEVICES`` of the check's process, so that it sees no other GPU.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_cuda.vector_add
        salt '*' nvgpu_cuda.vector_add gpu=GPU-46ee3110-da84-e783-305a-ccf3bac82310
        salt '*' nvgpu.run_vector_add runtime=host
    """
    elements, threads, timeout, device = _arguments(elements, threads, timeout, device)
    proc, started = _start(elements, threads, device, gpu)
    ret = _finish(proc, started, elements, threads, timeout)
    if not ret["passed"]:
        __context__["retcode"] = 1
    return ret


def vector_add_each(gpus, elements=50000, threads=256, timeout=300):
    """
    The host check on each GPU of ``gpus`` (UUIDs or indexes) at once: one child process per
    GPU, each seeing only its GPU, all started before any is waited for. Returns one
    :py:func:`vector_add` return per GPU, in the order given; the job's exit code is 1 when
    one fails.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_cuda.vector_add_each '[GPU-46ee3110-da84-e783-305a-ccf3bac82310, 1]'
    """
    elements, threads, timeout, _ = _arguments(elements, threads, timeout, 0)
    if not isinstance(gpus, (list, tuple)):
        from salt.exceptions import SaltInvocationError

        raise SaltInvocationError(f"gpus must be a list of GPU UUIDs or indexes, not {gpus!r}")
    started = [_start(elements, threads, 0, gpu) for gpu in gpus]
    deadline = time.monotonic() + timeout
    results = [_finish(proc, at, elements, threads, timeout, deadline) for proc, at in started]
    if not all(ret["passed"] for ret in results):
        __context__["retcode"] = 1
    return results


if __name__ == "__main__":
    _child_main(sys.argv[1])
