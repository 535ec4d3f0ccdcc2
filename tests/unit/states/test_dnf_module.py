"""
The dnf module-stream state (_states/dnf_module.py) over the autospecced dnf_module
execution functions: install, switch, reset-then-install, already installed, test=True,
and dnf that reports success without doing it.
"""

import pytest
from salt.exceptions import CommandExecutionError

from tests.unit.fakes import FakeSalt
from tests.unit.loader import load, real

STATES = load("_states/dnf_module.py")


@pytest.fixture
def mods():
    return FakeSalt(real("_modules/dnf_module.py"))


@pytest.fixture
def opts():
    return {"test": False}


@pytest.fixture
def configure_loader_modules(mods, opts):
    return {STATES: {"__salt__": mods, "__opts__": opts, "__context__": {}}}


@pytest.fixture
def st():
    return STATES


def stream(stream=None, profiles=(), state=None):
    return {"name": "nvidia-driver", "stream": stream, "profiles": list(profiles), "state": state}


def test_virtual(st, mods):
    assert st.__virtual__() == "dnf_module"
    del mods["dnf_module.info"]
    assert st.__virtual__()[0] is False


class TestAlreadyInstalled:
    def test_with_the_profile(self, st, mods):
        mods.set("dnf_module.info", stream("latest-dkms", ["default"], "enabled"))
        mods.set("dnf_module.problems", [])
        ret = st.installed("nvidia-driver", "latest-dkms", profile="default")
        assert ret == {"name": "nvidia-driver", "result": True, "changes": {},
                       "comment": "Module stream nvidia-driver:latest-dkms/default is already installed"}
        assert mods.actions() == []
        assert mods.called("dnf_module.problems") == [(("nvidia-driver", "latest-dkms"), {"platform": None})]

    def test_any_profile_counts_without_one_asked(self, st, mods):
        mods.set("dnf_module.info", stream("latest-dkms", ["fm"], "enabled"))
        mods.set("dnf_module.problems", [])
        ret = st.installed("nvidia-driver", "latest-dkms")
        assert ret["result"] is True and ret["changes"] == {}
        assert mods.actions() == []


class TestInstall:
    def test_fresh_test_mode_reports_install(self, st, mods, opts):
        opts["test"] = True
        mods.set("dnf_module.info", stream())
        ret = st.installed("nvidia-driver", "latest-dkms", profile="default")
        assert ret["result"] is None
        assert ret["changes"] == {
            "stream": {"old": None, "new": "latest-dkms"},
            "profiles": {"old": [], "new": ["default"]},
        }
        assert ret["comment"] == "Module stream nvidia-driver:latest-dkms/default would be installed"
        assert mods.actions() == []

    def test_fresh_installs(self, st, mods):
        mods.set("dnf_module.info", stream(), stream("latest-dkms", ["default"], "enabled"))
        mods.set("dnf_module.install", stream("latest-dkms", ["default"], "enabled"))
        ret = st.installed("nvidia-driver", "latest-dkms", profile="default", platform="platform:el8")
        assert ret["result"] is True
        assert ret["changes"] == {"stream": {"old": None, "new": "latest-dkms"},
                                  "profiles": {"old": [], "new": ["default"]}}
        assert ret["comment"] == "Module stream nvidia-driver:latest-dkms/default was installed"
        assert mods.called("dnf_module.install") == [
            (("nvidia-driver", "latest-dkms"), {"profile": "default", "platform": "platform:el8"})]
        assert mods.actions() == ["dnf_module.install"]

    def test_default_profile_reports_what_dnf_installed(self, st, mods):
        mods.set("dnf_module.info", stream(), stream("latest-dkms", ["default"], "enabled"))
        mods.set("dnf_module.install", {})
        ret = st.installed("nvidia-driver", "latest-dkms")
        assert ret["changes"]["profiles"] == {"old": [], "new": ["default"]}

    def test_default_profile_pending_in_test_mode(self, st, mods, opts):
        opts["test"] = True
        mods.set("dnf_module.info", stream())
        assert st.installed("nvidia-driver", "latest-dkms")["changes"]["profiles"] == {"old": [], "new": ["(default)"]}

    def test_missing_profile_installs_it(self, st, mods):
        mods.set("dnf_module.info", stream("latest-dkms", ["default"], "enabled"),
                 stream("latest-dkms", ["default", "fm"], "enabled"))
        mods.set("dnf_module.install", {})
        ret = st.installed("nvidia-driver", "latest-dkms", profile="fm")
        assert ret["result"] is True
        assert "stream" not in ret["changes"]
        assert ret["changes"]["profiles"] == {"old": ["default"], "new": ["default", "fm"]}
        assert mods.actions() == ["dnf_module.install"]

    def test_enabled_without_profiles_installs(self, st, mods, opts):
        opts["test"] = True
        mods.set("dnf_module.info", stream("latest-dkms", [], "enabled"))
        ret = st.installed("nvidia-driver", "latest-dkms")
        assert ret["changes"] == {"profiles": {"old": [], "new": ["(default)"]}}
        assert ret["comment"] == "Module stream nvidia-driver:latest-dkms would be installed"


