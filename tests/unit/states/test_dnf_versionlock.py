"""
The branch state (_states/dnf_versionlock.py) over the autospecced dnf_versionlock
execution functions: a fresh install on a branch, converged, a branch change, back to
latest, test=True, a branch the repo lacks, dnf that does not do what it said.
"""

import pytest

from tests.unit.fakes import FakeSalt
from tests.unit.loader import load, real

STATES = load("_states/dnf_versionlock.py")
REPO = ["575.57.08", "580.65.06", "580.105.08"]


@pytest.fixture
def mods():
    fake = FakeSalt(real("_modules/dnf_versionlock.py"))
    fake.set("dnf_versionlock.available_versions", REPO)
    for action in ("add", "delete", "install", "distro_sync"):
        fake.set(f"dnf_versionlock.{action}", True)
    fake.set("dnf_versionlock.packages_of_version", ["kmod-nvidia-open-dkms", "nvidia-open"])
    return fake


@pytest.fixture
def opts():
    return {"test": False}


@pytest.fixture
def configure_loader_modules(mods, opts):
    return {STATES: {"__salt__": mods, "__opts__": opts, "__context__": {}}}


def lock(version, name="nvidia-open"):
    return {"spec": f"{name}-3:{version}-1.el10.*", "name": name, "version": version}


def test_fresh_node_locks_the_branch_then_installs(mods):
    mods.set("dnf_versionlock.installed_version", None, "575.57.08")
    mods.set("dnf_versionlock.locks", [])
    ret = STATES.branch_installed("nvidia-open", branch="575")
    assert ret["result"] is True
    assert ret["changes"] == {"locked": {"old": None, "new": "575"}, "version": {"old": None, "new": "575.57.08"}}
    assert mods.actions() == ["dnf_versionlock.add", "dnf_versionlock.install"]
    assert mods.called("dnf_versionlock.add") == [(("*nvidia*575*",), {})]


def test_converged_reads_no_repo(mods):
    mods.set("dnf_versionlock.installed_version", "580.105.08")
    mods.set("dnf_versionlock.locks", [lock("580.105.08"), lock("1.17.8", "nvidia-container-toolkit")])
    ret = STATES.branch_installed("nvidia-open", branch=580)
    assert ret["result"] is True and ret["changes"] == {}
    assert "580.105.08 is installed from branch 580 (locked)" in ret["comment"]
    assert mods.actions() == [] and "dnf_versionlock.available_versions" not in mods.names()


def test_branch_change_replaces_the_locks_and_moves_the_packages(mods):
    mods.set("dnf_versionlock.installed_version", "575.57.08", "580.105.08")
    mods.set("dnf_versionlock.locks", [lock("575.57.08"), lock("575.57.08", "nvidia-driver")])
    ret = STATES.branch_installed("nvidia-open", branch="580")
    assert ret["changes"] == {"locked": {"old": ["575"], "new": "580"},
                              "version": {"old": "575.57.08", "new": "580.105.08"}}
    assert mods.called("dnf_versionlock.delete") == [(([lock("575.57.08")["spec"],
                                                        lock("575.57.08", "nvidia-driver")["spec"]],), {})]
    assert mods.called("dnf_versionlock.distro_sync") == [((["kmod-nvidia-open-dkms", "nvidia-open"],), {})]
    assert mods.called("dnf_versionlock.packages_of_version") == [(("575.57.08",), {})]


def test_test_mode_predicts_exactly_and_does_nothing(mods, opts):
    opts["test"] = True
    mods.set("dnf_versionlock.installed_version", "575.57.08")
    mods.set("dnf_versionlock.locks", [lock("575.57.08")])
    ret = STATES.branch_installed("nvidia-open", branch="latest")
    assert ret["result"] is None
    assert ret["changes"] == {"locked": {"old": ["575"], "new": None},
                              "version": {"old": "575.57.08", "new": "580.105.08"}}
    assert mods.actions() == []


def test_branch_missing_from_the_repo_fails_before_any_change(mods):
    mods.set("dnf_versionlock.installed_version", None)
    mods.set("dnf_versionlock.locks", [])
    ret = STATES.branch_installed("nvidia-open", branch="590")
    assert ret["result"] is False
    assert "no nvidia-open of branch 590" in ret["comment"] and "575.57.08, 580.65.06, 580.105.08" in ret["comment"]
    assert mods.actions() == []


def test_dnf_that_did_not_do_it_fails(mods):
    mods.set("dnf_versionlock.installed_version", "575.57.08")
    mods.set("dnf_versionlock.locks", [])
    ret = STATES.branch_installed("nvidia-open", branch="580")
    assert ret["result"] is False and "not 580.105.08 of branch 580" in ret["comment"]


@pytest.mark.parametrize("branch", ["580-open", "58", "", "*"])
def test_bad_branch(mods, branch):
    ret = STATES.branch_installed("nvidia-open", branch=branch)
    assert ret["result"] is False and "gpu:driver:branch" in ret["comment"]
    assert mods.calls == []
