"""
The gpu formula on each RHEL release the simulated node can be (tests/node RELEASES):
RHEL 9.6 (platform:el9, Podman as a package, container-selinux 2.237) next to the
RHEL 8 node the other formula tests use. Each scenario converges, re-runs with no
change, and `test=True` predicts the first run's changes state by state.
"""

import pytest

from tests.functional.test_formula import BOOKKEEPING, _changed, _failed, _states, apply, converge
from tests.node import Node, site_pillar

pytestmark = pytest.mark.node

ROOTLESS = [{"name": "gpuuser", "uid": 2001}]


@pytest.fixture
def node9(node_assets):
    """A fresh simulated RHEL 9.6 GPU node: nouveau loaded, nothing installed yet."""
    fresh = Node.create(node_assets, release="9")
    yield fresh
    fresh.destroy()


def _config(snapshot):
    return {k: v for k, v in snapshot.items() if not k.startswith(BOOKKEEPING)}


def test_rhel9_converges_root_and_rootless_and_test_mode_predicts_it(node9, node_assets):
    assert "VERSION_ID=\"9.6\"" in node9.read_file("/etc/os-release")
    pillar = site_pillar(node_assets, release="9", rootless_users=ROOTLESS)

    before = node9.snapshot()
    predicted = _states(apply(node9, pillar, test=True))
    assert _config(node9.snapshot()) == _config(before)
    assert not _failed(predicted)

    states = converge(node9, pillar)
    # test=True named the states the run then changed, but for two that Salt and useradd
    # decide: user.present in test mode says "set to be added" with no changes, and
    # useradd gives the new account ranges that subids_present (no account yet) predicted.
    assert set(_changed(predicted)) ^ set(_changed(states)) == {
        "gpu-rootless-user-gpuuser", "gpu-rootless-subids-gpuuser"}
    assert predicted["gpu-rootless-user-gpuuser"]["result"] is None
    assert all(predicted[sid]["result"] is None for sid in _changed(predicted))
    assert predicted["gpu-driver-stream"]["changes"] == states["gpu-driver-stream"]["changes"]

    assert states["gpu-cuda-repo"]["changes"]["repo"] == "cuda-rhel9-x86_64"
    assert "platform:el9" in node9.read_file("/etc/dnf/dnf.conf")
    assert "stream=latest-dkms" in node9.read_file("/etc/dnf/modules.d/nvidia-driver.module")
    # RHEL 9 has no container-tools module: Podman (and its container-selinux) as packages.
    assert states["gpu-container-runtime"]["changes"]["podman"]["new"].endswith(".el9")
    assert "2.237.0" in node9.run(["rpm", "-q", "container-selinux"]).stdout
    assert not node9.exists("/etc/dnf/modules.d/container-tools.module")
    assert "PASSED as root" in states["gpu-validate-root"]["comment"]
    assert "PASSED as gpuuser (rootless)" in states["gpu-validate-gpuuser"]["comment"]

    again = _states(apply(node9, pillar))
    assert not _failed(again)
    assert _changed(again) == {}
    assert _changed(_states(apply(node9, pillar, test=True))) == {}
