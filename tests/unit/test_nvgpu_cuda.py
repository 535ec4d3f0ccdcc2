"""
The CUDA error -> diagnosis mapping of _modules/nvgpu_cuda.py and the PTX it keeps.
"""

import re

import pytest

from tests.unit.loader import load


@pytest.fixture(scope="module")
def mod():
    return load("_modules/nvgpu_cuda.py", "nvgpu_cuda_under_test")


@pytest.mark.parametrize(
    "error, call, words",
    [
        ("CUDA_ERROR_NO_DEVICE", "cuInit", ["no CUDA-capable GPU", "nvgpu.load_modules"]),
        (100, "cuInit", ["no CUDA-capable GPU"]),
        ("100", "cuInit", ["no CUDA-capable GPU"]),
        ("CUDA_ERROR_UNKNOWN", "cuInit", ["nvidia_uvm", "nvgpu.load_modules"]),
        ("CUDA_ERROR_UNKNOWN", "cuLaunchKernel", ["GPU failed", "Xid"]),
        ("CUDA_ERROR_NOT_INITIALIZED", "cuInit", ["not loaded", "dmesg"]),
        ("CUDA_ERROR_DEVICE_UNAVAILABLE", "cuCtxCreate_v2", ["exclusive-process", "nvidia-smi -c"]),
        ("CUDA_ERROR_STUB_LIBRARY", "cuInit", ["stub", "LD_LIBRARY_PATH"]),
        ("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", "cuInit", ["different driver versions", "Reboot"]),
        ("CUDA_ERROR_SYSTEM_NOT_READY", "cuInit", ["Fabric Manager", "nvidia-fabricmanager"]),
        (222, "cuModuleLoadData", ["CUDA driver version is insufficient", "driver stream"]),
        ("CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER", "cuInit", ["insufficient", "driver stream"]),
        ("CUDA_ERROR_INVALID_PTX", "cuModuleLoadData", ["JIT compiler", "nvidia-driver-cuda-libs"]),
        ("CUDA_ERROR_NO_BINARY_FOR_GPU", "cuModuleLoadData", ["this GPU", "driver stream"]),
        ("CUDA_ERROR_JIT_COMPILER_NOT_FOUND", "cuModuleLoadData", ["ptxjitcompiler"]),
        ("CUDA_ERROR_ECC_UNCORRECTABLE", "cuMemcpyDtoH_v2", ["GPU failed", "Xid"]),
        ("CUDA_ERROR_LAUNCH_FAILED", "cuCtxSynchronize", ["GPU failed", "nvidia-smi -r"]),
        ("CUDA_ERROR_OUT_OF_MEMORY", "cuMemAlloc_v2", ["memory is full"]),
        ("CUDA_ERROR_INVALID_DEVICE", "cuDeviceGet", ["requested index"]),
        ("CUDA_ERROR_SOMETHING_NEW", "cuInit", ["CUDA driver failed", "dmesg"]),
        (12345, "cuInit", ["CUDA error 12345"]),
    ],
)
def test_error_mapping(mod, error, call, words):
    found = mod.diagnosis(error, call=call, text="driver text")
    assert set(found) == {"cause", "fix"}
    said = found["cause"] + " " + found["fix"]
    for word in words:
        assert word in said
    assert f"{call} returned" in found["cause"] and "(driver text)" in found["cause"]


def test_every_named_code_has_a_diagnosis_of_its_own(mod):
    generic = mod.diagnosis("CUDA_ERROR_SOMETHING_NEW", call="cuInit")["fix"]
    for name in mod._NAMES.values():
        if name == "CUDA_ERROR_UNKNOWN" or name in mod._GPU_FAULTS:
            continue
        if name == "CUDA_ERROR_INVALID_VALUE":
            continue  # a bug in the check itself, not a node problem: the generic answer
        assert mod.diagnosis(name, call="cuInit")["fix"] != generic, name


def test_no_libcuda_diagnosis_depends_on_the_kernel_module(mod, monkeypatch):
    error = {"call": "dlopen", "name": "NO_LIBCUDA", "text": "libcuda.so.1: cannot open"}
    monkeypatch.setattr(mod.os.path, "isdir", lambda path: False)
    assert "No NVIDIA driver installed/loaded" in mod._result_diagnosis(error, 300)["cause"]
    monkeypatch.setattr(mod.os.path, "isdir", lambda path: path == "/sys/module/nvidia")
    found = mod._result_diagnosis(error, 300)
    assert "kernel module is loaded but libcuda.so.1" in found["cause"]
    assert "nvidia-driver-cuda-libs" in found["fix"]


def test_ptx_is_old_enough_for_535_drivers(mod):
    ptx = mod.VECTOR_ADD_PTX.decode()
    assert re.search(r"^\.version 6\.4$", ptx, re.M)
    assert re.search(r"^\.target sm_52$", ptx, re.M)
    assert ".visible .entry vectorAdd(" in ptx
    assert ptx.endswith("\0")
