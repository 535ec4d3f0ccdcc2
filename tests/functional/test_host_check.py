"""
The host-level CUDA check (nvgpu_cuda.vector_add, nvgpu.run_vector_add runtime=host) and
the nvgpu grains through real `salt-call --local`, on a machine without a GPU.

Without a driver the check must say so and fail the job; with a stand-in libcuda.so.1
(tests/functional/stand_in_libcuda.c, put in front through LD_LIBRARY_PATH) the whole
ctypes path runs, and each injected CUDA error comes back with its diagnosis.
"""

import ctypes
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.saltcall import minion_config

REPO = pathlib.Path(__file__).resolve().parents[2]
SALT_CALL = pathlib.Path(sys.executable).with_name("salt-call")


def _libcuda_loadable():
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def salt_config(tmp_path_factory):
    return minion_config(tmp_path_factory.mktemp("salt-conf"))


@pytest.fixture(scope="module")
def stand_in_libcuda(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build the stand-in libcuda.so.1")
    libdir = tmp_path_factory.mktemp("standin-cuda")
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(libdir / "libcuda.so.1"),
         str(REPO / "tests" / "functional" / "stand_in_libcuda.c")],
        check=True,
    )
    return libdir


def salt_call(conf, *args, env=None, timeout=120):
    proc = subprocess.run(
        [str(SALT_CALL), "--local", "-c", str(conf), "--out=json", "--log-level=quiet", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    try:
        data = json.loads(proc.stdout)["local"]
    except ValueError:
        data = None  # salt-call printed the function's usage instead
    return proc, data


def standin_env(libdir, fail=""):
    return {"LD_LIBRARY_PATH": str(libdir), "STANDIN_CUDA_FAIL": fail}


SHAPE = {"passed", "elements", "blocks", "threads", "user", "command", "retcode", "stdout",
         "stderr", "diagnosis", "duration_s"}


@pytest.mark.skipif(_libcuda_loadable(), reason="this machine has a CUDA driver")
@pytest.mark.parametrize("function", ["nvgpu_cuda.vector_add", "nvgpu.run_vector_add"])
def test_no_driver_is_a_failed_check_with_diagnosis(salt_config, function):
    args = [function] + (["runtime=host"] if function == "nvgpu.run_vector_add" else [])
    proc, data = salt_call(salt_config, *args)
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert SHAPE <= set(data)
    assert data["passed"] is False
    assert data["command"] == ["cuda-driver-api", "vectorAdd", "50000"]
    assert data["user"] is None and data["elements"] is None
    assert "libcuda.so.1" in data["stderr"]
    assert "No NVIDIA driver installed/loaded" in data["diagnosis"]["cause"]
    assert "nvgpu.load_modules" in data["diagnosis"]["fix"]


@pytest.mark.skipif(os.path.isdir("/sys/module/nvidia"), reason="this machine has an NVIDIA driver")
def test_no_driver_no_grains(salt_config):
    proc, data = salt_call(salt_config, "grains.items")
    assert proc.returncode == 0, proc.stderr
    # No GPU facts without a driver; what sysfs and two files say is there on every node.
    assert set(data["nvgpu"]) == {"nvswitch_count", "reboot_required"}
    assert "kernel" in data
    proc, data = salt_call(salt_config, "grains.item", "nvgpu:gpus")
    assert proc.returncode == 0
    assert data == {"nvgpu:gpus": ""}


def test_stand_in_driver_passes(salt_config, stand_in_libcuda):
    proc, data = salt_call(salt_config, "nvgpu.run_vector_add", "runtime=host",
                           env=standin_env(stand_in_libcuda))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert data["passed"] is True and data["retcode"] == 0 and data["diagnosis"] is None
    assert (data["elements"], data["blocks"], data["threads"]) == (50000, 196, 256)
    assert data["stdout"].splitlines() == [
        "[Vector addition of 50000 elements]",
        "Copy input data from the host memory to the CUDA device",
        "CUDA kernel launch with 196 blocks of 256 threads",
        "Copy output data from the CUDA device to the host memory",
        "Test PASSED",
        "Done",
    ]
    assert data["device_name"] == "Stand-in GPU"
    assert data["cuda_driver_version"] == "13.0"
    assert {"init_s", "module_load_s", "kernel_s", "total_s"} <= set(data["timings"])


@pytest.mark.parametrize(
    "fail, stderr, cause",
    [
        ("cuInit:100", "CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected",
         "The driver sees no CUDA-capable GPU"),
        ("cuInit:999", "CUDA_ERROR_UNKNOWN", "nvidia_uvm module is not loaded"),
        ("cuModuleLoadData:222", "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
         "CUDA driver version is insufficient"),
        ("cuMemAlloc_v2:2", "Failed to allocate device vector A", "memory is full"),
        ("cuLaunchKernel:719", "Failed to launch vectorAdd kernel", "The GPU failed"),
        ("wrong-sum", "Result verification failed at element 25000!", "wrong sum"),
    ],
)
def test_stand_in_driver_failures(salt_config, stand_in_libcuda, fail, stderr, cause):
    proc, data = salt_call(salt_config, "nvgpu_cuda.vector_add",
                           env=standin_env(stand_in_libcuda, fail))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert data["passed"] is False and data["retcode"] == 1
    assert stderr in data["stderr"]
    assert cause in data["diagnosis"]["cause"]
    assert data["diagnosis"]["fix"]
    assert "Test PASSED" not in data["stdout"]


def test_hung_driver_times_out(salt_config, stand_in_libcuda):
    proc, data = salt_call(salt_config, "nvgpu_cuda.vector_add", "timeout=2",
                           env=standin_env(stand_in_libcuda, "hang"), timeout=60)
    assert proc.returncode == 1
    assert data["passed"] is False and data["retcode"] == 124
    assert 2 <= data["duration_s"] < 10
    assert "did not finish within 2.0 s" in data["diagnosis"]["cause"]


def test_driver_crash_is_a_failed_check(salt_config, stand_in_libcuda):
    proc, data = salt_call(salt_config, "nvgpu_cuda.vector_add", env=standin_env(stand_in_libcuda, "crash"))
    assert proc.returncode == 1
    assert data["passed"] is False
    assert "died inside the CUDA driver (exit status -6)" in data["diagnosis"]["cause"]


def test_bad_arguments_raise(salt_config):
    proc, data = salt_call(salt_config, "nvgpu_cuda.vector_add", "threads=4096")
    assert proc.returncode != 0 and data is None
    assert "threads 1..1024" in proc.stdout + proc.stderr


# --- every GPU (gpus=each) through the stand-in libcuda's several GPUs ----------------------

FOUR = [f"GPU-{i:08x}-7a1e-4c3d-9b8a-1c2d3e4f5a6{i}" for i in range(4)]
# Stand-in nvidia-smi: the stand-in libcuda's GPUs, as `nvidia-smi --query-gpu=index,uuid,name,pci.bus_id
# --format=csv,noheader,nounits` prints them.
STAND_IN_SMI = """#!/bin/sh
i=0
IFS=,
for uuid in $STANDIN_CUDA_GPUS; do
    printf '%d, %s, Stand-in GPU, 00000000:%02X:00.0\\n' "$i" "$uuid" $((24 + 16 * i))
    i=$((i + 1))
done
"""


@pytest.fixture(scope="module")
def four_gpus(stand_in_libcuda):
    smi = stand_in_libcuda / "nvidia-smi"
    smi.write_text(STAND_IN_SMI)
    smi.chmod(0o755)
    return {**standin_env(stand_in_libcuda), "STANDIN_CUDA_GPUS": ",".join(FOUR),
            "PATH": f"{stand_in_libcuda}{os.pathsep}{os.environ['PATH']}"}


def test_each_gpu_on_the_host_names_exactly_the_bad_one(salt_config, four_gpus):
    env = {**four_gpus, "STANDIN_CUDA_BAD_GPU": f"{FOUR[2]}:214"}
    proc, data = salt_call(salt_config, "nvgpu.run_vector_add", "runtime=host", "gpus=each", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert data["passed"] is False and data["runtime"] == "host"
    # Each check saw only its GPU: CUDA's device 0 in it was that UUID.
    assert [gpu["device_uuid"] for gpu in data["gpus"]] == FOUR
    assert [gpu["passed"] for gpu in data["gpus"]] == [True, True, False, True]
    assert [(gpu["index"], gpu["uuid"], gpu["pci"]) for gpu in data["failed_gpus"]] == [(2, FOUR[2], "0000:38:00.0")]
    assert data["gpus"][2]["stderr"] == ("Failed to allocate device vector A (cuMemAlloc_v2: error code "
                                         "CUDA_ERROR_ECC_UNCORRECTABLE: uncorrectable ECC error encountered)!\n")
    assert data["diagnosis"]["cause"].startswith(f"GPU 2 ({FOUR[2]}, Stand-in GPU): The GPU failed")
    assert data["diagnosis"]["layer"] == "gpu"


def test_each_gpu_on_the_host_passes_when_all_are_healthy(salt_config, four_gpus):
    proc, data = salt_call(salt_config, "nvgpu.run_vector_add", "runtime=host", "gpus=each", env=four_gpus)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert data["passed"] is True and data["failed_gpus"] == [] and len(data["gpus"]) == 4
    # One GPU by index: CUDA_VISIBLE_DEVICES=3 shows the check that GPU alone.
    proc, data = salt_call(salt_config, "nvgpu_cuda.vector_add", "gpu=3", env=four_gpus)
    assert proc.returncode == 0 and data["device_uuid"] == FOUR[3]
