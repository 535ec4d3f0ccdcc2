"""
The host CUDA check (_modules/nvgpu_cuda.py): the parent's side of the child process
(the child's one JSON line, a hang, a crash) with stand-in children, the real file run
as its own child with ``python -I -S`` (standard library only), the diagnosis of the
child's findings, and the PTX it keeps. The check on a real GPU is tests/gpu/.
"""

import json
import re
import subprocess
import sys
import textwrap
from array import array

import nvgpu_failures
import pytest
from salt.exceptions import SaltInvocationError

from tests.unit.fakes import FakeSalt
from tests.unit.loader import load

PASSED = {
    "stdout": [
        "[Vector addition of 1000 elements]",
        "Copy input data from the host memory to the CUDA device",
        "CUDA kernel launch with 8 blocks of 128 threads",
        "Copy output data from the CUDA device to the host memory",
        "Test PASSED",
        "Done",
    ],
    "stderr": [],
    "timings": {"init_s": 0.1, "total_s": 0.2},
    "error": None,
    "passed": True,
    "cuda_driver_version": 12040,
}
NO_DEVICE = {
    "stdout": ["[Vector addition of 1000 elements]"],
    "stderr": ["Failed to initialise the CUDA driver (cuInit: error code CUDA_ERROR_NO_DEVICE: no CUDA-capable "
               "device is detected)!"],
    "timings": {"total_s": 0.01},
    "error": {"call": "cuInit", "code": 100, "name": "CUDA_ERROR_NO_DEVICE", "text": "no CUDA-capable device is detected"},
    "passed": False,
    "cuda_driver_version": 12040,
}


@pytest.fixture
def cuda(host):
    return load("_modules/nvgpu_cuda.py")


@pytest.fixture
def configure_loader_modules(cuda):
    return {cuda: {"__salt__": FakeSalt(), "__opts__": {}, "__grains__": {}, "__context__": {}}}


@pytest.fixture
def child(cuda, tmp_path, monkeypatch):
    """Make ``body`` the child the check runs instead of the real file."""

    def make(body):
        stub = tmp_path / "child.py"
        stub.write_text(textwrap.dedent(body))
        monkeypatch.setattr(cuda, "__file__", str(stub))

    return make


def reporting(result):
    """A child that reports ``result``, with its interpreter flags and arguments as device_name."""
    return f"""
        import json, sys
        result = json.loads({json.dumps(result)!r})
        result["device_name"] = "isolated=%d no_site=%d args=%s" % (sys.flags.isolated, sys.flags.no_site, sys.argv[1])
        sys.stdout.write(json.dumps(result) + "\\n")
        sys.stdout.flush()
    """


def test_virtual(cuda, monkeypatch):
    assert cuda.__virtual__() == "nvgpu_cuda"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cuda.__virtual__()[0] is False


class TestVectorAdd:
    def test_passed(self, cuda, host, child):
        host.write("/sys/module/nvidia/version", "550.127.08\n")
        child(reporting(PASSED))
        ret = cuda.vector_add(elements=1000, threads=128, timeout=60)
        assert ret["device_name"] == "isolated=1 no_site=1 args=[1000, 128, 0]"
        assert ret["passed"] is True and ret["retcode"] == 0 and ret["diagnosis"] is None
        assert (ret["elements"], ret["blocks"], ret["threads"]) == (1000, 8, 128)
        assert ret["stdout"] == "".join(f"{line}\n" for line in PASSED["stdout"])
        assert ret["stderr"] == ""
        assert ret["cuda_driver_version"] == "12.4"
        assert ret["driver_version"] == "550.127.08"
        assert ret["timings"] == PASSED["timings"]
        assert ret["command"] == ["cuda-driver-api", "vectorAdd", "1000"]
        assert ret["user"] is None and isinstance(ret["duration_s"], float)
        assert "retcode" not in cuda.__context__

    def test_the_shape_of_run_vector_add(self, cuda, child):
        child(reporting(PASSED))
        keys = {"passed", "elements", "blocks", "threads", "user", "command", "retcode", "stdout", "stderr",
                "diagnosis", "duration_s"}
        assert keys <= set(cuda.vector_add(elements=1000, threads=128))

    def test_cuda_error(self, cuda, child):
        child(reporting(NO_DEVICE))
        ret = cuda.vector_add(elements=1000, device=2)
        assert ret["device_name"].endswith("args=[1000, 256, 2]")
        assert ret["passed"] is False and ret["retcode"] == 1
        assert ret["elements"] == 1000 and ret["blocks"] is None and ret["threads"] is None
        assert ret["stderr"] == NO_DEVICE["stderr"][0] + "\n"
        assert ret["diagnosis"] == nvgpu_failures.diagnose_cuda(
            "CUDA_ERROR_NO_DEVICE", call="cuInit", text="no CUDA-capable device is detected")
        assert ret["diagnosis"]["layer"] == "kernel-modules"
        assert cuda.__context__["retcode"] == 1

    def test_hung_child_is_killed_at_the_timeout(self, cuda, child):
        child("import time\ntime.sleep(60)\n")
        ret = cuda.vector_add(timeout=0.5)
        assert ret["passed"] is False and ret["retcode"] == 124
        assert ret["stderr"] == "Timed out after 0.5 s\n"
        assert "did not finish within 0.5 s" in ret["diagnosis"]["cause"]
        assert ret["duration_s"] < 30
        assert cuda.__context__["retcode"] == 1

    def test_crashed_child(self, cuda, child):
        child("import os, sys\nsys.stderr.write('Segmentation fault\\n')\nsys.stderr.flush()\nos._exit(139)\n")
        ret = cuda.vector_add()
        assert ret["passed"] is False and ret["retcode"] == 1
        assert ret["stderr"] == "Segmentation fault\n"
        assert "died inside the CUDA driver (exit status 139)" in ret["diagnosis"]["cause"]
        assert ret["elements"] is None

    def test_the_real_file_runs_as_its_child_with_the_standard_library_alone(self, cuda):
        # Whatever this machine has (no driver, a driver without a GPU, a GPU), the child
        # must get as far as reporting: an import of Salt or the shared layer under
        # -I -S would make it crash instead.
        ret = cuda.vector_add(elements=1000, timeout=120)
        assert "Traceback" not in ret["stderr"], ret["stderr"]
        assert "timings" in ret, "the child reported no result"
        assert ret["passed"] or ret["diagnosis"]["layer"] in nvgpu_failures.LAYERS

    @pytest.mark.parametrize(
        "kwargs",
        [{"elements": 0}, {"elements": "many"}, {"threads": 0}, {"threads": 1025}, {"device": -1}, {"timeout": 0},
         {"timeout": None}],
    )
    def test_bad_arguments(self, cuda, child, tmp_path, kwargs):
        child("open(__file__ + '.ran', 'w').close()\n")
        with pytest.raises(SaltInvocationError):
            cuda.vector_add(**kwargs)
        assert not (tmp_path / "child.py.ran").exists()


