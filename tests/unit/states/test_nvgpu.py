"""
The nvgpu states (_states/nvgpu.py) over autospecced execution functions: the difference
each state computes; test=True (result None, the exact pending changes, and no call of a
function that changes the node); a converged node (no changes, no action); failures with
comments that say what to do. Real runs are in tests/functional/.
"""

import glob
import hashlib
import json
import os
import re

import nvgpu_node
import pytest
import salt.modules.cmdmod
import salt.modules.cp
import salt.modules.file
import salt.modules.systemd_service
import salt.modules.yumpkg
import salt.states.selinux
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.nvidia import NVIDIA_HOOK as HOOK
from tests.unit.fakes import ACTIONS, FakeSalt
from tests.unit.loader import load, real

STATES = load("_states/nvgpu.py")
EXECUTION = ("nvgpu", "nvgpu_toolkit", "nvgpu_selinux", "nvgpu_rootless")
OTHERS = {"cp.cache_file": salt.modules.cp.cache_file, "file.check_hash": salt.modules.file.check_hash,
          "file.remove": salt.modules.file.remove, "pkg.version": salt.modules.yumpkg.version,
          **{f"service.{name}": getattr(salt.modules.systemd_service, name)
             for name in ("enabled", "enable", "disable", "status", "start", "stop", "restart")},
          "cmd.run_all": salt.modules.cmdmod.run_all}

HOOK_PATH = nvgpu_node.OCI_HOOK_PATH
CDI_PATH = nvgpu_node.CDI_SPEC_PATH
NO_CGROUPS = "nvidia-container-cli.no-cgroups"


@pytest.fixture
def mods():
    """__salt__: the real execution functions, autospecced."""
    fake = FakeSalt(*(real(f"_modules/{name}.py") for name in EXECUTION), functions=OTHERS)
    # A node running its installed driver, unless a test says otherwise.
    return fake.set("nvgpu.reboot_required", {"required": False, "reason": None}).set("nvgpu.cuda_processes", 0)


@pytest.fixture
def states():
    """__states__: the real dnf_module states and Salt's selinux.boolean, autospecced."""
    return FakeSalt(real("_states/dnf_module.py"), functions={"selinux.boolean": salt.states.selinux.boolean})


@pytest.fixture
def opts():
    return {"test": False}


@pytest.fixture
def configure_loader_modules(mods, states, opts):
    return {STATES: {"__salt__": mods, "__states__": states, "__opts__": opts, "__context__": {}, "__grains__": {}}}


@pytest.fixture
def st():
    return STATES


def test_every_action_is_a_real_function():
    everything = FakeSalt(
        *(real(f"_modules/{name}.py") for name in (*EXECUTION, "dnf_module", "dnf_versionlock", "nvgpu_cuda",
                                                   "nvgpu_initramfs")),
        real("_states/dnf_module.py"),
        functions=OTHERS,
    )
    assert ACTIONS <= set(everything), sorted(ACTIONS - set(everything))


def test_virtual(st, mods):
    assert st.__virtual__() == "nvgpu"
    del mods["nvgpu.load_modules"]
    loaded, reason = st.__virtual__()
    assert loaded is False and "sync _modules" in reason


# ---------------------------------------------------------------------------- kernel modules


@pytest.fixture
def same_driver(mods):
    mods.set("nvgpu.driver_version", "580.105.08")
    mods.set("nvgpu.installed_driver_version", "580.105.08")
    return mods


class TestModulesLoaded:
    def test_already(self, st, same_driver):
        same_driver.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True, "nouveau": False})
        ret = st.modules_loaded("nvidia")
        assert ret == {"name": "nvidia", "result": True, "changes": {},
                       "comment": "Kernel modules nvidia, nvidia_uvm are already loaded"}
        assert same_driver.actions() == []

    def test_test_mode_names_missing(self, st, same_driver, opts):
        opts["test"] = True
        same_driver.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": False})
        ret = st.modules_loaded("nvidia")
        assert ret["result"] is None
        assert ret["changes"] == {"loaded": ["nvidia_uvm"]}
        assert ret["comment"] == "The kernel modules nvidia_uvm would be loaded"
        assert same_driver.actions() == []

    def test_loads(self, st, mods):
        mods.set("nvgpu.loaded_modules", {"nvidia": False, "nvidia_uvm": False})
        mods.set("nvgpu.load_modules", {"modules": {}, "device_nodes": ["/dev/nvidia0"], "changed": True})
        ret = st.modules_loaded("nvidia", uvm=False)
        assert ret["result"] is True
        assert ret["changes"] == {"loaded": ["nvidia"], "device_nodes": ["/dev/nvidia0"]}
        assert ret["comment"] == "The kernel modules nvidia were loaded"
        assert mods.called("nvgpu.load_modules") == [((), {"uvm": False})]
        assert "nvgpu.driver_version" not in mods.names(), "no driver loaded: no version to compare"

    def test_reloads_upgraded_driver(self, st, mods):
        mods.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
        mods.set("nvgpu.driver_version", "550.127.08", "580.105.08")
        mods.set("nvgpu.installed_driver_version", "580.105.08")
        mods.set("nvgpu.reload_driver", {"modules": {}, "device_nodes": ["/dev/nvidia0"], "changed": True})
        ret = st.modules_loaded("nvidia")
        assert ret["result"] is True
        assert ret["changes"] == {"driver_version": {"old": "550.127.08", "new": "580.105.08"},
                                  "device_nodes": ["/dev/nvidia0"]}
        assert ret["comment"] == "The driver 550.127.08 was reloaded as the installed 580.105.08"
        assert mods.actions() == ["nvgpu.reload_driver"]
        assert mods.called("nvgpu.reload_driver") == [((), {"uvm": True})]

    def test_reload_test_mode_and_opt_out(self, st, mods, opts):
        opts["test"] = True
        mods.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
        mods.set("nvgpu.driver_version", "550.127.08")
        mods.set("nvgpu.installed_driver_version", "580.105.08")
        ret = st.modules_loaded("nvidia")
        assert ret["result"] is None
        assert ret["changes"] == {"driver_version": {"old": "550.127.08", "new": "580.105.08"}}
        assert "would be reloaded" in ret["comment"]
        assert st.modules_loaded("nvidia", reload_on_upgrade=False)["changes"] == {}
        assert mods.actions() == []

    def test_no_installed_version_is_no_upgrade(self, st, mods):
        mods.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
        mods.set("nvgpu.driver_version", "550.127.08")
        mods.set("nvgpu.installed_driver_version", None)
        assert st.modules_loaded("nvidia")["changes"] == {}

    def test_reload_still_old_fails_with_advice(self, st, mods):
        mods.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
        mods.set("nvgpu.driver_version", "550.127.08")
        mods.set("nvgpu.installed_driver_version", "580.105.08")
        mods.set("nvgpu.reload_driver", {"modules": {}, "device_nodes": [], "changed": True})
        ret = st.modules_loaded("nvidia")
        assert ret["result"] is False
        assert "dkms status" in ret["comment"] and "550.127.08 is loaded" in ret["comment"]
        assert ret["changes"] == {"driver_version": {"old": "550.127.08", "new": "580.105.08"}}

    def test_reload_in_use_fails(self, st, mods):
        mods.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
        mods.set("nvgpu.driver_version", "550.127.08")
        mods.set("nvgpu.installed_driver_version", "580.105.08")
        mods.set("nvgpu.reload_driver", CommandExecutionError("unloading failed: Module nvidia is in use; reboot"))
        ret = st.modules_loaded("nvidia")
        assert ret["result"] is False
        assert ret["comment"].startswith("Loading the NVIDIA kernel modules failed: unloading failed")

    def test_failure_carries_cause(self, st, mods):
        mods.set("nvgpu.loaded_modules", {"nvidia": False, "nvidia_uvm": False})
        mods.set("nvgpu.load_modules", CommandExecutionError("nvidia-modprobe failed\nLikely cause: nouveau"))
        ret = st.modules_loaded("nvidia")
        assert ret["result"] is False
        assert "nouveau" in ret["comment"]
        assert ret["changes"] == {"loaded": ["nvidia", "nvidia_uvm"]}


