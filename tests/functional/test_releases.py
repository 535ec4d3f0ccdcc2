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
# Salt's own states that say in test mode what they would do without listing changes:
# user.present ("set to be added"), module.run under onchanges (the grains refresh).
UNLISTED = {"gpu-rootless-user-gpuuser", "gpu-grains-refreshed"}


def assert_predicted(predicted, states):
    """test=True named exactly the states the run changed, but for UNLISTED (result None
    there) and the new user's ranges, which useradd then gave it as subids_present
    (no account yet) could not know."""
    unlisted = UNLISTED & set(_changed(states))
    assert set(_changed(predicted)) ^ set(_changed(states)) == unlisted | {"gpu-rootless-subids-gpuuser"}
    assert all(predicted[sid]["result"] is None for sid in unlisted)


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
    assert_predicted(predicted, states)
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


def test_rhel9_with_selinux_on_turns_on_container_selinuxs_boolean(node9, node_assets):
    """EL 9.5+: container-selinux defines container_use_xserver_devices; auto uses it, through
    Salt's selinux.boolean state, and rootless containers run as container_t."""
    node9.set_selinux("Permissive")
    pillar = site_pillar(node_assets, release="9", rootless_users=ROOTLESS)
    predicted = _states(apply(node9, pillar, test=True))
    assert "container-selinux" in predicted["gpu-selinux-ready"]["changes"]["method"]["new"]
    assert predicted["gpu-selinux-tools-installed"]["result"] is None

    states = converge(node9, pillar)
    assert_predicted(predicted, states)
    ready = states["gpu-selinux-ready"]
    assert ready["changes"]["boolean"] == {
        "container_use_xserver_devices": {"old": ["off", "off"], "new": ["on", "on"]}}
    assert "policycoreutils-python-utils" in states["gpu-selinux-tools-installed"]["changes"]
    # Persistent (setsebool -P, where libsemanage keeps it), and no policy module installed.
    assert "container_use_xserver_devices=1" in node9.read_file("/var/lib/selinux/targeted/active/booleans.local")
    assert "nvidia-container" not in node9.run(["semodule", "-l"]).stdout.split()
    assert "PASSED as gpuuser (rootless)" in states["gpu-validate-gpuuser"]["comment"]
    node9.write_pillar(pillar)  # the ad-hoc check reads the node's own pillar
    rootless = node9.salt_call("nvgpu.run_vector_add", "user=gpuuser", f"image={node_assets.image}")
    assert rootless.data["passed"] is True
    assert "label=type:container_t" in rootless.data["command"]

    again = _states(apply(node9, pillar))
    assert not _failed(again) and _changed(again) == {}
    assert "boolean container_use_xserver_devices on (containers run as container_t)" in (
        again["gpu-selinux-ready"]["comment"])
    assert _changed(_states(apply(node9, pillar, test=True))) == {}

    # Turned off by hand: test=True says exactly that, the next run turns it on again.
    node9.run(["setsebool", "-P", "container_use_xserver_devices", "off"], check=True)
    pending = _states(apply(node9, pillar, test=True))
    assert _changed(pending) == {"gpu-selinux-ready": {"boolean": {
        "container_use_xserver_devices": {"old": ["off", "off"], "new": ["on", "on"]}}}}
    assert _changed(converge(node9, pillar)) == _changed(pending)


def test_rhel8_with_selinux_on_installs_nvidias_policy_module(node, node_assets):
    """RHEL 8's container-selinux lacks the boolean: auto installs NVIDIA's module, and
    rootless containers run as nvidia_container_t (the guide's way)."""
    node.set_selinux("Permissive")
    pillar = site_pillar(node_assets, rootless_users=ROOTLESS)
    states = converge(node, pillar)
    ready = states["gpu-selinux-ready"]
    assert ready["changes"]["policy_module"] == {"old": None, "new": "nvidia-container"}
    assert "boolean" not in ready["changes"]
    assert "nvidia-container" in node.run(["semodule", "-l"]).stdout.split()
    assert node.run(["getsebool", "container_use_xserver_devices"]).stderr == (
        "Error getting active value for container_use_xserver_devices\n")
    assert "PASSED as gpuuser (rootless)" in states["gpu-validate-gpuuser"]["comment"]
    node.write_pillar(pillar)  # the ad-hoc check reads the node's own pillar
    rootless = node.salt_call("nvgpu.run_vector_add", "user=gpuuser", f"image={node_assets.image}")
    assert "label=type:nvidia_container_t" in rootless.data["command"]

    again = _states(apply(node, pillar))
    assert not _failed(again) and _changed(again) == {}
    assert _changed(_states(apply(node, pillar, test=True))) == {}


def test_boolean_method_where_the_policy_lacks_it_fails_naming_it(node, node_assets):
    node.set_selinux("Permissive")
    res = apply(node, site_pillar(node_assets, selinux={"method": "boolean"}))
    failed = _failed(_states(res))
    assert res.retcode != 0
    assert "container_use_xserver_devices" in failed["gpu-selinux-ready"]
    assert "nvidia-container" not in node.run(["semodule", "-l"]).stdout.split()