class TestCheckInProcess:
    def test_missing_libcuda_is_reported_not_raised(self, cuda, monkeypatch):
        monkeypatch.setattr(cuda, "_LIBCUDA", "libnvgpu-unit-test-absent.so.1")
        reports = []
        cuda._check(1000, 256, 0, reports.append)
        [res] = reports
        assert res["passed"] is False
        assert res["error"]["call"] == "dlopen" and res["error"]["name"] == "NO_LIBCUDA"
        assert res["stderr"][0].startswith("Failed to load libnvgpu-unit-test-absent.so.1")
        assert res["stdout"] == []

    def test_random_floats_add_exactly_in_float32(self, cuda):
        a, b = cuda._random_floats(5000), cuda._random_floats(5000)
        assert len(a) == 5000 and a.typecode == "f"
        assert all(1.0 <= x < 2.0 for x in a)
        assert len(set(a)) > 1000
        sums = array("f", (x + y for x, y in zip(a, b)))
        assert all(s == x + y for s, x, y in zip(sums, a, b))


class TestReadResult:
    def _popen(self, code):
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def test_first_line_in_pieces(self, cuda):
        proc = self._popen(
            "import sys, time\nsys.stdout.write('{\"a\"'); sys.stdout.flush(); time.sleep(0.2)\n"
            "sys.stdout.write(': 1}\\n{\"b\": 2}\\n'); sys.stdout.flush()\n"
        )
        assert cuda._read_result(proc, 30) == {"a": 1}
        proc.wait()

    def test_no_result(self, cuda):
        proc = self._popen("pass")
        assert cuda._read_result(proc, 30) is None
        proc.wait()

    def test_timeout(self, cuda):
        proc = self._popen("import time; time.sleep(30)")
        with pytest.raises(TimeoutError):
            cuda._read_result(proc, 0.2)
        proc.kill()
        proc.wait()


class TestResultDiagnosis:
    def test_no_libcuda_depends_on_the_kernel_module(self, cuda, host):
        error = {"call": "dlopen", "name": "NO_LIBCUDA", "text": "libcuda.so.1: cannot open"}
        assert "No NVIDIA driver installed/loaded" in cuda._result_diagnosis(error)["cause"]
        host.load("nvidia")
        found = cuda._result_diagnosis(error)
        assert "kernel module is loaded but libcuda.so.1" in found["cause"]
        assert "nvidia-driver-cuda-libs" in found["fix"]

    def test_an_error_the_driver_could_not_name_goes_by_its_code(self, cuda):
        error = {"call": "cuInit", "code": 999, "name": "CUDA error 999", "text": "unknown error"}
        found = cuda._result_diagnosis(error)
        assert "nvidia_uvm" in found["cause"] and "cuInit returned CUDA_ERROR_UNKNOWN" in found["cause"]

    def test_result_mismatch(self, cuda):
        found = cuda._result_diagnosis({"call": "verify", "name": "RESULT_MISMATCH", "text": "element 7"})
        assert "wrong sum" in found["cause"] and "element 7" in found["cause"] and found["layer"] == "gpu"

    def test_diagnosis_is_the_knowledge_bases(self, cuda):
        assert cuda.diagnosis("CUDA_ERROR_NO_DEVICE", call="cuInit", text="t") == nvgpu_failures.diagnose_cuda(
            "CUDA_ERROR_NO_DEVICE", call="cuInit", text="t")
        assert "no CUDA-capable GPU" in cuda.diagnosis(100, call="cuInit")["cause"]


def test_ptx_is_old_enough_for_535_drivers(cuda):
    ptx = cuda.VECTOR_ADD_PTX.decode()
    assert re.search(r"^\.version 6\.4$", ptx, re.M)
    assert re.search(r"^\.target sm_52$", ptx, re.M)
    assert ".visible .entry vectorAdd(" in ptx
    assert ptx.endswith("\0")
