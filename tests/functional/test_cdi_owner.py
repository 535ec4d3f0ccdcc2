"""
Who writes the CDI spec (pillar gpu:toolkit:cdi_owner) on a node whose toolkit mirror has
reached 1.18, whose base package ships nvidia-cdi-refresh (NVIDIA's path and service
units, run by the stand-in systemctl). Either way there is one spec for nvidia.com/gpu.
"""

import pytest

from tests.functional.test_doctor import assert_fails, assert_healthy, doctor
from tests.functional.test_formula import BOOKKEEPING, _changed, _failed, _states, apply, converge
from tests.functional.test_releases import assert_predicted
from tests.node import site_pillar

pytestmark = pytest.mark.node

ROOTLESS = [{"name": "gpuuser", "uid": 2001}]
REFRESH_SPEC = "/var/run/cdi/nvidia.yaml"
FORMULA_SPEC = "/etc/cdi/nvidia.yaml"
UNITS = ("nvidia-cdi-refresh.path", "nvidia-cdi-refresh.service")


def pillar_118(assets, **gpu):
    repo = {"baseurl": assets.repo_url("toolkit-1.18"), "gpgkey": f"file://{assets.gpgkey}"}
    return site_pillar(assets, repos={"toolkit": repo}, rootless_users=ROOTLESS, **gpu)


def _config(snapshot):
    return {k: v for k, v in snapshot.items() if not k.startswith(BOOKKEEPING)}


def specs(node):
    return [path for path in (FORMULA_SPEC, REFRESH_SPEC) if node.exists(path)]


def enabled(node, unit):
    return node.run(["systemctl", "is-enabled", unit]).stdout.strip()


def test_refresh_owns_the_one_spec_and_is_run_again_after_a_driver_switch(node, node_assets):
    pillar = pillar_118(node_assets, driver={"stream": "550-dkms"})
    before = node.snapshot()
    predicted = _states(apply(node, pillar, test=True))
    assert _config(node.snapshot()) == _config(before) and not _failed(predicted)

    states = converge(node, pillar)
    assert_predicted(predicted, states)
    toolkit = states["gpu-container-toolkit"]
    assert "CDI spec by nvidia-cdi-refresh" in toolkit["comment"]
    assert toolkit["changes"]["cdi_refresh_enabled"] == {"old": list(UNITS), "new": list(UNITS)}
    assert toolkit["changes"]["cdi_spec"]["by"] == "nvidia-cdi-refresh.service"
    assert toolkit["changes"]["cdi_spec"]["new"]["driver_version"] == "550.127.08"
    # One spec, the toolkit's, and the units enabled as NVIDIA's preset would.
    assert specs(node) == [REFRESH_SPEC]
    assert [enabled(node, unit) for unit in UNITS] == ["enabled", "enabled"]
    assert "Refresh NVIDIA CDI specification file" in node.run(
        ["systemctl", "status", "nvidia-cdi-refresh.service"]).stdout
    assert "PASSED as root" in states["gpu-validate-root"]["comment"]
    assert "PASSED as gpuuser (rootless)" in states["gpu-validate-gpuuser"]["comment"]

    again = _states(apply(node, pillar))
    assert not _failed(again) and _changed(again) == {}
    assert _changed(_states(apply(node, pillar, test=True))) == {}

    # A stream switch: DKMS rebuilds, modules.dep changes and the path unit fires, but the
    # service is a oneshot still "active" from its first run, so systemd does not run it
    # again; the formula does, and the spec follows the new driver.
    switched = converge(node, pillar_118(node_assets, driver={"stream": "latest-dkms"}))
    change = switched["gpu-container-toolkit"]["changes"]["cdi_spec"]
    assert change["reason"] == "stale: written for driver 550.127.08, driver 580.105.08 is loaded"
    assert change["new"]["driver_version"] == "580.105.08"
    assert specs(node) == [REFRESH_SPEC]
    assert "PASSED as gpuuser (rootless)" in switched["gpu-validate-gpuuser"]["comment"]

    # The doctor agrees: the spec is nvidia-cdi-refresh's. With its path unit off nothing
    # would follow the next driver change: exactly that check fails, and the formula fixes it.
    node.write_pillar(pillar_118(node_assets, driver={"stream": "latest-dkms"}))
    data, retcode = doctor(node)
    assert_healthy(data, retcode)
    check = next(c for c in data["checks"] if c["name"] == "cdi-refresh")
    assert check["status"] == "ok" and "nvidia-cdi-refresh's" in check["evidence"], check
    node.run(["systemctl", "disable", "--now", UNITS[0]], check=True)
    failing = assert_fails(*doctor(node), "cdi-refresh")
    assert "does not watch for driver changes" in failing["cdi-refresh"]["evidence"]
    converge(node, pillar_118(node_assets, driver={"stream": "latest-dkms"}))
    assert_healthy(*doctor(node))


def test_formula_owner_turns_the_refresh_off_and_keeps_its_own_spec(node, node_assets):
    converge(node, pillar_118(node_assets))
    assert specs(node) == [REFRESH_SPEC]

    pillar = pillar_118(node_assets, toolkit={"cdi_owner": "formula"})
    pending = _states(apply(node, pillar, test=True))["gpu-container-toolkit"]["changes"]
    assert pending["cdi_refresh_enabled"] == {"old": list(UNITS), "new": []}
    assert pending["refresh_cdi_spec"] == {"old": REFRESH_SPEC, "new": None}
    assert pending["cdi_spec"]["reason"] == "missing"
    assert specs(node) == [REFRESH_SPEC]

    states = converge(node, pillar)
    assert states["gpu-container-toolkit"]["changes"].keys() == pending.keys()
    assert specs(node) == [FORMULA_SPEC]
    assert [enabled(node, unit) for unit in UNITS] == ["disabled", "disabled"]
    assert "PASSED as gpuuser (rootless)" in states["gpu-validate-gpuuser"]["comment"]
    assert _changed(_states(apply(node, pillar))) == {}
