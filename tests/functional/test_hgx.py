"""
The gpu formula on an HGX node (NVSwitches on the PCI bus; tests/node/README.md): the stream's
fm profile, the fabric manager and nvidia-persistenced enabled and running, validation after
them; CUDA error 802 with the fabric manager stopped, diagnosed; a stream switch switches the
fabric manager with the driver.
"""

import pytest

from tests.functional.test_formula import _changed, _config, _failed, _states, apply, converge
from tests.node import site_pillar

pytestmark = pytest.mark.node

FM = "nvidia-fabricmanager"
# Every run validates: these tests look at each run's container result, not at the skip (the fabric
# manager's state is one of the inputs `when: changed` compares, see nvgpu.validation_inputs).
def validate_always(assets):
    return {"image": assets.image_pinned, "when": "always"}


# Salt's module.run (onchanges) shows no changes in test mode, only when it ran.
GRAINS_REFRESH = "gpu-grains-refreshed"


def _same_changed(preview, states):
    assert set(_changed(preview)) == set(_changed(states)) - {GRAINS_REFRESH}


@pytest.fixture
def hgx(node):
    node.add_nvswitches()
    return node


def test_hgx_fresh_converge_with_fabric_manager_exact_test_mode_and_no_second_changes(hgx, node_assets):
    pillar = site_pillar(node_assets, validate=validate_always(node_assets))
    assert hgx.salt_call("grains.get", "nvgpu:nvswitch_count").data == 4

    before = hgx.snapshot()
    preview = _states(apply(hgx, pillar, test=True))
    assert _config(hgx.snapshot()) == _config(before)
    assert not _failed(preview)
    states = converge(hgx, pillar)
    # test=True named exactly the states that then changed, with the same changes where they
    # are known before the packages exist.
    _same_changed(preview, states)
    assert preview["gpu-fabricmanager-running"]["changes"] == states["gpu-fabricmanager-running"]["changes"] == {
        "enabled": True, "running": True}
    assert states["gpu-persistenced-running"]["changes"] == {"enabled": True, "running": True}
    assert "profiles=fm" in hgx.read_file("/etc/dnf/modules.d/nvidia-driver.module")
    assert hgx.run(["rpm", "-q", "--qf", "%{VERSION}", "nvidia-fabric-manager"]).stdout == "580.105.08"
    assert hgx.run(["systemctl", "is-active", FM]).stdout.strip() == "active"
    assert hgx.run(["systemctl", "is-enabled", FM]).stdout.strip() == "enabled"
    assert "PASSED" in states["gpu-validate-root"]["comment"]
    # The validation ran after the fabric manager (its require).
    assert states["gpu-validate-root"]["__run_num__"] > states["gpu-fabricmanager-running"]["__run_num__"]

    again = _states(apply(hgx, pillar))
    assert not _failed(again) and _changed(again) == {}
    again_test = _states(apply(hgx, pillar, test=True))
    assert not _failed(again_test) and _changed(again_test) == {}

    # The fabric manager stopped: the vector add fails with 802, diagnosed as the fabric layer.
    hgx.run(["systemctl", "stop", FM], check=True)
    res = hgx.salt_call("nvgpu.run_vector_add", f"image={node_assets.image_pinned}")
    assert res.data["passed"] is False
    assert "system not yet initialized" in res.data["stderr"]
    assert res.data["diagnosis"]["layer"] == "fabric"
    assert "nvidia-fabricmanager" in res.data["diagnosis"]["fix"]
    # The next run starts it again and validates.
    states = converge(hgx, pillar)
    assert _changed(states) == {"gpu-fabricmanager-running": {"running": True}}
    assert "PASSED" in states["gpu-validate-root"]["comment"]


def test_stream_switch_on_hgx_switches_the_fabric_manager(hgx, node_assets):
    pillar = site_pillar(node_assets, driver={"stream": "550-dkms"}, validate=validate_always(node_assets))
    converge(hgx, pillar)
    assert hgx.run(["rpm", "-q", "--qf", "%{VERSION}", "nvidia-fabric-manager"]).stdout == "550.127.08"
    pillar = site_pillar(node_assets, driver={"stream": "latest-dkms"}, validate=validate_always(node_assets))
    states = converge(hgx, pillar)
    # The daemons holding the GPU were stopped for the reload and started again, of 580.
    assert states["gpu-driver-modules-loaded"]["changes"]["driver_version"] == {
        "old": "550.127.08", "new": "580.105.08"}
    assert sorted(states["gpu-driver-modules-loaded"]["changes"]["stopped"]) == [FM, "nvidia-persistenced"]
    assert states["gpu-fabricmanager-running"]["changes"] == {"running": True}
    assert hgx.run(["rpm", "-q", "--qf", "%{VERSION}", "nvidia-fabric-manager"]).stdout == "580.105.08"
    assert "PASSED" in states["gpu-validate-root"]["comment"]
    again = _states(apply(hgx, pillar))
    assert not _failed(again) and _changed(again) == {}