@pytest.fixture
def node10(node_assets):
    """A fresh simulated RHEL 10.0 GPU node: no module streams anywhere."""
    fresh = Node.create(node_assets, release="10")
    yield fresh
    fresh.destroy()


def _locked_versions(node):
    lines = node.read_file("/etc/dnf/plugins/versionlock.list") or ""
    return sorted({line.split(":", 1)[1].split("-")[0] for line in lines.splitlines()
                   if line.strip() and not line.startswith("#")})


def test_rhel10_converges_on_a_pinned_branch_and_switches_branches(node10, node_assets):
    assert "VERSION_ID=\"10.0\"" in node10.read_file("/etc/os-release")
    node10.set_selinux("Permissive")
    pillar = site_pillar(node_assets, release="10", driver={"branch": "575"}, rootless_users=ROOTLESS)

    before = node10.snapshot()
    predicted = _states(apply(node10, pillar, test=True))
    assert _config(node10.snapshot()) == _config(before)
    assert not _failed(predicted)
    # The CUDA repo is configured by this very run: the version is known once it is.
    assert predicted["gpu-driver-branch"]["changes"] == {
        "locked": {"old": None, "new": "575"},
        "version": {"old": None, "new": "the newest of branch 575 (no nvidia-open in the enabled repos yet)"}}

    states = converge(node10, pillar)
    assert_predicted(predicted, states)
    assert "gpu-driver-stream" not in states
    assert states["gpu-driver-branch"]["changes"] == {
        "locked": {"old": None, "new": "575"}, "version": {"old": None, "new": "575.57.08"}}
    # NVIDIA's recipe, for real: `dnf versionlock add '*nvidia*575*'` locked the branch's
    # packages, nvidia-open came from it, and no module stream exists.
    assert _locked_versions(node10) == ["575.57.08"]
    assert "nvidia-open-575.57.08-1.el10" in node10.run(["rpm", "-q", "nvidia-open"]).stdout
    assert not node10.exists("/etc/dnf/modules.d/nvidia-driver.module")
    assert states["gpu-container-toolkit"]["changes"]["cdi_spec"]["new"]["driver_version"] == "575.57.08"
    # RHEL 10's container-selinux has the boolean: auto turns it on, nothing third-party.
    assert "boolean" in states["gpu-selinux-ready"]["changes"]
    assert "PASSED as root" in states["gpu-validate-root"]["comment"]
    assert "PASSED as gpuuser (rootless)" in states["gpu-validate-gpuuser"]["comment"]

    again = _states(apply(node10, pillar))
    assert not _failed(again) and _changed(again) == {}
    assert "575.57.08 is installed from branch 575 (locked)" in again["gpu-driver-branch"]["comment"]
    assert _changed(_states(apply(node10, pillar, test=True))) == {}

    # A branch change, like a stream switch: test=True says it, the run does it.
    pillar580 = site_pillar(node_assets, release="10", driver={"branch": 580}, rootless_users=ROOTLESS)
    pending = _states(apply(node10, pillar580, test=True))
    assert pending["gpu-driver-branch"]["changes"] == {
        "locked": {"old": ["575"], "new": "580"}, "version": {"old": "575.57.08", "new": "580.105.08"}}
    assert _locked_versions(node10) == ["575.57.08"]
    switched = converge(node10, pillar580)
    assert switched["gpu-driver-branch"]["changes"] == pending["gpu-driver-branch"]["changes"]
    assert "switched from 575.57.08" in switched["gpu-driver-branch"]["comment"]
    assert _locked_versions(node10) == ["580.105.08"]
    assert node10.run(["rpm", "-q", "nvidia-driver", "kmod-nvidia-open-dkms"]).stdout.count("580.105.08") == 2
    assert switched["gpu-driver-modules-loaded"]["changes"]["driver_version"] == {
        "old": "575.57.08", "new": "580.105.08"}
    assert switched["gpu-container-toolkit"]["changes"]["cdi_spec"]["new"]["driver_version"] == "580.105.08"
    assert "PASSED as gpuuser (rootless)" in switched["gpu-validate-gpuuser"]["comment"]
    assert _changed(_states(apply(node10, pillar580))) == {}

    # Back to latest: no lock at all; 580.105.08 is already the newest, so no dnf transaction.
    latest = converge(node10, site_pillar(node_assets, release="10", rootless_users=ROOTLESS))
    assert latest["gpu-driver-branch"]["changes"] == {"locked": {"old": ["580"], "new": None}}
    assert _locked_versions(node10) == []


def test_rhel10_branch_missing_from_the_repo_fails_naming_the_branches(node10, node_assets):
    res = apply(node10, site_pillar(node_assets, release="10", driver={"branch": "590"}))
    failed = _failed(_states(res))
    assert res.retcode != 0
    assert "no nvidia-open of branch 590" in failed["gpu-driver-branch"]
    assert "575.57.08, 580.105.08" in failed["gpu-driver-branch"]
    assert node10.run(["rpm", "-q", "nvidia-open"]).returncode != 0
