"""
Logic of the nvgpu states with the execution module replaced by recording fakes:
the difference each state computes, test=True (result None, the exact pending
changes, nothing called that changes the node), a converged node (no change, no
action), and failure comments. Real runs are in tests/functional/.
"""


import pytest
from salt.exceptions import CommandExecutionError

from tests.nvidia import NVIDIA_HOOK as HOOK
from tests.unit.loader import load

# Execution functions that change the node; test=True must call none of them.
ACTIONS = {
    "nvgpu.module_install", "nvgpu.module_switch", "nvgpu.module_reset", "nvgpu.load_modules",
    "nvgpu.unload_kernel_module", "nvgpu.reload_driver",
    "nvgpu.write_oci_hook", "nvgpu.remove_oci_hook", "nvgpu.cdi_generate", "nvgpu.set_toolkit_config",
    "nvgpu.install_policy", "nvgpu.relabel", "nvgpu.set_subid_range", "nvgpu.run_vector_add",
    "pkg.install", "cp.cache_file",
}



class Salt(dict):
    """__salt__ whose functions record their calls; set values with fake[name] = callable or value."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def set(self, name, value):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if isinstance(value, BaseException):
                raise value
            return value(*args, **kwargs) if callable(value) else value

        self[name] = call

    def called(self, name):
        return [c for c in self.calls if c[0] == name]

    def actions(self):
        return [c[0] for c in self.calls if c[0] in ACTIONS]


@pytest.fixture
def salt():
    return Salt()


@pytest.fixture
def st(salt):
    module = load("_states/nvgpu.py", "nvgpu_states_under_test")
    module.__salt__ = salt
    module.__opts__ = {"test": False}
    return module


def test_mode(st):
    st.__opts__["test"] = True


# --------------------------------------------------------------------------- module_stream


def stream(stream=None, profiles=(), state=None):
    return {"name": "nvidia-driver", "stream": stream, "profiles": list(profiles), "state": state}


def test_module_stream_converged_runs_nothing(st, salt):
    salt.set("nvgpu.module_stream", stream("latest-dkms", ["default"], "enabled"))
    ret = st.module_stream("nvidia-driver", "latest-dkms", profile="default")
    assert ret["result"] is True and ret["changes"] == {}
    assert "already installed" in ret["comment"]
    assert salt.actions() == []


def test_module_stream_fresh_test_mode_reports_install(st, salt):
    test_mode(st)
    salt.set("nvgpu.module_stream", stream())
    ret = st.module_stream("nvidia-driver", "latest-dkms", profile="default")
    assert ret["result"] is None
    assert ret["changes"] == {
        "stream": {"old": None, "new": "latest-dkms"},
        "profiles": {"old": [], "new": ["default"]},
    }
    assert salt.actions() == []


def test_module_stream_fresh_installs(st, salt):
    states = iter([stream(), stream("latest-dkms", ["default"], "enabled")])
    salt.set("nvgpu.module_stream", lambda name: next(states))
    salt.set("nvgpu.module_install", lambda *a, **k: None)
    ret = st.module_stream("nvidia-driver", "latest-dkms", profile="default", platform="platform:el8")
    assert ret["result"] is True
    assert ret["changes"]["stream"] == {"old": None, "new": "latest-dkms"}
    assert salt.called("nvgpu.module_install") == [
        ("nvgpu.module_install", ("nvidia-driver", "latest-dkms"), {"profile": "default", "platform": "platform:el8"})
    ]


def test_module_stream_other_stream_switches(st, salt):
    states = iter([stream("550-dkms", ["default"], "enabled"), stream("latest-dkms", ["default"], "enabled")])
    salt.set("nvgpu.module_stream", lambda name: next(states))
    salt.set("nvgpu.module_switch", lambda *a, **k: None)
    ret = st.module_stream("nvidia-driver", "latest-dkms", profile="default")
    assert ret["result"] is True
    assert ret["changes"]["stream"] == {"old": "550-dkms", "new": "latest-dkms"}
    assert [c[0] for c in salt.calls if c[0] in ACTIONS] == ["nvgpu.module_switch"]
    assert "switched from stream 550-dkms" in ret["comment"]


def test_module_stream_switch_test_mode(st, salt):
    test_mode(st)
    salt.set("nvgpu.module_stream", stream("550-dkms", ["default"], "enabled"))
    ret = st.module_stream("nvidia-driver", "latest-dkms", profile="default")
    assert ret["result"] is None
    assert ret["changes"]["stream"] == {"old": "550-dkms", "new": "latest-dkms"}
    assert "would be switched" in ret["comment"]
    assert salt.actions() == []


def test_module_stream_disabled_resets_then_installs(st, salt):
    states = iter([stream("550-dkms", [], "disabled"), stream("latest-dkms", ["default"], "enabled")])
    salt.set("nvgpu.module_stream", lambda name: next(states))
    salt.set("nvgpu.module_reset", lambda *a, **k: None)
    salt.set("nvgpu.module_install", lambda *a, **k: None)
    ret = st.module_stream("nvidia-driver", "latest-dkms")
    assert ret["result"] is True
    assert salt.actions() == ["nvgpu.module_reset", "nvgpu.module_install"]


def test_module_stream_missing_profile_installs_it(st, salt):
    states = iter([stream("latest-dkms", ["default"], "enabled"), stream("latest-dkms", ["default", "fm"], "enabled")])
    salt.set("nvgpu.module_stream", lambda name: next(states))
    salt.set("nvgpu.module_install", lambda *a, **k: None)
    ret = st.module_stream("nvidia-driver", "latest-dkms", profile="fm")
    assert ret["result"] is True
    assert "stream" not in ret["changes"]
    assert ret["changes"]["profiles"] == {"old": ["default"], "new": ["default", "fm"]}


def test_module_stream_dnf_failure_is_reported(st, salt):
    salt.set("nvgpu.module_stream", stream())
    salt.set("nvgpu.module_install", CommandExecutionError("installing module stream x failed: no such stream"))
    ret = st.module_stream("nvidia-driver", "999-dkms")
    assert ret["result"] is False
    assert "no such stream" in ret["comment"]


def test_module_stream_dnf_success_without_effect_fails(st, salt):
    salt.set("nvgpu.module_stream", stream())
    salt.set("nvgpu.module_install", lambda *a, **k: None)
    ret = st.module_stream("nvidia-driver", "latest-dkms", profile="default")
    assert ret["result"] is False
    assert "/etc/dnf/modules.d/nvidia-driver.module" in ret["comment"]


# --------------------------------------------------------------------------- kernel modules


def test_modules_loaded_already(st, salt):
    salt.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True, "nouveau": False})
    salt.set("nvgpu.driver_version", "580.105.08")
    salt.set("nvgpu.installed_driver_version", "580.105.08")
    ret = st.modules_loaded("nvidia")
    assert ret["result"] is True and ret["changes"] == {}
    assert salt.actions() == []


def test_modules_loaded_test_mode_names_missing(st, salt):
    test_mode(st)
    salt.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": False})
    salt.set("nvgpu.driver_version", "580.105.08")
    salt.set("nvgpu.installed_driver_version", "580.105.08")
    ret = st.modules_loaded("nvidia")
    assert ret["result"] is None
    assert ret["changes"] == {"loaded": ["nvidia_uvm"]}
    assert "would be loaded" in ret["comment"]
    assert salt.actions() == []


def test_modules_loaded_reloads_upgraded_driver(st, salt):
    salt.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
    versions = iter(["550.127.08", "580.105.08"])
    salt.set("nvgpu.driver_version", lambda: next(versions))
    salt.set("nvgpu.installed_driver_version", "580.105.08")
    salt.set("nvgpu.reload_driver", {"modules": {}, "device_nodes": ["/dev/nvidia0"], "changed": True})
    ret = st.modules_loaded("nvidia")
    assert ret["result"] is True
    assert ret["changes"]["driver_version"] == {"old": "550.127.08", "new": "580.105.08"}
    assert "reloaded" in ret["comment"]


def test_modules_loaded_reload_test_mode_and_opt_out(st, salt):
    test_mode(st)
    salt.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
    salt.set("nvgpu.driver_version", "550.127.08")
    salt.set("nvgpu.installed_driver_version", "580.105.08")
    ret = st.modules_loaded("nvidia")
    assert ret["result"] is None
    assert ret["changes"] == {"driver_version": {"old": "550.127.08", "new": "580.105.08"}}
    assert st.modules_loaded("nvidia", reload_on_upgrade=False)["changes"] == {}
    assert salt.actions() == []


def test_modules_loaded_reload_still_old_fails_with_advice(st, salt):
    salt.set("nvgpu.loaded_modules", {"nvidia": True, "nvidia_uvm": True})
    salt.set("nvgpu.driver_version", "550.127.08")
    salt.set("nvgpu.installed_driver_version", "580.105.08")
    salt.set("nvgpu.reload_driver", {"modules": {}, "device_nodes": [], "changed": True})
    ret = st.modules_loaded("nvidia")
    assert ret["result"] is False
    assert "dkms status" in ret["comment"]


def test_modules_loaded_loads(st, salt):
    salt.set("nvgpu.loaded_modules", {"nvidia": False, "nvidia_uvm": False})
    salt.set("nvgpu.load_modules", {"modules": {}, "device_nodes": ["/dev/nvidia0"], "changed": True})
    ret = st.modules_loaded("nvidia", uvm=False)
    assert ret["result"] is True
    assert ret["changes"] == {"loaded": ["nvidia"], "device_nodes": ["/dev/nvidia0"]}
    assert salt.called("nvgpu.load_modules")[0][2] == {"uvm": False}


def test_modules_loaded_failure_carries_cause(st, salt):
    salt.set("nvgpu.loaded_modules", {"nvidia": False, "nvidia_uvm": False})
    salt.set("nvgpu.load_modules", CommandExecutionError("nvidia-modprobe failed\nLikely cause: nouveau"))
    ret = st.modules_loaded("nvidia")
    assert ret["result"] is False
    assert "nouveau" in ret["comment"]


def test_module_unloaded(st, salt):
    loaded = iter([True, False])
    salt.set("nvgpu.kernel_module_loaded", lambda name: next(loaded))
    salt.set("nvgpu.unload_kernel_module", True)
    ret = st.module_unloaded("nouveau")
    assert ret["result"] is True and ret["changes"] == {"unloaded": ["nouveau"]}


def test_module_unloaded_not_loaded_runs_nothing(st, salt):
    salt.set("nvgpu.kernel_module_loaded", False)
    ret = st.module_unloaded("nouveau")
    assert ret["result"] is True and ret["changes"] == {}
    assert salt.actions() == []


def test_module_unloaded_test_mode(st, salt):
    test_mode(st)
    salt.set("nvgpu.kernel_module_loaded", True)
    ret = st.module_unloaded("nouveau")
    assert ret["result"] is None and ret["changes"] == {"unloaded": ["nouveau"]}
    assert salt.actions() == []


def test_module_unloaded_builtin_fails_with_advice(st, salt):
    salt.set("nvgpu.kernel_module_loaded", True)
    salt.set("nvgpu.unload_kernel_module", True)
    ret = st.module_unloaded("nouveau")
    assert ret["result"] is False
    assert "reboot" in ret["comment"]


# --------------------------------------------------------------------------- container_toolkit


def spec(exists=True, driver="580.105.08", mode="0644", kind="nvidia.com/gpu", devices=("0", "all")):
    if not exists:
        return {"exists": False, "kind": None, "devices": [], "driver_version": None, "mode": None}
    return {"exists": True, "kind": kind, "devices": list(devices), "driver_version": driver, "mode": mode}


@pytest.fixture
def toolkit(salt):
    salt.set("pkg.version", "1.17.8-1")
    salt.set("nvgpu.podman_version", "4.9.4")
    salt.set("nvgpu.driver_version", "580.105.08")
    salt.set("nvgpu.cdi_spec", spec())
    salt.set("nvgpu.oci_hook_content", HOOK)
    salt.set("nvgpu.oci_hook", None)
    salt.set("nvgpu.toolkit_config_value", True)
    salt.set("nvgpu.cdi_generate", spec())
    salt.set("nvgpu.write_oci_hook", HOOK)
    salt.set("nvgpu.set_toolkit_config", True)
    salt.set("nvgpu.remove_oci_hook", True)
    salt.set("pkg.install", {})
    return salt


def test_toolkit_cdi_mode_removes_nvidias_hook_only(st, toolkit):
    toolkit.set("nvgpu.oci_hook", HOOK)
    ret = st.container_toolkit("gpu", mode="cdi")
    assert ret["changes"] == {"oci_hook": {"old": st._HOOK_PATH, "new": None}}
    assert toolkit.actions() == ["nvgpu.remove_oci_hook"]
    toolkit.calls.clear()
    toolkit.set("nvgpu.oci_hook", dict(HOOK, stages=["poststart"]))
    assert st.container_toolkit("gpu", mode="cdi")["changes"] == {}
    assert toolkit.actions() == []


def test_toolkit_converged_cdi(st, toolkit):
    ret = st.container_toolkit("gpu", mode="auto", rootless=True)
    assert ret["result"] is True and ret["changes"] == {}
    assert "mode cdi" in ret["comment"]
    assert toolkit.actions() == []


def test_toolkit_auto_picks_hook_for_old_podman(st, toolkit):
    toolkit.set("nvgpu.podman_version", "3.4.4")
    toolkit.set("nvgpu.oci_hook", None)
    ret = st.container_toolkit("gpu", mode="auto")
    assert ret["changes"] == {"oci_hook": {"old": "absent", "new": st._HOOK_PATH}}
    assert toolkit.actions() == ["nvgpu.write_oci_hook"]


def test_toolkit_hook_different_content_rewritten(st, toolkit):
    toolkit.set("nvgpu.oci_hook", dict(HOOK, stages=["poststart"]))
    ret = st.container_toolkit("gpu", mode="hook")
    assert ret["changes"]["oci_hook"]["old"] == "different"
    assert toolkit.actions() == ["nvgpu.write_oci_hook"]


def test_toolkit_stale_cdi_spec_regenerated(st, toolkit):
    toolkit.set("nvgpu.cdi_spec", spec(driver="550.127.08"))
    ret = st.container_toolkit("gpu", mode="cdi")
    change = ret["changes"]["cdi_spec"]
    assert change["reason"].startswith("stale")
    assert change["old"]["driver_version"] == "550.127.08"
    assert change["new"]["driver_version"] == "580.105.08"
    assert toolkit.actions() == ["nvgpu.cdi_generate"]


@pytest.mark.parametrize(
    "current, reason",
    [(spec(exists=False), "missing"), (spec(mode="0600"), "not world-readable"), (spec(kind="x"), "not a")],
)
def test_toolkit_cdi_spec_problems(st, toolkit, current, reason):
    test_mode(st)
    toolkit.set("nvgpu.cdi_spec", current)
    ret = st.container_toolkit("gpu", mode="cdi")
    assert ret["result"] is None
    assert ret["changes"]["cdi_spec"]["reason"].startswith(reason)
    assert toolkit.actions() == []


def test_toolkit_fresh_test_mode_lists_package_spec_and_no_cgroups(st, toolkit):
    test_mode(st)
    toolkit.set("pkg.version", "")
    toolkit.set("nvgpu.podman_version", None)
    toolkit.set("nvgpu.toolkit_config_value", None)
    toolkit.set("nvgpu.cdi_spec", spec(exists=False))
    toolkit.set("nvgpu.driver_version", None)
    ret = st.container_toolkit("gpu", mode="cdi", rootless=True)
    assert ret["result"] is None
    assert set(ret["changes"]) == {"package", "cdi_spec", "no-cgroups"}
    assert ret["changes"]["no-cgroups"] == {"old": None, "new": True}
    assert toolkit.actions() == []


def test_toolkit_auto_without_podman_in_test_mode_is_pending(st, toolkit):
    test_mode(st)
    toolkit.set("nvgpu.podman_version", None)
    ret = st.container_toolkit("gpu", mode="auto")
    assert ret["result"] is None
    assert "gpu_access" in ret["changes"]


def test_toolkit_auto_without_podman_fails_with_advice(st, toolkit):
    toolkit.set("nvgpu.podman_version", None)
    ret = st.container_toolkit("gpu", mode="auto")
    assert ret["result"] is False
    assert "gpu:toolkit:mode" in ret["comment"]


def test_toolkit_installs_missing_package(st, toolkit):
    versions = iter(["", "1.17.8-1"])
    toolkit.set("pkg.version", lambda name: next(versions))
    ret = st.container_toolkit("gpu", mode="cdi")
    assert ret["changes"]["package"] == {"old": None, "new": "nvidia-container-toolkit-1.17.8-1"}
    assert toolkit.called("pkg.install")[0][2] == {"name": "nvidia-container-toolkit"}


def test_toolkit_rootless_sets_no_cgroups_only_when_unset(st, toolkit):
    toolkit.set("nvgpu.toolkit_config_value", False)
    ret = st.container_toolkit("gpu", mode="cdi", rootless=True)
    assert ret["changes"] == {"no-cgroups": {"old": False, "new": True}}
    assert toolkit.called("nvgpu.set_toolkit_config")[0][1] == ("nvidia-container-cli.no-cgroups", True)


def test_toolkit_rootless_false_leaves_config(st, toolkit):
    toolkit.set("nvgpu.toolkit_config_value", False)
    ret = st.container_toolkit("gpu", mode="cdi", rootless=False)
    assert ret["changes"] == {}


def test_toolkit_bad_mode(st, toolkit):
    ret = st.container_toolkit("gpu", mode="oci")
    assert ret["result"] is False
    assert "auto, hook, cdi" in ret["comment"]


def test_toolkit_generate_failure_reports_tool_message(st, toolkit):
    toolkit.set("nvgpu.cdi_spec", spec(exists=False))
    toolkit.set("nvgpu.cdi_generate", CommandExecutionError("generating the CDI spec failed: nvml error"))
    ret = st.container_toolkit("gpu", mode="cdi")
    assert ret["result"] is False
    assert "nvml error" in ret["comment"]


# --------------------------------------------------------------------------- selinux_ready


@pytest.fixture
def se(salt):
    salt.set("nvgpu.selinux_mode", "Enforcing")
    salt.set("nvgpu.policy_modules", ["container", "nvidia-container"])
    salt.set("nvgpu.list_container_files", {"devices": ["/dev/nvidia0"], "libraries": ["/usr/lib64/libcuda.so.1"]})
    salt.set("nvgpu.relabel_needed", [])
    salt.set("nvgpu.relabel", [])
    salt.set("nvgpu.install_policy", True)
    salt.set("cp.cache_file", "/var/cache/salt/minion/files/base/nvidia-container.pp")
    salt.set("file.get_hash", "ab" * 32)
    return salt


def test_selinux_disabled_does_nothing(st, se):
    se.set("nvgpu.selinux_mode", "Disabled")
    ret = st.selinux_ready("gpu", policy_source="salt://gpu/files/nvidia-container.pp")
    assert ret["result"] is True and ret["changes"] == {}
    assert "disabled" in ret["comment"]
    assert se.actions() == []


def test_selinux_remote_source_needs_hash(st, se):
    ret = st.selinux_ready("gpu", policy_source="https://example.com/nvidia-container.pp")
    assert ret["result"] is False
    assert "source_hash is required" in ret["comment"]


def test_selinux_converged(st, se):
    ret = st.selinux_ready("gpu", policy_source="salt://gpu/files/nvidia-container.pp")
    assert ret["result"] is True and ret["changes"] == {}
    assert se.actions() == []


def test_selinux_installs_missing_policy_with_verified_hash(st, se, tmp_path):
    pp = tmp_path / "nvidia-container.pp"
    pp.write_bytes(b"pp")
    se.set("cp.cache_file", str(pp))
    listed = iter([["container"], ["container", "nvidia-container"]])
    se.set("nvgpu.policy_modules", lambda: next(listed))
    ret = st.selinux_ready("gpu", policy_source="https://example.com/x.pp", source_hash="sha256=" + "AB" * 32)
    assert ret["result"] is True
    assert ret["changes"] == {"policy_module": {"old": None, "new": "nvidia-container"}}
    assert se.called("nvgpu.install_policy")[0][1] == (str(pp),)
    assert se.called("file.get_hash")[0][2] == {"form": "sha256"}


def test_selinux_hash_mismatch_refuses(st, se, tmp_path):
    pp = tmp_path / "nvidia-container.pp"
    pp.write_bytes(b"pp")
    se.set("cp.cache_file", str(pp))
    se.set("nvgpu.policy_modules", ["container"])
    ret = st.selinux_ready("gpu", policy_source="https://example.com/x.pp", source_hash="cd" * 32)
    assert ret["result"] is False
    assert "gpu:selinux:policy_hash" in ret["comment"]
    assert se.called("nvgpu.install_policy") == []


def test_selinux_test_mode_fetches_nothing(st, se):
    test_mode(st)
    se.set("nvgpu.policy_modules", ["container"])
    se.set("nvgpu.relabel_needed", lambda paths, recursive=False: ["/dev/nvidia0"] if recursive else [])
    ret = st.selinux_ready("gpu", policy_source="salt://gpu/files/nvidia-container.pp")
    assert ret["result"] is None
    assert ret["changes"] == {
        "policy_module": {"old": None, "new": "nvidia-container"},
        "relabelled": ["/dev/nvidia0"],
    }
    assert se.actions() == []


def test_selinux_relabels_only_wrong_paths(st, se):
    answers = iter([["/usr/lib64/libcuda.so.1"], ["/dev/nvidia0", "/usr/lib64/libcuda.so.1"], []])
    se.set("nvgpu.relabel_needed", lambda paths, recursive=False: next(answers))
    ret = st.selinux_ready("gpu", policy_source="/root/nvidia-container.pp")
    assert ret["result"] is True
    assert ret["changes"] == {"relabelled": ["/usr/lib64/libcuda.so.1", "/dev/nvidia0"]}
    assert se.called("nvgpu.relabel")[0][1] == (["/usr/lib64/libcuda.so.1", "/dev/nvidia0"],)
    recursive = [c for c in se.called("nvgpu.relabel_needed") if c[2].get("recursive")]
    assert recursive[0][1] == (["/dev"],)


# --------------------------------------------------------------------------- subids_present


def test_subids_keeps_existing_range(st, salt):
    salt.set("nvgpu.subid_range", [{"start": 100000, "count": 65536}])
    ret = st.subids_present("gpuuser")
    assert ret["result"] is True and ret["changes"] == {}


def test_subids_allocates_free_range(st, salt):
    salt.set("nvgpu.subid_range", [])
    salt.set("nvgpu.free_subid_start", 165536)
    salt.set("nvgpu.set_subid_range", [])
    ret = st.subids_present("gpuuser")
    assert ret["changes"]["subuid"] == {"old": [], "new": [{"start": 165536, "count": 65536}]}
    assert ret["changes"]["subgid"]["new"] == [{"start": 165536, "count": 65536}]
    assert len(salt.called("nvgpu.set_subid_range")) == 2


def test_subids_explicit_start_enforced_and_test_mode(st, salt):
    test_mode(st)
    salt.set("nvgpu.subid_range", [{"start": 100000, "count": 65536}])
    ret = st.subids_present("gpuuser", start=200000)
    assert ret["result"] is None
    assert ret["changes"]["subuid"]["new"] == [{"start": 200000, "count": 65536}]
    assert salt.actions() == []


# --------------------------------------------------------------------------- vector_add_passes

PASSED = {"passed": True, "elements": 50000, "blocks": 196, "threads": 256, "mode": "cdi", "retcode": 0,
          "duration_s": 0.6, "command": ["podman", "run"], "stdout": "Test PASSED\n", "stderr": "",
          "diagnosis": None, "user": None}


def test_vector_add_passes(st, salt):
    salt.set("nvgpu.run_vector_add", PASSED)
    ret = st.vector_add_passes("root", image="localhost:5000/x:v1")
    assert ret["result"] is True and ret["changes"] == {}
    assert "PASSED as root" in ret["comment"]
    assert salt.called("nvgpu.run_vector_add")[0][2]["image"] == "localhost:5000/x:v1"


def test_vector_add_failure_carries_diagnosis(st, salt):
    failed = dict(PASSED, passed=False, retcode=126, stdout="", stderr="Error: unresolvable CDI devices",
                  diagnosis={"cause": "no CDI spec", "fix": "nvidia-ctk cdi generate"}, user="gpuuser")
    salt.set("nvgpu.run_vector_add", failed)
    ret = st.vector_add_passes("gpuuser", user="gpuuser")
    assert ret["result"] is False
    assert "Cause: no CDI spec" in ret["comment"]
    assert "Fix: nvidia-ctk cdi generate" in ret["comment"]
    assert "as gpuuser" in ret["comment"]
    assert "unresolvable CDI devices" in ret["comment"]


def test_vector_add_test_mode_runs_nothing(st, salt):
    test_mode(st)
    salt.set("nvgpu.run_vector_add", PASSED)
    ret = st.vector_add_passes("root")
    assert ret["result"] is None and ret["changes"] == {}
    assert "would run" in ret["comment"]
    assert salt.actions() == []