def test_fabric_manager_false_leaves_it_out_and_validation_fails_with_802(hgx, node_assets):
    pillar = site_pillar(node_assets, driver={"fabricmanager": False}, validate=validate_always(node_assets))
    res = apply(hgx, pillar)
    states = _states(res)
    assert "gpu-fabricmanager-running" not in states
    assert hgx.run(["rpm", "-q", "nvidia-fabric-manager"]).returncode == 1
    failed = _failed(states)
    assert list(failed) == ["gpu-validate-root"]
    assert "system not yet initialized" in failed["gpu-validate-root"]
    assert "Fabric Manager" in failed["gpu-validate-root"]


def test_stream_switch_with_a_busy_gpu_waits_for_the_reboot_then_validates(hgx, node_assets):
    image = validate_always(node_assets)
    converge(hgx, site_pillar(node_assets, driver={"stream": "550-dkms"}, validate=image))
    hgx.hold_gpu()  # a CUDA job keeps running
    pillar = site_pillar(node_assets, driver={"stream": "latest-dkms"}, validate=image)

    preview = _states(apply(hgx, pillar, test=True))
    states = converge(hgx, pillar)  # the run does not fail
    _same_changed(preview, states)
    loaded = states["gpu-driver-modules-loaded"]
    assert loaded["changes"] == {} and preview["gpu-driver-modules-loaded"]["changes"] == {}
    assert loaded["comment"].startswith("Reboot required: driver 550.127.08 is loaded, 580.105.08 is installed")
    for sid in ("gpu-fabricmanager-running", "gpu-persistenced-running", "gpu-validate-root"):
        assert states[sid]["comment"].startswith("Reboot required"), (sid, states[sid])
    assert hgx.salt_call("grains.get", "nvgpu:reboot_required").data is True
    # Nothing was stopped: the job's fabric stays trained, the old daemons keep running.
    assert hgx.read_file("/sys/module/nvidia/fabric_state").strip() == "Completed"
    assert hgx.run(["systemctl", "is-active", FM]).stdout.strip() == "active"
    again = _states(apply(hgx, pillar))
    assert not _failed(again) and _changed(again) == {}

    hgx.reboot()
    states = converge(hgx, pillar)
    assert states["gpu-driver-modules-loaded"]["changes"]["loaded"] == ["nvidia", "nvidia_uvm"]
    assert states["gpu-fabricmanager-running"]["changes"] == {"running": True}
    assert "PASSED" in states["gpu-validate-root"]["comment"]
    assert hgx.salt_call("grains.get", "nvgpu:reboot_required").data is False
    again = _states(apply(hgx, pillar))
    assert not _failed(again) and _changed(again) == {}


def test_a_kernel_installed_without_the_driver_built_fails_the_preflight_with_the_fix(node, node_assets):
    pillar = site_pillar(node_assets, validate=validate_always(node_assets))
    converge(node, pillar)
    # As `dnf update` brings a kernel: its DKMS hook cannot build without its kernel-devel.
    node.dnf("install", "kernel-core")
    newest = node.run(["rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}.%{ARCH}", "kernel-core"]).stdout
    preview = _states(apply(node, pillar, test=True))
    states = _states(apply(node, pillar))
    for run in (preview, states):
        failed = _failed(run)
        assert list(failed) == ["gpu-driver-built-for-next-boot"], failed
        assert f"The next boot starts kernel {newest}, which has no NVIDIA driver" in failed[
            "gpu-driver-built-for-next-boot"]
        assert f"dnf install kernel-devel-{newest}, then dkms autoinstall -k {newest}" in failed[
            "gpu-driver-built-for-next-boot"]
    # The fix, as written; then the run passes and changes nothing.
    node.dnf("install", f"kernel-devel-{newest}")
    node.run(["dkms", "autoinstall", "-k", newest], check=True)
    states = converge(node, pillar)
    assert "has the NVIDIA driver built" in states["gpu-driver-built-for-next-boot"]["comment"]
    assert _changed(states) == {}
