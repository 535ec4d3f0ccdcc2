"""
gpu:validate:when (tests/node, real salt-call, real Podman): a converged highstate starts
no container; each thing the vector add's result depends on, changed, makes it run again.

Containers are counted for real: salt-call runs under `strace -f -e trace=execve`
(Node.salt_call_traced) and every container Podman starts is one conmon process.
"""

import pytest

from tests.node import site_pillar

pytestmark = pytest.mark.node

USER = {"name": "gpuuser", "uid": 2001}
VALIDATIONS = ("gpu-validate-root", "gpu-validate-gpuuser")


def apply(node, pillar, *extra):
    """state.apply gpu, traced: ({state id: result}, Counter of processes by program)."""
    res, counts = node.salt_call_traced("state.apply", "gpu", *extra, pillar=pillar)
    assert isinstance(res.data, dict), res.stdout + res.stderr
    states = {v["__id__"]: v for v in res.data.values()}
    failed = {sid: v["comment"] for sid, v in states.items() if v["result"] is False}
    assert not failed, failed
    return states, counts


def ran(states):
    """The validations that started their container this run."""
    return [sid for sid in VALIDATIONS if "skipped" not in states[sid]["comment"]]


@pytest.fixture
def converged(node, node_assets):
    pillar = site_pillar(node_assets, rootless_users=[USER])
    states, counts = apply(node, pillar)
    assert ran(states) == list(VALIDATIONS)
    assert counts["(containers)"] == 2, counts
    return node, pillar


def test_converged_rerun_starts_no_container_and_says_when_it_last_passed(converged):
    node, pillar = converged
    states, counts = apply(node, pillar)
    assert counts["(containers)"] == 0, counts
    for sid in VALIDATIONS:
        assert states[sid]["result"] is True and states[sid]["changes"] == {}
        assert "skipped: it last PASSED at 20" in states[sid]["comment"], states[sid]["comment"]
    # test=True says the same, exactly, and starts nothing either.
    states, counts = apply(node, pillar, "test=True")
    assert counts["(containers)"] == 0
    assert all(states[sid]["result"] is True and "skipped" in states[sid]["comment"] for sid in VALIDATIONS)


def test_cdi_spec_edit_runs_both_again_and_test_mode_says_so(converged):
    node, pillar = converged
    spec = node.read_file("/etc/cdi/nvidia.yaml")
    node.write_file("/etc/cdi/nvidia.yaml", spec + "# edited by hand\n")
    states, counts = apply(node, pillar, "test=True")
    assert counts["(containers)"] == 0
    for sid in VALIDATIONS:
        assert states[sid]["result"] is None
        assert states[sid]["comment"].endswith("changed since it last passed: CDI spec)"), states[sid]["comment"]
    states, counts = apply(node, pillar)
    assert ran(states) == list(VALIDATIONS) and counts["(containers)"] == 2, counts
    assert "ran: changed since it last passed: CDI spec" in states["gpu-validate-root"]["comment"]
    assert apply(node, pillar)[1]["(containers)"] == 0


def test_reboot_runs_both_again(converged):
    node, pillar = converged
    node.reboot()
    states, counts = apply(node, pillar)
    assert states["gpu-driver-modules-loaded"]["changes"]
    assert ran(states) == list(VALIDATIONS) and counts["(containers)"] == 2, counts
    assert "boot (boot id)" in states["gpu-validate-gpuuser"]["comment"]


def test_subuid_change_runs_only_that_users_validation(converged):
    node, pillar = converged
    pillar["gpu"]["rootless_users"] = [dict(USER, subuid_start=400000)]
    states, counts = apply(node, pillar)
    assert states["gpu-rootless-subids-gpuuser"]["changes"]
    assert ran(states) == ["gpu-validate-gpuuser"] and counts["(containers)"] == 1, counts
    assert "subuid ranges" in states["gpu-validate-gpuuser"]["comment"]


def test_driver_switch_runs_both_again(converged, node_assets):
    node, pillar = converged
    pillar["gpu"]["driver"] = {"stream": "550-dkms"}
    states, counts = apply(node, pillar)
    assert states["gpu-driver-stream"]["changes"]
    assert ran(states) == list(VALIDATIONS) and counts["(containers)"] == 2, counts
    assert "loaded driver version" in states["gpu-validate-root"]["comment"]


def test_when_always_runs_every_time(converged):
    node, pillar = converged
    pillar["gpu"]["validate"]["when"] = "always"
    states, counts = apply(node, pillar)
    assert ran(states) == list(VALIDATIONS) and counts["(containers)"] == 2, counts
    assert "ran: gpu:validate:when is always" in states["gpu-validate-root"]["comment"]


def test_ad_hoc_check_always_runs(converged, node_assets):
    node, _ = converged
    res, counts = node.salt_call_traced("nvgpu.run_vector_add", f"image={node_assets.image}", "user=gpuuser")
    assert res.data["passed"] is True
    assert counts["(containers)"] == 1, counts
