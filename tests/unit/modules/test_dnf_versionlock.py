"""
The dnf versionlock execution module (_modules/dnf_versionlock.py): the plugin's lock list
read as a real file, dnf and rpm through the fake ``cmd.run_all``.
"""

import pytest
from salt.exceptions import CommandExecutionError

from tests.unit.fakes import FakeSalt
from tests.unit.loader import load

LIST = "/etc/dnf/plugins/versionlock.list"


@pytest.fixture
def vl(host):
    return load("_modules/dnf_versionlock.py")


@pytest.fixture
def configure_loader_modules(vl, run_all, which):
    return {vl: {"__salt__": FakeSalt(run_all=run_all), "__opts__": {"test": False}, "__context__": {}}}


def test_virtual_needs_dnf(vl, which):
    assert vl.__virtual__() == "dnf_versionlock"
    which.tools.discard("dnf")
    assert vl.__virtual__()[0] is False


def test_locks_as_the_plugin_writes_them(vl, host):
    assert vl.locks() == []
    host.write(LIST, "\n# Added lock on Sun Nov 29 10:02:44 2026\nnvidia-open-3:580.105.08-1.el10.*\n"
                     "!kernel-core-0:6.12.0-1.el10.*\nodd-line\n")
    assert vl.locks() == [
        {"spec": "nvidia-open-3:580.105.08-1.el10.*", "name": "nvidia-open", "version": "580.105.08"},
        {"spec": "odd-line", "name": None, "version": None}]


def test_add_delete_install_sync_are_dnf_argument_lists(vl, run_all):
    run_all.on("dnf")
    vl.add("*nvidia*580*")
    vl.delete(["nvidia-open-3:575.57.08-1.el10.*"])
    vl.install("nvidia-open")
    vl.distro_sync(["nvidia-driver", "nvidia-open"])
    assert run_all.argvs == [
        ["dnf", "-y", "versionlock", "add", "*nvidia*580*"],
        ["dnf", "-y", "versionlock", "delete", "nvidia-open-3:575.57.08-1.el10.*"],
        ["dnf", "-y", "install", "nvidia-open"],
        ["dnf", "-y", "distro-sync", "nvidia-driver", "nvidia-open"]]


def test_without_the_plugin_dnf_says_so_and_the_error_names_the_package(vl, run_all):
    run_all.on("dnf", retcode=1, stderr="No such command: versionlock. Please use /usr/bin/dnf --help")
    with pytest.raises(CommandExecutionError, match="(?s)No such command: versionlock.*python3-dnf-plugin-versionlock"):
        vl.add("*nvidia*580*")


def test_versions(vl, run_all):
    run_all.on("rpm", "-q", stdout="575.57.08\n")
    run_all.on("rpm", "-qa", stdout="nvidia-open 575.57.08\nnvidia-driver 575.57.08\nbash 5.2.26\nbad\n")
    run_all.on("dnf", "-q", "repoquery", stdout="580.105.08\n575.57.08\n580.65.06\n")
    assert vl.installed_version("nvidia-open") == "575.57.08"
    assert vl.packages_of_version("575.57.08") == ["nvidia-driver", "nvidia-open"]
    assert vl.available_versions("nvidia-open") == ["575.57.08", "580.65.06", "580.105.08"]
    run_all.on("rpm", "-q", retcode=1, stdout="package nvidia-open is not installed\n")
    assert vl.installed_version("nvidia-open") is None
