"""
The GPU suite: the project's calls on a real NVIDIA GPU node, through real `salt-call --local`
with this checkout's _modules and _grains (module_dirs/grains_dirs). Skipped where there is no
GPU. Run it as root on a GPU node with `make test-gpu`, or on a bare GPU machine with
tests/gpu/run-on-device.sh (docs/gpu.md).

The container half runs tests/gpu/prepare_podman.sh first (Podman, a CDI spec for the machine,
the vector-add image, a rootless user). With NVGPU_GPU_RECORD=FILE every salt-call's argv, exit
code, wall time and return are appended to FILE as JSON lines (docs/gpu.md is made from them).
"""

import ctypes
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from tests.saltcall import minion_config

REPO = pathlib.Path(__file__).resolve().parents[2]
SAMPLE_LINES = [
    "[Vector addition of 50000 elements]",
    "Copy input data from the host memory to the CUDA device",
    "CUDA kernel launch with 196 blocks of 256 threads",
    "Copy output data from the CUDA device to the host memory",
    "Test PASSED",
    "Done",
]


def _gpu_present():
    if not os.path.exists("/dev/nvidiactl"):
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _gpu_present(), reason="no NVIDIA GPU and driver (/dev/nvidiactl, libcuda.so.1)"),
]


class Result:
    def __init__(self, proc, wall):
        self.retcode, self.stdout, self.stderr, self.wall = proc.returncode, proc.stdout, proc.stderr, wall
        try:
            self.data = json.loads(proc.stdout)["local"]
        except ValueError:
            self.data = None

    def __repr__(self):
        return f"retcode={self.retcode} wall={self.wall:.2f}s\n{self.stdout}\n{self.stderr}"


@pytest.fixture(scope="module")
def salt_conf(tmp_path_factory):
    return minion_config(tmp_path_factory.mktemp("salt"))


def salt_call(conf, *args, env=None, timeout=300):
    """`salt-call --local` of this Python's Salt (the one on PYTHONPATH where Salt was carried)."""
    argv = [sys.executable, "-c", "import salt.scripts; salt.scripts.salt_call()",
            "--local", "-c", str(conf), "--out=json", "--log-level=warning", *args]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    res = Result(proc, time.monotonic() - start)
    record = os.environ.get("NVGPU_GPU_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"call": ["salt-call", "--local", *args], "retcode": res.retcode,
                                 "wall_s": round(res.wall, 3), "return": res.data,
                                 "stderr": res.stderr[-2000:]}) + "\n")
    return res


def sysfs_driver_version():
    return pathlib.Path("/sys/module/nvidia/version").read_text().strip()


# --- host --------------------------------------------------------------------------------


def test_host_vector_add_passes(salt_conf):
    res = salt_call(salt_conf, "nvgpu.run_vector_add", "runtime=host")
    assert res.retcode == 0, res
    ret = res.data
    assert ret["passed"] is True and ret["diagnosis"] is None and ret["retcode"] == 0
    assert (ret["elements"], ret["blocks"], ret["threads"]) == (50000, 196, 256)
    assert ret["stdout"].splitlines() == SAMPLE_LINES
    assert ret["user"] is None and ret["command"] == ["cuda-driver-api", "vectorAdd", "50000"]
    assert ret["driver_version"] == sysfs_driver_version()
    assert ret["device_name"].startswith("NVIDIA")
    assert ret["timings"]["init_s"] > 0


def test_host_vector_add_on_a_missing_gpu_says_so(salt_conf):
    res = salt_call(salt_conf, "nvgpu_cuda.vector_add", "device=64")
    assert res.retcode == 1, res
    assert res.data["passed"] is False
    assert "CUDA_ERROR_INVALID_DEVICE" in res.data["stderr"]
    assert "There is no GPU with the requested index" in res.data["diagnosis"]["cause"]


def _smi_gpus():
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,name,uuid,driver_version,memory.total",
         "--format=csv,noheader,nounits"], capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    return [[field.strip() for field in line.split(",")] for line in out.splitlines()]


