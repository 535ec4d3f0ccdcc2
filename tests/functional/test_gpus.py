"""
Every GPU of a node (issue 14) on a simulated 8-GPU node: a machine whose GPU 3 has an
uncorrectable ECC error (its Xid 48 and 63 in the kernel log, rows pending remapping, the
sample failing on it with CUDA's words) passes the default check, which runs on the first GPU,
and fails `run_vector_add gpus=each` and the doctor naming exactly GPU 3 by index and UUID;
the same machine healthy passes; a GPU that fell off the bus is named by its PCI address.
One provisioned node serves the tests in order (Node.set_gpus changes its machine between them).
"""

import pytest

from tests.node import Node, gpus_of

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def node(node_assets):
    node = Node.create(node_assets)
    # This checkout's stand-in vectorAdd (it runs on whichever GPU the container got).
    node.image = node_assets.image_pinned
    node.set_gpus(gpus_of(8, **{"3": "ecc"}))
    node.provision()
    node.run(["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"], check=True)
    yield node
    node.destroy()


def each(node, *args):
    return node.salt_call("nvgpu.run_vector_add", f"image={node.image}", "mode=cdi", "gpus=each", *args, timeout=600)


def gpu_checks(node):
    res = node.salt_call("nvgpu.doctor")
    return res, {c["name"]: c for c in res.data["checks"] if c["layer"] == "gpu"}


def test_the_default_check_passes_on_the_first_gpu(node):
    res = node.salt_call("nvgpu.run_vector_add", f"image={node.image}", "mode=cdi", timeout=600)
    assert res.retcode == 0 and res.data["passed"] is True, res.stdout + res.stderr


def test_each_gpu_names_exactly_the_bad_one(node):
    bad = gpus_of(8)[3]["uuid"]
    res = each(node)
    assert res.retcode == 1, res.stdout + res.stderr
    data = res.data
    assert data["passed"] is False and len(data["gpus"]) == 8
    assert [gpu["passed"] for gpu in data["gpus"]] == [i != 3 for i in range(8)]
    assert [(gpu["index"], gpu["uuid"]) for gpu in data["failed_gpus"]] == [(3, bad)]
    failed = data["failed_gpus"][0]
    assert failed["layer"] == "gpu" and "uncorrectable ECC" in failed["cause"] and "nvidia-smi -r" in failed["fix"]
    assert data["gpus"][3]["stderr"].strip() == \
        "Failed to allocate device vector A (error code uncorrectable ECC error encountered)!"
    assert data["diagnosis"]["cause"].startswith(f"GPU 3 ({bad}, NVIDIA A100-SXM4-80GB): ")
    # Each run saw only its GPU, asked for by UUID (the spec names GPUs by index and UUID).
    assert [gpu["command"][-2] for gpu in data["gpus"]] == [f"nvidia.com/gpu={g['uuid']}" for g in gpus_of(8)]


def test_each_gpu_rootless_names_exactly_the_bad_one(node):
    node.add_user("gpuuser", uid=2001)
    res = each(node, "user=gpuuser")
    assert res.retcode == 1, res.stdout + res.stderr
    assert [(gpu["index"], gpu["uuid"]) for gpu in res.data["failed_gpus"]] == [(3, gpus_of(8)[3]["uuid"])]
    assert all("--cap-drop=ALL" in gpu["command"] and gpu["user"] == "gpuuser" for gpu in res.data["gpus"])


def test_the_doctor_names_exactly_the_bad_gpu(node):
    bad = gpus_of(8)[3]["uuid"]
    res, checks = gpu_checks(node)
    assert res.retcode == 1 and res.data["ok"] is False
    assert checks["gpus-on-bus"]["status"] == "ok" and "sees 8 GPU(s)" in checks["gpus-on-bus"]["evidence"]
    for name in ("xid", "gpu-memory"):
        assert checks[name]["status"] == "fail", checks[name]
        assert f"GPU 3 ({bad}, 0000:48:00.0)" in checks[name]["evidence"]
        assert "nvidia-smi -r -i 3" in checks[name]["fix"]
    assert "Xid 48 x1, double bit ECC error" in checks["xid"]["evidence"]
    assert "Xid 63 x1" in checks["xid"]["evidence"]
    assert [(g["index"], g["uuid"]) for g in res.data["gpus"] if not g["healthy"]] == [(3, bad)]
    assert (res.data["gpus_healthy"], res.data["gpus_failing"]) == (7, 1)
    assert {c["check"] for c in res.data["gpus"][3]["causes"]} == {"xid", "gpu-memory"}


def test_the_state_fails_naming_the_bad_gpu(node):
    bad = gpus_of(8)[3]["uuid"]
    res = node.salt_call("state.single", "nvgpu.vector_add_passes", "name=gpu-validate-root", f"image={node.image}",
                         "mode=cdi", "gpus=each", timeout=600)
    [state] = res.data.values()
    assert res.retcode != 0 and state["result"] is False and state["changes"] == {}
    lines = state["comment"].splitlines()
    assert lines[0].startswith("Vector add FAILED as root on each of 8 GPU(s) (mode cdi, ")
    assert [line.split(": ")[1].split(" ")[0] for line in lines[1:9]] == ["FAILED" if i == 3 else "PASSED"
                                                                           for i in range(8)]
    assert f"GPU 3 ({bad}): Cause: the GPU has an uncorrectable ECC memory error" in state["comment"]


def test_a_healthy_node_passes(node):
    node.set_gpus(gpus_of(8))
    res = each(node)
    assert res.retcode == 0, res.stdout + res.stderr
    assert res.data["passed"] is True and res.data["failed_gpus"] == [] and len(res.data["gpus"]) == 8
    _, checks = gpu_checks(node)
    assert [checks[name]["status"] for name in ("gpus-on-bus", "xid", "gpu-memory")] == ["ok", "ok", "ok"]


def test_a_gpu_off_the_bus_is_named_by_its_pci_address(node):
    node.set_gpus(gpus_of(8, **{"5": "off_bus"}))
    res, checks = gpu_checks(node)
    assert checks["gpus-on-bus"]["status"] == "fail"
    assert "sees 7 GPU(s)" in checks["gpus-on-bus"]["evidence"]
    assert "not seen by the driver: 0000:68:00.0" in checks["gpus-on-bus"]["evidence"]
    assert "Xid 79 x1, GPU has fallen off the bus" in checks["xid"]["evidence"]
    assert [g["pci"] for g in res.data["gpus"] if not g["healthy"]] == ["0000:68:00.0"]
    node.set_gpus(gpus_of(8))