class TestKernelModuleUnloaded:
    @pytest.mark.parametrize("function", ["kernel_module_unloaded", "module_unloaded"])
    def test_unloads(self, st, mods, function):
        mods.set("nvgpu.kernel_module_loaded", True, False)
        mods.set("nvgpu.unload_kernel_module", True)
        ret = getattr(st, function)("nouveau")
        assert ret == {"name": "nouveau", "result": True, "changes": {"unloaded": ["nouveau"]},
                       "comment": "Unloaded kernel module nouveau"}
        assert mods.called("nvgpu.unload_kernel_module") == [(("nouveau",), {})]

    @pytest.mark.parametrize("function", ["kernel_module_unloaded", "module_unloaded"])
    def test_not_loaded_runs_nothing(self, st, mods, function):
        mods.set("nvgpu.kernel_module_loaded", False)
        ret = getattr(st, function)("nouveau")
        assert ret["result"] is True and ret["changes"] == {}
        assert ret["comment"] == "Kernel module nouveau is not loaded"
        assert mods.actions() == []

    def test_test_mode(self, st, mods, opts):
        opts["test"] = True
        mods.set("nvgpu.kernel_module_loaded", True)
        ret = st.kernel_module_unloaded("nouveau")
        assert ret["result"] is None and ret["changes"] == {"unloaded": ["nouveau"]}
        assert mods.actions() == []

    def test_builtin_fails_with_advice(self, st, mods):
        mods.set("nvgpu.kernel_module_loaded", True)
        mods.set("nvgpu.unload_kernel_module", True)
        ret = st.kernel_module_unloaded("nouveau")
        assert ret["result"] is False
        assert "reboot" in ret["comment"] and "rd.driver.blacklist=nouveau" in ret["comment"]
        assert ret["changes"] == {}

    def test_in_use_fails_with_the_modules_words(self, st, mods):
        mods.set("nvgpu.kernel_module_loaded", True)
        mods.set("nvgpu.unload_kernel_module", CommandExecutionError("modprobe: FATAL: Module nouveau is in use."))
        ret = st.kernel_module_unloaded("nouveau")
        assert ret["result"] is False and "is in use" in ret["comment"]


def test_module_stream_is_dnf_module_installed(st, states):
    answer = {"name": "nvidia-driver", "result": None, "changes": {"stream": {"old": None, "new": "latest-dkms"}},
              "comment": "would be installed"}
    states.set("dnf_module.installed", answer)
    assert st.module_stream("nvidia-driver", "latest-dkms", profile="default", platform="platform:el8") == answer
    assert states.called("dnf_module.installed") == [
        (("nvidia-driver", "latest-dkms"), {"profile": "default", "platform": "platform:el8"})]


# ---------------------------------------------------------------------------- container_toolkit


def spec(exists=True, driver="580.105.08", mode="0644", kind="nvidia.com/gpu", devices=("0", "all")):
    if not exists:
        return {"exists": False, "kind": None, "devices": [], "driver_version": None, "mode": None}
    return {"exists": True, "kind": kind, "devices": list(devices), "driver_version": driver, "mode": mode}


@pytest.fixture
def toolkit(mods):
    """A converged node: Podman 4.9.4, driver 580.105.08, a good CDI spec, no hook, no-cgroups set."""
    mods.set("nvgpu.podman_version", "4.9.4")
    mods.set("nvgpu.driver_version", "580.105.08")
    mods.set("nvgpu_toolkit.cdi_spec", spec())
    mods.set("nvgpu_toolkit.oci_hook_content", HOOK)
    mods.set("nvgpu_toolkit.oci_hook", None)
    mods.set("nvgpu_toolkit.config_value", True)
    mods.set("nvgpu_toolkit.cdi_generate", spec())
    mods.set("nvgpu_toolkit.write_oci_hook", HOOK)
    mods.set("nvgpu_toolkit.set_config", True)
    mods.set("nvgpu_toolkit.remove_oci_hook", True)
    mods.set("nvgpu_toolkit.cdi_refresh_shipped", False)
    return mods