def _check_grains(grain, source):
    assert grain["source"] == source
    smi = _smi_gpus()
    assert grain["gpu_count"] == len(smi) >= 1
    assert grain["driver_version"] == sysfs_driver_version() == smi[0][3]
    major = int(grain["driver_version"].split(".")[0])
    assert grain["cuda_driver_version"] and float(grain["cuda_driver_version"]) >= (13.0 if major >= 580 else 11.0)
    for gpu, row in zip(grain["gpus"], smi):
        assert [str(gpu["index"]), gpu["name"], gpu["uuid"]] == row[:3]
        assert gpu["uuid"].startswith("GPU-")
        assert gpu["memory_total_mib"] == int(row[4])
        assert gpu["mig_mode"] in ("Enabled", "Disabled", None)


def test_grains_show_the_gpu_through_nvml(salt_conf):
    pytest.importorskip("pynvml")
    res = salt_call(salt_conf, "grains.item", "nvgpu")
    assert res.retcode == 0, res
    _check_grains(res.data["nvgpu"], "nvml")


def test_grains_without_nvidia_ml_py_use_nvidia_smi(salt_conf, tmp_path):
    if not shutil.which("nvidia-smi"):
        pytest.skip("no nvidia-smi")
    # A pynvml that cannot be imported, first on the path: a node without nvidia-ml-py.
    (tmp_path / "pynvml.py").write_text("raise ImportError('nvidia-ml-py hidden by the GPU suite')\n")
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    res = salt_call(salt_conf, "grains.item", "nvgpu", env={"PYTHONPATH": path})
    assert res.retcode == 0, res
    _check_grains(res.data["nvgpu"], "nvidia-smi")


def test_load_modules_sees_the_loaded_driver_and_changes_nothing(salt_conf):
    res = salt_call(salt_conf, "nvgpu.load_modules")
    assert res.retcode == 0, res
    assert res.data["changed"] is False
    assert res.data["modules"]["nvidia"] is True and res.data["modules"]["nvidia_uvm"] is True
    assert res.data["modules"]["nouveau"] is False
    assert {"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"} <= set(res.data["device_nodes"])