def test_numeric_stream_of_a_converged_node(st, mods):
    mods.set("dnf_module.info", stream("550", ["default"], "enabled"))
    mods.set("dnf_module.problems", [])
    mods.set("dnf_module.switch_to", stream("550", ["default"], "enabled"))
    ret = st.installed("nvidia-driver", 550, profile="default")
    assert ret["result"] is True and ret["changes"] == {}
    assert mods.actions() == []


class TestSwitch:
    def test_other_stream_switches(self, st, mods):
        mods.set("dnf_module.info", stream("550-dkms", ["default"], "enabled"),
                 stream("latest-dkms", ["default"], "enabled"))
        mods.set("dnf_module.switch_to", {})
        ret = st.installed("nvidia-driver", "latest-dkms", profile="default")
        assert ret["result"] is True
        assert ret["changes"] == {"stream": {"old": "550-dkms", "new": "latest-dkms"},
                                  "profiles": {"old": ["default"], "new": ["default"]}}
        assert mods.actions() == ["dnf_module.switch_to"]
        assert mods.called("dnf_module.switch_to") == [
            (("nvidia-driver", "latest-dkms"), {"profile": "default", "platform": None})]
        assert ret["comment"] == (
            "Module nvidia-driver was switched from stream 550-dkms to nvidia-driver:latest-dkms/default")

    def test_switch_test_mode(self, st, mods, opts):
        opts["test"] = True
        mods.set("dnf_module.info", stream("550-dkms", ["default"], "enabled"))
        ret = st.installed("nvidia-driver", "latest-dkms", profile="default")
        assert ret["result"] is None
        assert ret["changes"]["stream"] == {"old": "550-dkms", "new": "latest-dkms"}
        assert "would be switched" in ret["comment"]
        assert mods.actions() == []


# What `dnf check` said after `dnf module switch-to nvidia-driver:550-dkms` failed to
# unpack nvidia-driver 550 (a directory where its firmware file goes) on the node.
HALF_SWITCHED = [
    "kmod-nvidia-latest-dkms-3:550.127.08-1.el8.x86_64 has missing requires of nvidia-driver = 3:550.127.08-1.el8",
    "nvidia-driver-3:580.105.08-1.el8.x86_64 has missing requires of nvidia-driver-cuda-libs = 3:580.105.08-1.el8",
]


class TestRepair:
    def test_recorded_stream_with_broken_packages_is_synced(self, st, mods):
        mods.set("dnf_module.info", stream("550-dkms", ["default"], "enabled"))
        mods.set("dnf_module.problems", HALF_SWITCHED, [])
        mods.set("dnf_module.switch_to", {})
        ret = st.installed("nvidia-driver", "550-dkms", profile="default", platform="platform:el8")
        assert ret["result"] is True
        assert ret["changes"] == {"repaired": HALF_SWITCHED}
        assert ret["comment"].startswith("Module stream nvidia-driver:550-dkms/default was repaired")
        assert mods.actions() == ["dnf_module.switch_to"]
        assert mods.called("dnf_module.switch_to") == [
            (("nvidia-driver", "550-dkms"), {"profile": "default", "platform": "platform:el8"})]

    def test_repair_test_mode(self, st, mods, opts):
        opts["test"] = True
        mods.set("dnf_module.info", stream("550-dkms", ["default"], "enabled"))
        mods.set("dnf_module.problems", HALF_SWITCHED)
        ret = st.installed("nvidia-driver", "550-dkms", profile="default")
        assert ret["result"] is None
        assert ret["changes"] == {"repaired": HALF_SWITCHED}
        assert "would be repaired" in ret["comment"]
        assert mods.actions() == []

    def test_repair_that_leaves_problems_fails_naming_them(self, st, mods):
        mods.set("dnf_module.info", stream("550-dkms", ["default"], "enabled"))
        mods.set("dnf_module.problems", HALF_SWITCHED, HALF_SWITCHED[:1])
        mods.set("dnf_module.switch_to", {})
        ret = st.installed("nvidia-driver", "550-dkms", profile="default")
        assert ret["result"] is False
        assert HALF_SWITCHED[0] in ret["comment"]
        assert "dnf distro-sync" in ret["comment"]