class TestContainerToolkit:
    def test_converged_cdi(self, st, toolkit):
        ret = st.container_toolkit("gpu", mode="auto", rootless=True)
        assert ret["result"] is True and ret["changes"] == {}
        assert ret["comment"] == "NVIDIA container toolkit is ready, mode cdi (mode auto: Podman 4.9.4 -> cdi)"
        assert toolkit.actions() == []

    def test_converged_hook_asks_no_podman_version(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.oci_hook", HOOK)
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        ret = st.container_toolkit("gpu", mode="hook")
        assert ret["result"] is True and ret["changes"] == {}
        assert ret["comment"] == "NVIDIA container toolkit is ready, mode hook"
        assert "nvgpu.podman_version" not in toolkit.names()
        assert toolkit.actions() == []

    def test_hook_mode_removes_the_formulas_cdi_spec(self, st, toolkit):
        # Left from cdi mode, it would inject the GPU a second way and go stale at the next upgrade.
        toolkit.set("nvgpu_toolkit.oci_hook", HOOK)
        toolkit.set("file.remove", True)
        ret = st.container_toolkit("gpu", mode="hook")
        assert ret["changes"] == {"cdi_spec": {"old": CDI_PATH, "new": None}}
        assert toolkit.actions() == ["file.remove"]
        assert toolkit.called("file.remove") == [((CDI_PATH,), {})]

    def test_hook_mode_in_test_mode_only_says_it_would_remove_the_spec(self, st, toolkit, opts):
        opts["test"] = True
        toolkit.set("nvgpu_toolkit.oci_hook", HOOK)
        ret = st.container_toolkit("gpu", mode="hook")
        assert ret["result"] is None and ret["changes"] == {"cdi_spec": {"old": CDI_PATH, "new": None}}
        assert toolkit.actions() == []

    def test_hook_mode_keeps_a_spec_of_another_kind(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.oci_hook", HOOK)
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(kind="vendor.example/fpga"))
        ret = st.container_toolkit("gpu", mode="hook")
        assert ret["result"] is True and ret["changes"] == {}
        assert toolkit.actions() == []

    @pytest.mark.parametrize("podman", ["3.4.4", "4.0.3"])
    def test_auto_picks_hook_for_podman_before_4_1(self, st, toolkit, podman):
        toolkit.set("nvgpu.podman_version", podman)
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        ret = st.container_toolkit("gpu", mode="auto")
        assert ret["result"] is True
        assert ret["changes"] == {"oci_hook": {"old": "absent", "new": HOOK_PATH}}
        assert ret["comment"] == f"NVIDIA container toolkit changed: oci_hook (mode auto: Podman {podman} -> hook)"
        assert toolkit.actions() == ["nvgpu_toolkit.write_oci_hook"]
        assert toolkit.called("nvgpu_toolkit.write_oci_hook") == [((HOOK_PATH, nvgpu_node.OCI_HOOK_BINARY), {})]

    @pytest.mark.parametrize("podman", ["4.1.0", "4.9.4-rhel", "5.2.2"])
    def test_auto_picks_cdi_for_podman_4_1_on(self, st, toolkit, podman):
        toolkit.set("nvgpu.podman_version", podman)
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        ret = st.container_toolkit("gpu", mode="auto")
        assert set(ret["changes"]) == {"cdi_spec"}
        assert f"Podman {podman} -> cdi" in ret["comment"]
        assert toolkit.actions() == ["nvgpu_toolkit.cdi_generate"]

    def test_auto_without_podman_in_test_mode_is_pending(self, st, toolkit, opts):
        opts["test"] = True
        toolkit.set("nvgpu.podman_version", None)
        ret = st.container_toolkit("gpu", mode="auto")
        assert ret["result"] is None
        assert ret["changes"] == {"gpu_access": {"old": None, "new": "OCI hook or CDI spec, by Podman version"}}
        assert "decided once Podman is installed" in ret["comment"]
        assert toolkit.actions() == []

    def test_auto_without_podman_fails_with_advice(self, st, toolkit):
        toolkit.set("nvgpu.podman_version", None)
        ret = st.container_toolkit("gpu", mode="auto")
        assert ret["result"] is False
        assert "gpu:toolkit:mode" in ret["comment"] and "podman is not installed" in ret["comment"]
        assert toolkit.actions() == []

    def test_hook_different_content_rewritten(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.oci_hook", dict(HOOK, stages=["poststart"]))
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        ret = st.container_toolkit("gpu", mode="hook")
        assert ret["changes"] == {"oci_hook": {"old": "different", "new": HOOK_PATH}}
        assert toolkit.actions() == ["nvgpu_toolkit.write_oci_hook"]

    def test_hook_test_mode(self, st, toolkit, opts):
        opts["test"] = True
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        ret = st.container_toolkit("gpu", mode="hook", hook_path="/etc/containers/oci/hooks.d/nvidia.json",
                                   hook_binary="/opt/bin/nvidia-container-runtime-hook")
        assert ret["result"] is None
        assert ret["changes"] == {"oci_hook": {"old": "absent", "new": "/etc/containers/oci/hooks.d/nvidia.json"}}
        assert ret["comment"] == "NVIDIA container toolkit would change: oci_hook"
        assert toolkit.called("nvgpu_toolkit.oci_hook_content") == [(("/opt/bin/nvidia-container-runtime-hook",), {})]
        assert toolkit.called("nvgpu_toolkit.oci_hook") == [(("/etc/containers/oci/hooks.d/nvidia.json",), {})]
        assert toolkit.actions() == []

    def test_cdi_mode_removes_nvidias_hook(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.oci_hook", HOOK)
        ret = st.container_toolkit("gpu", mode="cdi")
        assert ret["changes"] == {"oci_hook": {"old": HOOK_PATH, "new": None}}
        assert toolkit.actions() == ["nvgpu_toolkit.remove_oci_hook"]
        assert toolkit.called("nvgpu_toolkit.remove_oci_hook") == [((HOOK_PATH,), {})]

    def test_cdi_mode_keeps_a_foreign_hook_file(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.oci_hook", dict(HOOK, stages=["poststart"]))
        ret = st.container_toolkit("gpu", mode="cdi")
        assert ret["result"] is True and ret["changes"] == {}
        assert toolkit.actions() == []

    def test_cdi_mode_hook_removal_in_test_mode(self, st, toolkit, opts):
        opts["test"] = True
        toolkit.set("nvgpu_toolkit.oci_hook", HOOK)
        ret = st.container_toolkit("gpu", mode="cdi")
        assert ret["result"] is None
        assert ret["changes"] == {"oci_hook": {"old": HOOK_PATH, "new": None}}
        assert toolkit.actions() == []

    def test_stale_cdi_spec_regenerated(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(driver="550.127.08", mode="0600"))
        ret = st.container_toolkit("gpu", mode="cdi", cdi_path="/var/run/cdi/nvidia.yaml")
        assert ret["result"] is True
        assert ret["changes"] == {
            "cdi_spec": {
                "old": {"path": "/var/run/cdi/nvidia.yaml", "driver_version": "550.127.08", "mode": "0600"},
                "new": {"path": "/var/run/cdi/nvidia.yaml", "driver_version": "580.105.08", "mode": "0644"},
                "reason": "not world-readable (mode 0600)",
            }
        }
        assert toolkit.called("nvgpu_toolkit.cdi_generate") == [(("/var/run/cdi/nvidia.yaml",), {})]

    def test_stale_cdi_spec_reason(self, st, toolkit, opts):
        opts["test"] = True
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(driver="550.127.08"))
        ret = st.container_toolkit("gpu", mode="cdi")
        change = ret["changes"]["cdi_spec"]
        assert change["reason"] == "stale: written for driver 550.127.08, driver 580.105.08 is loaded"
        assert change["old"]["driver_version"] == "550.127.08"
        assert change["new"]["driver_version"] == "580.105.08"
        assert toolkit.actions() == []

    @pytest.mark.parametrize(
        "current, reason",
        [
            (spec(exists=False), "missing"),
            (spec(mode="0600"), "not world-readable"),
            (spec(mode=None), "not world-readable"),
            (spec(kind="x"), "not a nvidia.com/gpu spec"),
            (spec(devices=()), "not a nvidia.com/gpu spec"),
        ],
    )
    def test_cdi_spec_problems(self, st, toolkit, opts, current, reason):
        opts["test"] = True
        toolkit.set("nvgpu_toolkit.cdi_spec", current)
        ret = st.container_toolkit("gpu", mode="cdi")
        assert ret["result"] is None
        assert ret["changes"]["cdi_spec"]["reason"].startswith(reason)
        assert (ret["changes"]["cdi_spec"]["old"] is None) == (not current["exists"])
        assert toolkit.actions() == []

    def test_spec_of_any_driver_is_kept_while_no_driver_is_loaded(self, st, toolkit):
        toolkit.set("nvgpu.driver_version", None)
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(driver="550.127.08"))
        assert st.container_toolkit("gpu", mode="cdi")["changes"] == {}
        assert toolkit.actions() == []

    def test_generated_spec_still_wrong_fails(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        toolkit.set("nvgpu_toolkit.cdi_generate", spec(driver="550.127.08"))
        ret = st.container_toolkit("gpu", mode="cdi")
        assert ret["result"] is False
        assert "still stale" in ret["comment"] and "nvidia-smi" in ret["comment"]
        assert ret["changes"]["cdi_spec"]["new"]["driver_version"] == "550.127.08"

    def test_generate_failure_reports_tool_message(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        toolkit.set("nvgpu_toolkit.cdi_generate", CommandExecutionError("generating the CDI spec failed: nvml error"))
        ret = st.container_toolkit("gpu", mode="cdi")
        assert ret["result"] is False
        assert ret["comment"] == (
            "Configuring the NVIDIA container toolkit failed: generating the CDI spec failed: nvml error")

    @pytest.mark.parametrize("mode, function, path, key, change", [
        ("cdi", "nvgpu_toolkit.cdi_generate", CDI_PATH, "gpu:toolkit:cdi_path", "cdi_spec"),
        ("hook", "nvgpu_toolkit.write_oci_hook", HOOK_PATH, "gpu:toolkit:hook_path", "oci_hook"),
    ])
    def test_a_file_that_cannot_be_written_names_its_pillar_key_and_is_no_change(
        self, st, toolkit, mode, function, path, key, change
    ):
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        err = nvgpu_node.os_error("write", path, OSError(30, "Read-only file system", path))
        toolkit.set(function, err)
        ret = st.container_toolkit("gpu", mode=mode)
        assert ret["result"] is False
        assert ret["comment"] == (f"Configuring the NVIDIA container toolkit failed: cannot write {path}: "
                                  f"Read-only file system (path from pillar {key})")
        assert change not in ret["changes"]

    def test_the_pillar_key_goes_on_the_first_line(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        err = CommandExecutionError(f"generating the CDI spec {CDI_PATH} failed: no space left on device\nFix: free space")
        err.path = CDI_PATH
        toolkit.set("nvgpu_toolkit.cdi_generate", err)
        first, fix = st.container_toolkit("gpu", mode="cdi")["comment"].splitlines()
        assert first.endswith("no space left on device (path from pillar gpu:toolkit:cdi_path)")
        assert fix == "Fix: free space"

    def test_a_relative_path_is_refused_naming_its_pillar_key(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        try:
            nvgpu_node.require_absolute("nvidia.yaml")
        except SaltInvocationError as refused:
            toolkit.set("nvgpu_toolkit.cdi_generate", refused)
        ret = st.container_toolkit("gpu", mode="cdi", cdi_path="nvidia.yaml")
        assert ret["result"] is False and ret["changes"] == {}
        assert ret["comment"] == ("Configuring the NVIDIA container toolkit failed: path must be an absolute path, "
                                  "not 'nvidia.yaml' (path from pillar gpu:toolkit:cdi_path)")

    @pytest.mark.parametrize("current", [False, None, "true"])
    def test_rootless_sets_no_cgroups_unless_true(self, st, toolkit, current):
        toolkit.set("nvgpu_toolkit.config_value", current)
        ret = st.container_toolkit("gpu", mode="cdi", rootless=True)
        assert ret["changes"] == {"no-cgroups": {"old": current, "new": True}}
        assert toolkit.called("nvgpu_toolkit.set_config") == [((NO_CGROUPS, True), {})]

    def test_rootless_false_leaves_config(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.config_value", False)
        ret = st.container_toolkit("gpu", mode="cdi", rootless=False)
        assert ret["changes"] == {}
        assert "nvgpu_toolkit.config_value" not in toolkit.names()

    def test_no_cgroups_that_does_not_stick_fails(self, st, toolkit):
        toolkit.set("nvgpu_toolkit.config_value", False)
        toolkit.set("nvgpu_toolkit.set_config", False)
        ret = st.container_toolkit("gpu", mode="cdi", rootless=True)
        assert ret["result"] is False
        assert "config.toml does not say so" in ret["comment"]

    def test_fresh_test_mode_lists_spec_and_no_cgroups(self, st, toolkit, opts):
        opts["test"] = True
        toolkit.set("nvgpu_toolkit.config_value", None)
        toolkit.set("nvgpu_toolkit.cdi_spec", spec(exists=False))
        toolkit.set("nvgpu.driver_version", None)
        ret = st.container_toolkit("gpu", mode="cdi", rootless=True)
        assert ret["result"] is None
        assert ret["changes"] == {
            "cdi_spec": {"old": None, "new": {"path": CDI_PATH, "driver_version": None, "mode": "0644"},
                         "reason": "missing"},
            "no-cgroups": {"old": None, "new": True},
        }
        assert ret["comment"] == "NVIDIA container toolkit would change: cdi_spec, no-cgroups"
        assert toolkit.actions() == []

    def test_bad_mode(self, st, toolkit):
        ret = st.container_toolkit("gpu", mode="oci")
        assert ret["result"] is False
        assert "auto, hook, cdi" in ret["comment"]
        assert toolkit.calls == []


# ---------------------------------------------------------------------------- selinux_ready

PP = b"policy module package\n"
PP_SHA256 = hashlib.sha256(PP).hexdigest()


@pytest.fixture
def pp(tmp_path):
    path = tmp_path / "nvidia-container.pp"
    path.write_bytes(PP)
    return path


@pytest.fixture
def se(mods, pp):
    """SELinux enforcing, the policy installed, nothing to relabel; check_hash is Salt's own."""
    mods.set("nvgpu_selinux.mode", "Enforcing")
    mods.set("nvgpu_selinux.method", "module")
    mods.set("pkg.version", "2.221.0-1.module+el8.9.0")
    mods.set("nvgpu_selinux.policy_modules", ["container", "nvidia-container"])
    mods.set("nvgpu.list_container_files", {"devices": ["/dev/nvidia0"], "libraries": ["/usr/lib64/libcuda.so.1"]})
    mods.set("nvgpu_selinux.relabel_needed", [])
    mods.set("nvgpu_selinux.relabel", [])
    mods.set("nvgpu_selinux.install_policy", True)
    mods.set("cp.cache_file", str(pp))
    mods.set("file.check_hash", salt.modules.file.check_hash)
    return mods


def missing_then_installed(mods):
    mods.set("nvgpu_selinux.policy_modules", ["container"], ["container", "nvidia-container"])


REFRESH = "/var/run/cdi/nvidia.yaml"
UNITS = ["nvidia-cdi-refresh.path", "nvidia-cdi-refresh.service"]


@pytest.fixture
def refresh(toolkit):
    """Toolkit 1.18 with nvidia-cdi-refresh enabled and watching, its spec current, no formula spec."""
    for name in ("enabled", "enable", "disable", "status", "start", "stop", "restart"):
        toolkit.set(f"service.{name}", True)
    toolkit.set("nvgpu_toolkit.cdi_refresh_shipped", True)
    toolkit.set("file.remove", True)
    toolkit.set("nvgpu_toolkit.cdi_spec", lambda path: spec() if path == REFRESH else spec(exists=False))
    return toolkit


class TestCdiOwner:
    """Either way one spec for nvidia.com/gpu: the formula's, or nvidia-cdi-refresh's."""

    def test_auto_is_refresh_where_the_toolkit_ships_it(self, st, refresh):
        ret = st.container_toolkit("gpu", mode="cdi")
        assert ret["result"] is True and ret["changes"] == {}
        assert "CDI spec by nvidia-cdi-refresh" in ret["comment"]
        assert refresh.actions() == [] and "nvgpu_toolkit.cdi_generate" not in refresh.names()

    def test_refresh_enables_runs_it_after_a_driver_change_and_drops_the_formulas_spec(self, st, refresh):
        refresh.set("service.enabled", lambda name: name.endswith(".service"))
        refresh.set("service.status", False)
        specs = {REFRESH: [spec(driver="550.127.08"), spec()], CDI_PATH: [spec()]}
        refresh.set("nvgpu_toolkit.cdi_spec", lambda path: specs[path].pop(0) if len(specs[path]) > 1 else specs[path][0])
        ret = st.container_toolkit("gpu", mode="cdi", cdi_owner="refresh")
        assert ret["result"] is True, ret["comment"]
        assert ret["changes"]["cdi_refresh_enabled"] == {"old": ["nvidia-cdi-refresh.path"], "new": UNITS}
        assert ret["changes"]["cdi_refresh_watching"] == {"old": False, "new": True}
        assert ret["changes"]["cdi_spec"]["reason"].startswith("stale: written for driver 550.127.08")
        assert ret["changes"]["cdi_spec"]["new"]["driver_version"] == "580.105.08"
        assert ret["changes"]["formula_cdi_spec"] == {"old": CDI_PATH, "new": None}
        assert refresh.called("service.enable") == [(("nvidia-cdi-refresh.path",), {})]
        assert refresh.called("service.restart") == [(("nvidia-cdi-refresh.service",), {})]
        assert refresh.called("file.remove") == [((CDI_PATH,), {})]

    def test_refresh_that_leaves_a_stale_spec_fails_pointing_at_its_journal(self, st, refresh):
        refresh.set("nvgpu_toolkit.cdi_spec", lambda path: spec(driver="550.127.08") if path == REFRESH else spec(False))
        ret = st.container_toolkit("gpu", mode="cdi", cdi_owner="refresh")
        assert ret["result"] is False and "journalctl -u nvidia-cdi-refresh.service" in ret["comment"]

    def test_test_mode_says_it_all_and_does_nothing(self, st, refresh, opts):
        opts["test"] = True
        refresh.set("service.status", False)
        refresh.set("nvgpu_toolkit.cdi_spec", lambda path: spec(exists=False) if path == REFRESH else spec())
        ret = st.container_toolkit("gpu", mode="cdi")
        assert ret["result"] is None
        assert set(ret["changes"]) == {"cdi_refresh_watching", "cdi_spec", "formula_cdi_spec"}
        assert refresh.actions() == [] and "service.restart" not in refresh.names()

    def test_formula_owner_disables_the_refresh_units_and_removes_their_spec(self, st, refresh):
        refresh.set("nvgpu_toolkit.cdi_spec", lambda path: spec())
        ret = st.container_toolkit("gpu", mode="cdi", cdi_owner="formula")
        assert ret["result"] is True
        assert ret["changes"] == {"cdi_refresh_enabled": {"old": UNITS, "new": []},
                                  "refresh_cdi_spec": {"old": REFRESH, "new": None}}
        assert refresh.called("service.disable") == [((unit,), {}) for unit in UNITS]
        assert refresh.called("service.stop") == [((unit,), {}) for unit in UNITS]
        assert refresh.called("file.remove") == [((REFRESH,), {})]
        assert "CDI spec by the formula" in ret["comment"]

    def test_refresh_without_the_unit_fails_naming_the_toolkit_version(self, st, toolkit):
        ret = st.container_toolkit("gpu", mode="cdi", cdi_owner="refresh")
        assert ret["result"] is False and "1.18" in ret["comment"] and "cdi_owner formula" in ret["comment"]

    def test_bad_owner(self, st, toolkit):
        ret = st.container_toolkit("gpu", mode="cdi", cdi_owner="systemd")
        assert ret["result"] is False and "gpu:toolkit:cdi_owner" in ret["comment"]
        assert toolkit.calls == []


class TestSelinuxReady:
    def test_disabled_does_nothing(self, st, se):
        se.set("nvgpu_selinux.mode", "Disabled")
        ret = st.selinux_ready("gpu", policy_source="salt://gpu/files/nvidia-container.pp")
        assert ret["result"] is True and ret["changes"] == {}
        assert "disabled" in ret["comment"]
        assert se.names() == ["nvgpu_selinux.mode"]

    @pytest.mark.parametrize(
        "source",
        ["https://example.com/nvidia-container.pp", "HTTP://example.com/nvidia-container.pp",
         "Https://example.com/x.pp", "ftp://example.com/x.pp", "s3://bucket/x.pp"],
    )
    def test_remote_source_needs_hash(self, st, se, source):
        ret = st.selinux_ready("gpu", policy_source=source)
        assert ret["result"] is False
        assert "source_hash is required" in ret["comment"] and "gpu:selinux:policy_hash" in ret["comment"]
        assert se.actions() == [] and "cp.cache_file" not in se.names()

    def test_policy_source_required_for_the_module(self, st, se):
        ret = st.selinux_ready("gpu", policy_source="")
        assert ret["result"] is False and "gpu:selinux:policy_source" in ret["comment"]
        assert "method boolean" in ret["comment"]
        assert se.actions() == []

    def test_converged(self, st, se):
        ret = st.selinux_ready("gpu", policy_source="salt://gpu/files/nvidia-container.pp")
        assert ret["result"] is True and ret["changes"] == {}
        assert ret["comment"] == ("SELinux (Enforcing) is ready: nvidia-container installed (containers run as "
                                  "nvidia_container_t), labels correct")
        assert se.called("nvgpu_selinux.method") == [(("auto",), {})]
        assert se.actions() == []
        # Listing without -k: nvidia-container-cli must not load kernel modules for a state.
        assert se.called("nvgpu.list_container_files") == [((), {"load_kmods": False})]

    @pytest.mark.parametrize("form", ["sha256={}", "sha256:{}", "{}"])
    def test_installs_missing_policy_with_verified_hash(self, st, se, pp, form):
        missing_then_installed(se)
        source_hash = form.format(PP_SHA256)
        ret = st.selinux_ready("gpu", policy_source="https://example.com/x.pp", source_hash=source_hash)
        assert ret["result"] is True
        assert ret["changes"] == {"policy_module": {"old": None, "new": "nvidia-container"}}
        assert se.called("cp.cache_file") == [(("https://example.com/x.pp",), {"saltenv": "base"})]
        assert se.called("file.check_hash") == [((str(pp), source_hash), {})]
        assert se.called("nvgpu_selinux.install_policy") == [((str(pp),), {})]

    def test_upper_case_hash_is_the_same_hash(self, st, se):
        missing_then_installed(se)
        ret = st.selinux_ready("gpu", policy_source="https://example.com/x.pp", source_hash="sha256=" + PP_SHA256.upper())
        assert ret["result"] is True
        assert se.actions() == ["cp.cache_file", "nvgpu_selinux.install_policy"]

    def test_hash_mismatch_refuses(self, st, se):
        se.set("nvgpu_selinux.policy_modules", ["container"])
        ret = st.selinux_ready("gpu", policy_source="https://example.com/x.pp", source_hash="sha256=" + "cd" * 32)
        assert ret["result"] is False
        assert "does not match" in ret["comment"] and "gpu:selinux:policy_hash" in ret["comment"]
        assert se.called("nvgpu_selinux.install_policy") == []
        assert ret["changes"] == {"policy_module": {"old": None, "new": "nvidia-container"}}

    def test_unusable_hash_refuses(self, st, se):
        se.set("nvgpu_selinux.policy_modules", ["container"])
        ret = st.selinux_ready("gpu", policy_source="https://example.com/x.pp", source_hash="not-a-hash")
        assert ret["result"] is False
        assert ret["comment"].startswith("Preparing SELinux for GPU containers failed: Hash not-a-hash")
        assert se.called("nvgpu_selinux.install_policy") == []

    def test_salt_source_without_hash_is_not_checked(self, st, se, pp):
        missing_then_installed(se)
        ret = st.selinux_ready("gpu", policy_source="salt://gpu/files/nvidia-container.pp", saltenv="prod")
        assert ret["result"] is True
        assert se.called("cp.cache_file") == [(("salt://gpu/files/nvidia-container.pp",), {"saltenv": "prod"})]
        assert se.called("file.check_hash") == []
        assert se.called("nvgpu_selinux.install_policy") == [((str(pp),), {})]

    @pytest.mark.parametrize("scheme", ["", "file://"])
    def test_local_source_is_not_fetched(self, st, se, pp, scheme):
        missing_then_installed(se)
        ret = st.selinux_ready("gpu", policy_source=f"{scheme}{pp}")
        assert ret["result"] is True
        assert se.called("nvgpu_selinux.install_policy") == [((str(pp),), {})]
        assert se.called("cp.cache_file") == []

    def test_missing_local_source(self, st, se, tmp_path):
        se.set("nvgpu_selinux.policy_modules", ["container"])
        ret = st.selinux_ready("gpu", policy_source=str(tmp_path / "absent.pp"))
        assert ret["result"] is False
        assert f"{tmp_path / 'absent.pp'} does not exist" in ret["comment"]
        assert se.called("nvgpu_selinux.install_policy") == []

    def test_fetch_failure(self, st, se):
        se.set("nvgpu_selinux.policy_modules", ["container"])
        se.set("cp.cache_file", "")
        ret = st.selinux_ready("gpu", policy_source="salt://gpu/files/nvidia-container.pp")
        assert ret["result"] is False
        assert "could not fetch" in ret["comment"] and "gpu:selinux:policy_source" in ret["comment"]

    def test_package_with_another_module_name_fails(self, st, se, pp):
        se.set("nvgpu_selinux.policy_modules", ["container"])
        ret = st.selinux_ready("gpu", policy_source=str(pp))
        assert ret["result"] is False
        assert "set module_name" in ret["comment"]
        assert ret["changes"] == {"policy_module": {"old": None, "new": "nvidia-container"}}

    def test_test_mode_fetches_nothing(self, st, se, opts):
        opts["test"] = True
        se.set("nvgpu_selinux.policy_modules", ["container"])
        se.set("nvgpu_selinux.relabel_needed", lambda paths, recursive=False: ["/dev/nvidia0"] if recursive else [])
        ret = st.selinux_ready("gpu", policy_source="https://example.com/x.pp", source_hash="sha256=" + PP_SHA256)
        assert ret["result"] is None
        assert ret["changes"] == {
            "policy_module": {"old": None, "new": "nvidia-container"},
            "relabelled": ["/dev/nvidia0"],
        }
        assert ret["comment"] == "SELinux (Enforcing) would change: policy_module, relabelled"
        assert se.actions() == []
        assert se.called("file.check_hash") == []

    def test_relabels_only_wrong_paths(self, st, se):
        se.set("nvgpu_selinux.relabel_needed",
               ["/usr/lib64/libcuda.so.1"], ["/dev/nvidia0", "/usr/lib64/libcuda.so.1"], [])
        ret = st.selinux_ready("gpu", policy_source="/root/nvidia-container.pp")
        assert ret["result"] is True
        assert ret["changes"] == {"relabelled": ["/usr/lib64/libcuda.so.1", "/dev/nvidia0"]}
        assert se.called("nvgpu_selinux.relabel") == [((["/usr/lib64/libcuda.so.1", "/dev/nvidia0"],), {})]
        assert se.called("nvgpu_selinux.relabel_needed") == [
            ((["/dev/nvidia0", "/usr/lib64/libcuda.so.1"],), {}),
            ((["/dev"],), {"recursive": True}),
            ((["/usr/lib64/libcuda.so.1", "/dev/nvidia0"],), {}),
        ]

    def test_labels_still_wrong_after_restorecon_fail(self, st, se):
        se.set("nvgpu_selinux.relabel_needed", ["/dev/nvidia0"])
        ret = st.selinux_ready("gpu", policy_source="/root/nvidia-container.pp")
        assert ret["result"] is False
        assert "still have wrong labels: /dev/nvidia0" in ret["comment"] and "semanage fcontext" in ret["comment"]

    def test_relabel_false_looks_at_no_labels(self, st, se):
        se.set("nvgpu_selinux.relabel_needed", ["/dev/nvidia0"])
        ret = st.selinux_ready("gpu", policy_source="/root/nvidia-container.pp", relabel=False)
        assert ret["result"] is True and ret["changes"] == {}
        assert "nvgpu.list_container_files" not in se.names()

    def test_toolkit_not_installed_yet_in_test_mode(self, st, se, opts):
        opts["test"] = True
        se.set("nvgpu.list_container_files", CommandExecutionError("nvidia-container-cli not found in PATH"))
        ret = st.selinux_ready("gpu", policy_source="/root/nvidia-container.pp")
        assert ret["result"] is None
        assert ret["changes"] == {"relabelled": ["(files listed by nvidia-container-cli, once it is installed)"]}
        assert se.actions() == []

    def test_toolkit_not_installed_fails(self, st, se):
        se.set("nvgpu.list_container_files", CommandExecutionError("nvidia-container-cli not found in PATH"))
        ret = st.selinux_ready("gpu", policy_source="/root/nvidia-container.pp")
        assert ret["result"] is False
        assert "nvidia-container-cli not found" in ret["comment"]


class TestSelinuxBoolean:
    """method boolean (or auto where the policy defines it): Salt's selinux.boolean state."""

    CHANGED = {nvgpu_node.SELINUX_BOOLEAN: {"old": ("off", "off"), "new": ("on", "on")}}

    @pytest.fixture
    def boolean(self, se, states):
        se.set("nvgpu_selinux.method", "boolean")
        states.set("selinux.boolean", {"name": nvgpu_node.SELINUX_BOOLEAN, "result": True, "changes": self.CHANGED,
                                       "comment": "The following booleans have been changed: "
                                                  "container_use_xserver_devices"})
        return states

    def test_turns_the_boolean_on_persistently_through_salts_state(self, st, se, boolean):
        ret = st.selinux_ready("gpu", method="auto")
        assert ret["result"] is True
        assert ret["changes"] == {"boolean": self.CHANGED}
        assert boolean.called("selinux.boolean") == [
            ((), {"name": "container_use_xserver_devices", "value": True, "persist": True})]
        # No policy module is looked at, fetched or installed; labels are still checked.
        assert "nvgpu_selinux.policy_modules" not in se.names() and "cp.cache_file" not in se.names()
        assert "nvgpu_selinux.relabel_needed" in se.names()

    def test_converged(self, st, se, boolean):
        boolean.set("selinux.boolean", {"name": "x", "result": True, "changes": {},
                                        "comment": "The following booleans were in the correct state: x"})
        ret = st.selinux_ready("gpu", method="boolean")
        assert ret["result"] is True and ret["changes"] == {}
        assert ret["comment"] == ("SELinux (Enforcing) is ready: boolean container_use_xserver_devices on "
                                  "(containers run as container_t), labels correct")

    def test_test_mode_passes_salts_pending_change_on(self, st, se, boolean, opts):
        opts["test"] = True
        boolean.set("selinux.boolean", {"name": "x", "result": None, "changes": self.CHANGED,
                                        "comment": "The following booleans would be changed: x"})
        ret = st.selinux_ready("gpu", method="boolean")
        assert ret["result"] is None and ret["changes"] == {"boolean": self.CHANGED}
        assert se.actions() == []

    def test_salts_failure_fails_the_state(self, st, se, boolean):
        boolean.set("selinux.boolean", {"name": "x", "result": False, "changes": {},
                                        "comment": "Boolean container_use_xserver_devices is not available"})
        ret = st.selinux_ready("gpu", method="boolean")
        assert ret["result"] is False
        assert "is not available" in ret["comment"] and "container_use_xserver_devices" in ret["comment"]

    def test_without_salts_selinux_module_names_the_package(self, st, se, boolean):
        del boolean["selinux.boolean"]
        ret = st.selinux_ready("gpu", method="boolean")
        assert ret["result"] is False and "policycoreutils-python-utils" in ret["comment"]

    def test_auto_before_container_selinux_is_installed_says_what_will_decide(self, st, se, opts):
        # test=True on a fresh node: Podman (and with it container-selinux) is not there yet.
        opts["test"] = True
        se.set("pkg.version", "")
        ret = st.selinux_ready("gpu", method="auto", policy_source="/root/nvidia-container.pp")
        assert ret["result"] is None
        assert "container-selinux" in ret["changes"]["method"]["new"]
        assert "policy_module" not in ret["changes"]
        assert se.called("pkg.version") == [(("container-selinux",), {})]

    def test_bad_method(self, st, se):
        ret = st.selinux_ready("gpu", method="on")
        assert ret["result"] is False and "gpu:selinux:method" in ret["comment"]
        assert se.calls == []


# ---------------------------------------------------------------------------- user_lingers


class TestUserLingers:
    def test_lingering_user_changes_nothing(self, st, mods):
        mods.set("nvgpu_rootless.lingers", True)
        ret = st.user_lingers("gpuuser")
        assert ret["result"] is True and ret["changes"] == {} and ret["comment"] == "User gpuuser lingers"
        assert mods.actions() == []

    def test_test_mode_says_what_would_change_and_changes_nothing(self, st, mods, opts):
        opts["test"] = True
        mods.set("nvgpu_rootless.lingers", False)
        ret = st.user_lingers("gpuuser")
        assert ret["result"] is None and ret["changes"] == {"linger": {"old": False, "new": True}}
        assert mods.actions() == []

    def test_turns_lingering_on(self, st, mods):
        mods.set("nvgpu_rootless.lingers", False)
        mods.set("nvgpu_rootless.enable_linger", True)
        ret = st.user_lingers("gpuuser")
        assert ret["result"] is True and ret["changes"] == {"linger": {"old": False, "new": True}}
        assert mods.actions() == ["nvgpu_rootless.enable_linger"]

    def test_a_failure_says_why(self, st, mods):
        mods.set("nvgpu_rootless.lingers", False)
        mods.set("nvgpu_rootless.enable_linger", CommandExecutionError("turning lingering on for gpuuser failed: no logind"))
        ret = st.user_lingers("gpuuser")
        assert ret["result"] is False and "no logind" in ret["comment"] and ret["changes"] == {}


# ---------------------------------------------------------------------------- subids_present


class TestSubidsPresent:
    def test_keeps_existing_range(self, st, mods):
        mods.set("nvgpu_rootless.subids", [{"start": 100000, "count": 65536}])
        ret = st.subids_present("gpuuser")
        assert ret["result"] is True and ret["changes"] == {}
        assert ret["comment"] == "User gpuuser has subuid and subgid ranges"
        assert mods.called("nvgpu_rootless.subids") == [(("gpuuser",), {"kind": "subuid"}),
                                                         (("gpuuser",), {"kind": "subgid"})]
        assert mods.actions() == []

    def test_allocates_free_range(self, st, mods):
        mods.set("nvgpu_rootless.subids", [])
        mods.set("nvgpu_rootless.free_subid_start", 165536)
        mods.set("nvgpu_rootless.set_subids", [{"start": 165536, "count": 65536}])
        mods.set("nvgpu_rootless.migrate", True)
        ret = st.subids_present("gpuuser")
        assert ret["changes"] == {
            "subuid": {"old": [], "new": [{"start": 165536, "count": 65536}]},
            "subgid": {"old": [], "new": [{"start": 165536, "count": 65536}]},
        }
        assert ret["comment"] == "Set subuid, subgid ranges of gpuuser"
        assert mods.called("nvgpu_rootless.set_subids") == [
            (("gpuuser", 165536, 65536), {"kind": "subuid"}),
            (("gpuuser", 165536, 65536), {"kind": "subgid"}),
        ]
        # Once, after both files: rootless Podman takes the new ranges.
        assert mods.actions()[-1] == "nvgpu_rootless.migrate"
        assert mods.called("nvgpu_rootless.migrate") == [(("gpuuser",), {})]

    def test_range_too_small_is_replaced(self, st, mods):
        mods.set("nvgpu_rootless.subids", [{"start": 100000, "count": 1000}], [{"start": 100000, "count": 65536}])
        mods.set("nvgpu_rootless.free_subid_start", 300000)
        mods.set("nvgpu_rootless.set_subids", [])
        mods.set("nvgpu_rootless.migrate", True)
        ret = st.subids_present("gpuuser", count="65536")
        assert ret["changes"] == {
            "subuid": {"old": [{"start": 100000, "count": 1000}], "new": [{"start": 300000, "count": 65536}]}}
        assert mods.called("nvgpu_rootless.free_subid_start") == [((65536,), {"kind": "subuid"})]

    def test_explicit_start_enforced_and_test_mode(self, st, mods, opts):
        opts["test"] = True
        mods.set("nvgpu_rootless.subids", [{"start": 100000, "count": 65536}])
        mods.set("nvgpu_rootless.overlaps", [])
        ret = st.subids_present("gpuuser", start=200000)
        assert ret["result"] is None
        assert ret["changes"]["subuid"] == {"old": [{"start": 100000, "count": 65536}],
                                            "new": [{"start": 200000, "count": 65536}]}
        assert ret["comment"] == "subuid, subgid ranges of gpuuser would be set"
        assert mods.actions() == []

    def test_explicit_start_overlapping_another_user_fails_and_changes_nothing(self, st, mods):
        mods.set("nvgpu_rootless.subids", [])
        mods.set("nvgpu_rootless.overlaps", [{"user": "alice", "start": 100000, "count": 65536}])
        ret = st.subids_present("gpuuser", start=150000)
        assert ret["result"] is False and ret["changes"] == {}
        assert ret["comment"] == ("subuid range 150000-215535 of gpuuser overlaps alice's 100000-165535; choose "
                                  "another start (gpu:rootless_users[].subuid_start)")
        assert mods.actions() == []

    def test_explicit_start_already_there(self, st, mods):
        mods.set("nvgpu_rootless.subids", [{"start": 200000, "count": 65536}])
        assert st.subids_present("gpuuser", start="200000")["changes"] == {}
        assert mods.actions() == []

    def test_usermod_failure(self, st, mods):
        mods.set("nvgpu_rootless.subids", [])
        mods.set("nvgpu_rootless.free_subid_start", 100000)
        mods.set("nvgpu_rootless.set_subids", CommandExecutionError("usermod: user 'gpuuser' does not exist"))
        ret = st.subids_present("gpuuser")
        assert ret["result"] is False
        assert ret["comment"] == "Setting subordinate id ranges of gpuuser failed: usermod: user 'gpuuser' does not exist"

    def test_bad_count(self, st, mods):
        ret = st.subids_present("gpuuser", count="many")
        assert ret["result"] is False and "invalid literal" in ret["comment"]
        assert mods.calls == []


# ---------------------------------------------------------------------------- vector_add_passes

PASSED = {"passed": True, "elements": 50000, "blocks": 196, "threads": 256, "mode": "cdi", "retcode": 0,
          "duration_s": 0.6, "command": ["podman", "run"], "stdout": "Test PASSED\n", "stderr": "",
          "diagnosis": None, "user": None}


# What nvgpu.validation_inputs reads on a converged node (a subset of its keys is enough here).
INPUTS = {"boot_id": "b1", "driver": "580.105.08", "cdi_specs": {"/etc/cdi/nvidia.yaml": "aa"}, "oci_hooks": {},
          "toolkit_config": "cc", "selinux": {"mode": "Disabled"}, "image_id": "ii", "subuid": None, "subgid": None}


@pytest.fixture
def node_inputs(mods, opts, tmp_path):
    """Salt's cachedir in a temporary directory, and what the node's inputs are now (a
    dict the test may change between runs)."""
    opts["cachedir"] = str(tmp_path / "cache")
    now = dict(INPUTS)
    mods.set("nvgpu.validation_inputs", lambda **_: dict(now))
    return now


@pytest.mark.usefixtures("node_inputs")
class TestVectorAddPasses:
    def test_passes(self, st, mods):
        mods.set("nvgpu.run_vector_add", PASSED)
        ret = st.vector_add_passes("root", image="localhost:5000/x:v1")
        assert ret["result"] is True and ret["changes"] == {}
        assert ret["comment"] == ("Vector add PASSED as root (mode cdi, 50000 elements, 196 blocks of 256 threads, "
                                  "0.6 s; ran: no earlier run recorded)")
        assert mods.called("nvgpu.run_vector_add") == [
            ((), {"user": None, "mode": "auto", "timeout": 300, "pull": "missing", "image": "localhost:5000/x:v1"})]

    def test_each_gpu_names_the_failed_ones(self, st, mods):
        gpus = [{"index": i, "uuid": f"GPU-{i}", "name": "NVIDIA H100", "pci": f"0000:{i}:00.0",
                 "passed": i != 1, "duration_s": 0.7} for i in range(3)]
        each = {"passed": False, "gpus": gpus, "mode": "cdi", "duration_s": 0.9, "diagnosis": {"cause": "x"},
                "failed_gpus": [{**gpus[1], "cause": "the GPU has an uncorrectable ECC memory error", "fix": "reset",
                                 "layer": "gpu"}]}
        mods.set("nvgpu.run_vector_add", each)
        ret = st.vector_add_passes("root", gpus="each")
        assert mods.called("nvgpu.run_vector_add")[0][1]["gpus"] == "each"
        assert ret["result"] is False and ret["changes"] == {}
        assert ret["comment"].splitlines()[:4] == [
            "Vector add FAILED as root on each of 3 GPU(s) (mode cdi, 0.9 s)",
            "GPU 0 (GPU-0, NVIDIA H100): PASSED (0.7 s)",
            "GPU 1 (GPU-1, NVIDIA H100): FAILED (0.7 s)",
            "GPU 2 (GPU-2, NVIDIA H100): PASSED (0.7 s)"]
        assert "GPU 1 (GPU-1): Cause: the GPU has an uncorrectable ECC memory error\nFix: reset" in ret["comment"]
        mods.set("nvgpu.run_vector_add", dict(each, passed=True, failed_gpus=[]))
        ret = st.vector_add_passes("root", gpus="each")
        assert ret["result"] is True and ret["comment"].startswith("Vector add PASSED as root on each of 3 GPU(s)")

    def test_default_image_is_the_modules(self, st, mods):
        mods.set("nvgpu.run_vector_add", PASSED)
        st.vector_add_passes("gpuuser", user="gpuuser", mode="hook", timeout=60, pull="never")
        assert mods.called("nvgpu.run_vector_add") == [
            ((), {"user": "gpuuser", "mode": "hook", "timeout": 60, "pull": "never"})]

    def test_failure_carries_diagnosis(self, st, mods):
        stderr = "".join(f"line {n}\n" for n in range(10)) + "Error: unresolvable CDI devices nvidia.com/gpu=all"
        failed = dict(PASSED, passed=False, retcode=126, stdout="", stderr=stderr,
                      diagnosis={"cause": "no CDI spec", "fix": "nvidia-ctk cdi generate"}, user="gpuuser")
        mods.set("nvgpu.run_vector_add", failed)
        ret = st.vector_add_passes("gpuuser", user="gpuuser")
        assert ret["result"] is False
        assert "Vector add FAILED as gpuuser (rootless) (mode cdi, exit 126)" in ret["comment"]
        assert "Cause: no CDI spec" in ret["comment"]
        assert "Fix: nvidia-ctk cdi generate" in ret["comment"]
        assert "Command: podman run" in ret["comment"]
        assert ret["comment"].endswith("Output: line 6\nline 7\nline 8\nline 9\n"
                                       "Error: unresolvable CDI devices nvidia.com/gpu=all")
        assert ret["changes"] == {}

    def test_failure_without_diagnosis(self, st, mods):
        mods.set("nvgpu.run_vector_add", dict(PASSED, passed=False, retcode=1, diagnosis=None))
        ret = st.vector_add_passes("root")
        assert ret["result"] is False
        assert "Cause: unknown" in ret["comment"] and "Fix: read the output below" in ret["comment"]

    def test_could_not_run(self, st, mods):
        mods.set("nvgpu.run_vector_add", SaltInvocationError("no such user 'gpuuser'"))
        ret = st.vector_add_passes("gpuuser", user="gpuuser")
        assert ret["result"] is False
        assert ret["comment"] == "The vector add could not run as gpuuser (rootless): no such user 'gpuuser'"

    def test_test_mode_runs_nothing(self, st, mods, opts):
        opts["test"] = True
        ret = st.vector_add_passes("root", mode="cdi")
        assert ret["result"] is None and ret["changes"] == {}
        assert ret["comment"] == "The vector add would run as root (mode cdi, image default; no earlier run recorded)"
        assert mods.names() == ["nvgpu.reboot_required", "nvgpu.validation_inputs"]


@pytest.mark.usefixtures("node_inputs")
class TestValidateWhenChanged:
    def passed_once(self, st, mods, **kwargs):
        mods.set("nvgpu.run_vector_add", PASSED)
        assert st.vector_add_passes("v", **kwargs)["result"] is True
        assert len(mods.called("nvgpu.run_vector_add")) == 1

    def test_same_inputs_after_a_pass_skip_the_container(self, st, mods):
        self.passed_once(st, mods, user="gpuuser")
        ret = st.vector_add_passes("v", user="gpuuser")
        assert ret["result"] is True and ret["changes"] == {}
        assert len(mods.called("nvgpu.run_vector_add")) == 1
        assert re.fullmatch(r"Vector add as gpuuser \(rootless\) skipped: it last PASSED at "
                            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ and nothing it depends on changed since .*",
                            ret["comment"]), ret["comment"]

    @pytest.mark.parametrize("key, value, words", [
        ("boot_id", "b2", "boot (boot id)"), ("driver", "550.127.08", "loaded driver version"),
        ("cdi_specs", {"/etc/cdi/nvidia.yaml": "ab"}, "CDI spec"), ("oci_hooks", {"/x.json": "h"}, "OCI hook file"),
        ("toolkit_config", None, "toolkit config"), ("image_id", None, "image id"),
        ("subuid", [[100000, 65536]], "subuid ranges"), ("selinux", {"mode": "Enforcing"}, "SELinux"),
    ])
    def test_any_input_changed_runs_again_and_says_which(self, st, mods, node_inputs, key, value, words):
        self.passed_once(st, mods)
        node_inputs[key] = value
        ret = st.vector_add_passes("v")
        assert len(mods.called("nvgpu.run_vector_add")) == 2
        assert ret["result"] is True
        assert f"ran: changed since it last passed: {words}" in ret["comment"], ret["comment"]
        # What it passed with now is the new record: the next run skips.
        st.vector_add_passes("v")
        assert len(mods.called("nvgpu.run_vector_add")) == 2

    def test_a_failed_last_run_runs_again(self, st, mods):
        failed = dict(PASSED, passed=False, retcode=1, diagnosis=None)
        mods.set("nvgpu.run_vector_add", failed, PASSED)
        assert st.vector_add_passes("v")["result"] is False
        ret = st.vector_add_passes("v")
        assert len(mods.called("nvgpu.run_vector_add")) == 2
        assert "failed" in ret["comment"] and ret["result"] is True

    def test_always_runs_every_time(self, st, mods):
        self.passed_once(st, mods)
        ret = st.vector_add_passes("v", when="always")
        assert len(mods.called("nvgpu.run_vector_add")) == 2
        assert "ran: gpu:validate:when is always" in ret["comment"]

    def test_a_failure_under_always_is_recorded_so_changed_runs_again(self, st, mods):
        self.passed_once(st, mods)
        mods.set("nvgpu.run_vector_add", dict(PASSED, passed=False, retcode=1, diagnosis=None), PASSED)
        assert st.vector_add_passes("v", when="always")["result"] is False
        st.vector_add_passes("v")
        assert len(mods.called("nvgpu.run_vector_add")) == 3

    def test_another_image_or_user_is_another_record(self, st, mods):
        self.passed_once(st, mods)
        st.vector_add_passes("v", image="localhost:5000/other:v1")
        st.vector_add_passes("v", user="gpuuser")
        assert len(mods.called("nvgpu.run_vector_add")) == 3

    def test_test_mode_says_skip_or_run_exactly(self, st, mods, opts, node_inputs):
        self.passed_once(st, mods)
        opts["test"] = True
        ret = st.vector_add_passes("v")
        assert ret["result"] is True and "skipped" in ret["comment"]
        node_inputs["boot_id"] = "b2"
        ret = st.vector_add_passes("v")
        assert ret["result"] is None
        assert ret["comment"].endswith("changed since it last passed: boot (boot id))")
        assert len(mods.called("nvgpu.run_vector_add")) == 1

    def test_record_is_written_atomically_and_a_corrupt_one_means_run(self, st, mods, opts):
        self.passed_once(st, mods)
        (record,) = glob.glob(os.path.join(opts["cachedir"], "nvgpu", "validate", "root-*.json"))
        data = json.loads(open(record).read())
        assert data["passed"] is True and data["inputs"] == INPUTS
        assert os.stat(record).st_mode & 0o777 == 0o600
        assert os.listdir(os.path.dirname(record)) == [os.path.basename(record)]
        open(record, "w").write("{half")
        st.vector_add_passes("v")
        assert len(mods.called("nvgpu.run_vector_add")) == 2

    def test_inputs_not_readable_yet_means_run_and_test_mode_says_why(self, st, mods, opts):
        mods.set("nvgpu.validation_inputs", SaltInvocationError("no such user 'gpuuser'"))
        opts["test"] = True
        ret = st.vector_add_passes("v", user="gpuuser")
        assert ret["result"] is None
        assert ret["comment"].endswith("what it depends on could not be read: no such user 'gpuuser')")
        opts["test"] = False
        mods.set("nvgpu.run_vector_add", PASSED)
        ret = st.vector_add_passes("v", user="gpuuser")
        assert ret["result"] is True and len(mods.called("nvgpu.run_vector_add")) == 1

    def test_bad_when(self, st, mods):
        ret = st.vector_add_passes("v", when="sometimes")
        assert ret["result"] is False and "gpu:validate:when" in ret["comment"]
        assert mods.calls == []


# ---------------------------------------------------------------------------- the driver's daemons


class TestDriverServiceRunning:
    def test_enables_and_starts(self, st, mods):
        mods.set("service.enabled", False).set("service.status", False)
        mods.set("service.enable", True).set("service.start", True)
        ret = st.driver_service_running("nvidia-persistenced")
        assert ret["result"] is True and ret["changes"] == {"enabled": True, "running": True}
        assert mods.actions() == ["service.enable", "service.start"]

    def test_test_mode_changes_nothing(self, st, mods, opts):
        opts["test"] = True
        mods.set("service.enabled", True).set("service.status", False)
        ret = st.driver_service_running("nvidia-persistenced")
        assert ret["result"] is None and ret["changes"] == {"running": True}
        assert mods.actions() == []

    def test_fabric_manager_of_another_version_fails_naming_both(self, st, mods):
        mods.set("nvgpu.driver_version", "580.105.08").set("pkg.version", "550.127.08-1.el8")
        ret = st.driver_service_running("nvidia-fabricmanager", package="nvidia-fabric-manager")
        assert ret["result"] is False
        assert "nvidia-fabric-manager 550.127.08-1.el8 does not match the loaded driver 580.105.08" in ret["comment"]
        assert mods.actions() == []

    def test_a_failed_start_shows_the_units_journal(self, st, mods):
        mods.set("service.enabled", True).set("service.status", False)
        mods.set("service.start", CommandExecutionError("Job for x.service failed"))
        mods.set("cmd.run_all", {"retcode": 3, "stdout": "nv-fabricmanager[7]: detected number of NVSwitches",
                                 "stderr": ""})
        ret = st.driver_service_running("nvidia-fabricmanager")
        assert ret["result"] is False and "Job for x.service failed" in ret["comment"]
        assert "detected number of NVSwitches" in ret["comment"]

    def test_reboot_required_passes_and_says_so(self, st, mods):
        mods.set("nvgpu.reboot_required", {"required": True, "reason": "driver 550 is loaded, 580 installed"})
        ret = st.driver_service_running("nvidia-fabricmanager", package="nvidia-fabric-manager")
        assert ret["result"] is True and ret["changes"] == {}
        assert ret["comment"].startswith("Reboot required: driver 550 is loaded, 580 installed")
        assert mods.actions() == []


def test_a_busy_gpu_turns_a_reload_into_reboot_required(st, mods):
    mods.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
    mods.set("nvgpu.driver_version", "550.127.08").set("nvgpu.installed_driver_version", "580.105.08")
    busy = CommandExecutionError("unloading the NVIDIA kernel modules failed: modprobe: FATAL: Module nvidia_uvm "
                                 "is in use.")
    busy.gpu_busy = True
    mods.set("nvgpu.reload_driver", busy)
    ret = st.modules_loaded("nvidia")
    assert ret["result"] is True and ret["changes"] == {}
    assert ret["comment"].startswith("Reboot required: driver 550.127.08 is loaded, 580.105.08 is installed")
    assert "is in use" in ret["comment"]


def test_reload_never_leaves_the_new_driver_to_the_reboot(st, mods):
    mods.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
    mods.set("nvgpu.driver_version", "550.127.08").set("nvgpu.installed_driver_version", "580.105.08")
    ret = st.modules_loaded("nvidia", reload="never")
    assert ret["result"] is True and ret["changes"] == {}
    assert "gpu:driver:reload is never" in ret["comment"]
    assert mods.actions() == []


def test_validation_waits_for_a_pending_reboot(st, mods, opts, tmp_path):
    opts["cachedir"] = str(tmp_path)
    mods.set("nvgpu.reboot_required", {"required": True, "reason": "driver 550 is loaded, 580 installed"})
    for when in ("always", "changed"):
        ret = st.vector_add_passes("root", when=when)
        assert ret["result"] is True and ret["comment"].startswith("Reboot required")
    assert mods.actions() == []


def test_cuda_programs_running_make_the_reload_a_reboot_and_test_mode_says_so_too(st, mods, opts):
    mods.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
    mods.set("nvgpu.driver_version", "550.127.08").set("nvgpu.installed_driver_version", "580.105.08")
    mods.set("nvgpu.cuda_processes", 2)
    for test in (True, False):
        opts["test"] = test
        ret = st.modules_loaded("nvidia")
        assert ret["result"] is True and ret["changes"] == {}
        assert "CUDA programs hold the GPU (nvidia_uvm refcnt 2)" in ret["comment"]
    assert mods.actions() == []