# --- containers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman_node():
    """Podman, the CDI spec, the image and the rootless user: {"image": ..., "user": ...}."""
    if os.geteuid() != 0:
        pytest.skip("preparing Podman, the CDI spec and a rootless user needs root")
    proc = subprocess.run(["bash", str(REPO / "tests" / "gpu" / "prepare_podman.sh")],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        pytest.skip(f"no Podman to test with: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def test_container_cdi_as_root_passes(salt_conf, podman_node):
    res = salt_call(salt_conf, "nvgpu.run_vector_add", "mode=cdi", f"image={podman_node['image']}")
    assert res.retcode == 0, res
    ret = res.data
    assert ret["passed"] is True and ret["diagnosis"] is None
    assert ret["stdout"].splitlines() == SAMPLE_LINES
    assert ["--device", "nvidia.com/gpu=all"] == ret["command"][-3:-1]
    assert "--privileged" not in ret["command"]


def test_container_cdi_rootless_passes(salt_conf, podman_node):
    user = podman_node["user"]
    res = salt_call(salt_conf, "nvgpu.run_vector_add", "mode=cdi", f"user={user}",
                    f"image={podman_node['image']}")
    assert res.retcode == 0, res
    ret = res.data
    assert ret["passed"] is True and ret["user"] == user
    assert ret["stdout"].splitlines() == SAMPLE_LINES
    for flag in ("--security-opt=no-new-privileges", "--cap-drop=ALL", "label=type:nvidia_container_t"):
        assert flag in ret["command"]
    assert "--privileged" not in ret["command"]


def test_container_auto_mode_finds_the_cdi_spec(salt_conf, podman_node):
    res = salt_call(salt_conf, "nvgpu.run_vector_add", f"image={podman_node['image']}")
    assert res.retcode == 0, res
    assert res.data["passed"] is True and res.data["mode"] == "cdi"


def test_container_without_the_gpu_fails_with_the_diagnosis(salt_conf, podman_node):
    # mode=hook where no NVIDIA OCI hook is installed: nothing puts libcuda into the container.
    hooks = [p for p in ("/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json",
                         "/etc/containers/oci/hooks.d/oci-nvidia-hook.json") if os.path.exists(p)]
    if hooks:
        pytest.skip(f"an NVIDIA OCI hook is installed here: {hooks}")
    res = salt_call(salt_conf, "nvgpu.run_vector_add", "mode=hook", f"image={podman_node['image']}")
    assert res.retcode != 0, res
    ret = res.data
    assert ret["passed"] is False
    assert "CUDA driver version is insufficient for CUDA runtime version" in ret["stderr"] + ret["stdout"]
    assert "libcuda was not injected" in ret["diagnosis"]["cause"]
    assert ret["elements"] == 50000 and ret["blocks"] is None


# --- every GPU, one check each (issue 14) -------------------------------------------------


def _check_each(ret, runtime):
    smi = _smi_gpus()
    assert ret["passed"] is True and ret["diagnosis"] is None and ret["failed_gpus"] == []
    assert ret["runtime"] == runtime
    assert [(gpu["index"], gpu["uuid"], gpu["name"]) for gpu in ret["gpus"]] == [
        (int(row[0]), row[2], row[1]) for row in smi]
    for gpu in ret["gpus"]:
        assert gpu["passed"] is True and gpu["stdout"].splitlines()[:5] == SAMPLE_LINES[:5]
        assert gpu["pci"] and gpu["pci"].count(":") == 2


def test_each_gpu_host_passes(salt_conf):
    res = salt_call(salt_conf, "nvgpu.run_vector_add", "runtime=host", "gpus=each")
    assert res.retcode == 0, res
    _check_each(res.data, "host")
    for gpu in res.data["gpus"]:
        # The check ran on that GPU and saw no other: CUDA's device 0 is that UUID.
        assert gpu["device_uuid"] == gpu["uuid"]


def test_one_gpu_host_by_uuid_and_index(salt_conf):
    last = _smi_gpus()[-1]
    for chosen in (last[2], last[0]):
        res = salt_call(salt_conf, "nvgpu.run_vector_add", "runtime=host", f"gpus={chosen}")
        assert res.retcode == 0, res
        assert res.data["passed"] is True and res.data["device_uuid"] == last[2]


def test_each_gpu_container_cdi_passes(salt_conf, podman_node):
    res = salt_call(salt_conf, "nvgpu.run_vector_add", "mode=cdi", "gpus=each", f"image={podman_node['image']}")
    assert res.retcode == 0, res
    _check_each(res.data, "podman")
    for gpu in res.data["gpus"]:
        # Only that GPU's CDI device, by UUID (the spec names each GPU by index and UUID).
        assert ["--device", f"nvidia.com/gpu={gpu['uuid']}"] == gpu["command"][-3:-1]


def test_each_gpu_container_rootless_passes(salt_conf, podman_node):
    res = salt_call(salt_conf, "nvgpu.run_vector_add", "mode=cdi", "gpus=each", f"user={podman_node['user']}",
                    f"image={podman_node['image']}")
    assert res.retcode == 0, res
    _check_each(res.data, "podman")
    assert all(gpu["user"] == podman_node["user"] for gpu in res.data["gpus"])


def test_one_gpu_container_by_index(salt_conf, podman_node):
    last = _smi_gpus()[-1][0]
    res = salt_call(salt_conf, "nvgpu.run_vector_add", "mode=cdi", f"gpus={last}", f"image={podman_node['image']}")
    assert res.retcode == 0, res
    assert res.data["passed"] is True and ["--device", f"nvidia.com/gpu={last}"] == res.data["command"][-3:-1]


def test_health_sees_every_gpu_healthy(salt_conf):
    res = salt_call(salt_conf, "nvgpu_health.check")
    assert res.retcode == 0, res
    smi = _smi_gpus()
    checks = {check["name"]: check for check in res.data["checks"]}
    assert checks["gpus-on-bus"]["status"] == "ok", checks
    assert checks["gpu-memory"]["status"] == "ok", checks
    assert checks["xid"]["status"] in ("ok", "skip"), checks
    assert [gpu["uuid"] for gpu in res.data["gpus"]] == [row[2] for row in smi]
    assert res.data["failing"] == 0 and res.data["healthy"] == len(smi)
    # The doctor carries the same per-GPU view (its other checks depend on the machine).
    res = salt_call(salt_conf, "nvgpu.doctor")
    checks = {check["name"]: check for check in res.data["checks"]}
    assert checks["gpus-on-bus"]["status"] == checks["gpu-memory"]["status"] == "ok", checks
    assert res.data["gpus_failing"] == 0 and res.data["gpus_healthy"] == len(smi)