class TestReset:
    def test_disabled_resets_then_installs(self, st, mods):
        mods.set("dnf_module.info", stream("550-dkms", [], "disabled"), stream("latest-dkms", ["default"], "enabled"))
        mods.set("dnf_module.reset", {})
        mods.set("dnf_module.install", {})
        ret = st.installed("nvidia-driver", "latest-dkms", platform="platform:el9")
        assert ret["result"] is True
        assert mods.actions() == ["dnf_module.reset", "dnf_module.install"]
        assert mods.called("dnf_module.reset") == [(("nvidia-driver",), {"platform": "platform:el9"})]
        assert ret["changes"]["stream"] == {"old": None, "new": "latest-dkms"}
        assert ret["comment"] == "Module nvidia-driver was reset (it was disabled) and nvidia-driver:latest-dkms installed"

    def test_disabled_test_mode(self, st, mods, opts):
        opts["test"] = True
        mods.set("dnf_module.info", stream("550-dkms", [], "disabled"))
        ret = st.installed("nvidia-driver", "latest-dkms")
        assert ret["result"] is None and "would be reset" in ret["comment"]
        assert mods.actions() == []


class TestFailures:
    def test_dnf_failure_is_reported(self, st, mods):
        mods.set("dnf_module.info", stream())
        mods.set("dnf_module.install", CommandExecutionError("installing module stream x failed: no such stream"))
        ret = st.installed("nvidia-driver", "999-dkms")
        assert ret["result"] is False
        assert ret["comment"] == "installing module stream x failed: no such stream"

    def test_dnf_success_without_effect_fails(self, st, mods):
        mods.set("dnf_module.info", stream())
        mods.set("dnf_module.install", {})
        ret = st.installed("nvidia-driver", "latest-dkms", profile="default")
        assert ret["result"] is False
        assert "/etc/dnf/modules.d/nvidia-driver.module" in ret["comment"]
        assert "dnf module install nvidia-driver:latest-dkms/default" in ret["comment"]


class TestDnfCheckOnlyWhenPackagesChanged:
    """dnf check's answer depends on the rpm database alone: after a clean check, the same
    installed packages (pkg.list_pkgs, read once per run by Salt) need no dnf process."""

    @pytest.fixture
    def packages(self, mods, opts, tmp_path):
        import salt.modules.yumpkg

        mods.add("pkg.list_pkgs", salt.modules.yumpkg.list_pkgs)
        opts["cachedir"] = str(tmp_path)
        installed = {"nvidia-driver": [{"epoch": "3", "version": "580.105.08", "release": "1.el8", "arch": "x86_64"}]}
        mods.set("pkg.list_pkgs", lambda **_: installed)
        mods.set("dnf_module.info", stream("latest-dkms", ["default"], "enabled"))
        return installed

    def test_same_packages_after_a_clean_check_run_no_dnf(self, st, mods, packages):
        mods.set("dnf_module.problems", [])
        for _ in range(3):
            assert st.installed("nvidia-driver", "latest-dkms")["result"] is True
        assert len(mods.called("dnf_module.problems")) == 1

    def test_changed_packages_check_again(self, st, mods, packages):
        mods.set("dnf_module.problems", [])
        st.installed("nvidia-driver", "latest-dkms")
        packages["nvidia-driver"][0]["version"] = "550.127.08"
        st.installed("nvidia-driver", "latest-dkms")
        assert len(mods.called("dnf_module.problems")) == 2

    def test_a_check_that_found_problems_is_not_remembered(self, st, mods, packages):
        mods.set("dnf_module.problems", HALF_SWITCHED)
        mods.set("dnf_module.switch_to", None)
        st.installed("nvidia-driver", "latest-dkms")
        st.installed("nvidia-driver", "latest-dkms")
        assert len(mods.called("dnf_module.problems")) >= 3

    def test_test_mode_records_nothing(self, st, mods, opts, packages, tmp_path):
        opts["test"] = True
        mods.set("dnf_module.problems", [])
        st.installed("nvidia-driver", "latest-dkms")
        st.installed("nvidia-driver", "latest-dkms")
        assert len(mods.called("dnf_module.problems")) == 2
        assert not (tmp_path / "nvgpu").exists()
