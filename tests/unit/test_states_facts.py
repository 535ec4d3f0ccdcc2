"""
The execution functions the states stand on (the bottom section of
_modules/nvgpu.py): dnf module-stream files, toolkit config, OCI hook, CDI spec,
restorecon output, subordinate ids; files in a temporary tree, commands recorded.
"""

import json
import os
import pathlib

import pytest
from salt.exceptions import CommandExecutionError

from tests.unit.loader import load


class FakeCmd:
    def __init__(self, answers=None):
        self.calls = []
        self.answers = answers or {}

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        for prefix, answer in self.answers.items():
            if " ".join(argv).startswith(prefix):
                return dict({"retcode": 0, "stdout": "", "stderr": ""}, **(answer(argv) if callable(answer) else answer))
        return {"retcode": 0, "stdout": "", "stderr": ""}


@pytest.fixture
def mod(tmp_path):
    module = load("_modules/nvgpu.py", "nvgpu_facts_under_test")
    module.__grains__ = {"kernel": "Linux"}
    module.__context__ = {}
    module.__salt__ = {"cmd.run_all": FakeCmd()}
    module._MODULES_D = str(tmp_path / "modules.d")
    module._SUBID_FILES = {"subuid": str(tmp_path / "subuid"), "subgid": str(tmp_path / "subgid")}
    module._SYS_MODULE = str(tmp_path / "sys-module")
    module._PROC_MODULES = str(tmp_path / "no-proc-modules")
    os.makedirs(module._MODULES_D)
    os.makedirs(module._SYS_MODULE)
    return module


def cmd(mod, answers=None):
    fake = FakeCmd(answers)
    mod.__salt__["cmd.run_all"] = fake
    return fake


# --------------------------------------------------------------------------- module streams


def test_module_stream_absent(mod):
    assert mod.module_stream("nvidia-driver") == {
        "name": "nvidia-driver", "stream": None, "profiles": [], "state": None}


def test_module_stream_reads_dnf_file(mod):
    pathlib.Path(mod._MODULES_D, "nvidia-driver.module").write_text(
        "[nvidia-driver]\nname=nvidia-driver\nstream=550-dkms\nprofiles=default,fm\nstate=enabled\n")
    assert mod.module_stream("nvidia-driver") == {
        "name": "nvidia-driver", "stream": "550-dkms", "profiles": ["default", "fm"], "state": "enabled"}


def test_module_stream_reset_file_has_no_stream(mod):
    pathlib.Path(mod._MODULES_D, "nvidia-driver.module").write_text(
        "[nvidia-driver]\nname=nvidia-driver\nstream=\nprofiles=\nstate=\n")
    assert mod.module_stream("nvidia-driver")["stream"] is None


def test_module_install_argv_and_error(mod):
    fake = cmd(mod)
    mod.module_install("nvidia-driver", "latest-dkms", profile="default", platform="platform:el8")
    assert fake.calls == [["dnf", "-y", "--setopt=module_platform_id=platform:el8", "module", "install",
                           "nvidia-driver:latest-dkms/default"]]
    cmd(mod, {"dnf": {"retcode": 1, "stderr": "Error: Problems in request: missing groups or modules"}})
    with pytest.raises(CommandExecutionError, match="missing groups or modules"):
        mod.module_install("nvidia-driver", "999-dkms")


def test_module_switch_falls_back_to_reset_and_install(mod):
    fake = cmd(mod, {"dnf -y module switch-to": {"retcode": 2, "stderr": "dnf module: error: argument "
                                                  "<modular command>: invalid choice: 'switch-to'"}})
    mod.module_switch("nvidia-driver", "latest-dkms", profile="default")
    assert [c[3] for c in fake.calls] == ["switch-to", "reset", "install"]


def test_module_switch_real_error_raises(mod):
    cmd(mod, {"dnf": {"retcode": 1, "stderr": "Error: It is not possible to switch enabled streams"}})
    with pytest.raises(CommandExecutionError, match="not possible to switch"):
        mod.module_switch("nvidia-driver", "latest-dkms")


# --------------------------------------------------------------------------- toolkit config


CONFIG = """\
#accept-nvidia-visible-devices-as-volume-mounts = false
disable-require = false
supported-driver-capabilities = "compat32,compute,display,graphics,ngx,utility,video"

[nvidia-container-cli]
environment = []
ldconfig = "@/sbin/ldconfig"
load-kmods = true
no-cgroups = true  # rootless

[nvidia-container-runtime]
log-level = "info"
runtimes = ["docker-runc", "runc", "crun"]
"""


def test_toolkit_config_value(mod, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    assert mod.toolkit_config_value("nvidia-container-cli.no-cgroups", path=str(path)) is True
    assert mod.toolkit_config_value("nvidia-container-cli.user", path=str(path)) is None
    assert mod.toolkit_config(path=str(tmp_path / "absent.toml")) == {}


def test_small_toml_parser_matches_tomllib(mod, monkeypatch):
    import builtins

    import tomllib

    real_import = builtins.__import__

    def no_toml(name, *args, **kwargs):
        if name in ("tomllib", "toml"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_toml)
    assert mod._loads_toml(CONFIG) == tomllib.loads(CONFIG)


def test_set_toolkit_config_argv(mod):
    fake = cmd(mod)
    mod.set_toolkit_config("nvidia-container-cli.no-cgroups", True)
    assert fake.calls[0] == ["nvidia-ctk", "config", "--set", "nvidia-container-cli.no-cgroups=true", "--in-place"]


# --------------------------------------------------------------------------- OCI hook


def test_write_oci_hook_is_nvidias_format(mod, tmp_path):
    path = tmp_path / "hooks.d" / "oci-nvidia-hook.json"
    mod.write_oci_hook(str(path))
    data = json.loads(path.read_text())
    assert data == {
        "version": "1.0.0",
        "hook": {"path": "/usr/bin/nvidia-container-runtime-hook",
                 "args": ["nvidia-container-runtime-hook", "prestart"],
                 "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "when": {"always": True, "commands": [".*"]},
        "stages": ["prestart"],
    }
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert mod.oci_hook(str(path)) == data
    assert mod.oci_hook(str(tmp_path / "absent.json")) is None
    assert os.listdir(path.parent) == ["oci-nvidia-hook.json"]


# --------------------------------------------------------------------------- CDI


SPEC = """\
---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
containerEdits:
  deviceNodes:
  - path: /dev/nvidiactl
  mounts:
  - hostPath: /usr/lib64/libnvidia-ml.so.550.127.08
    containerPath: /usr/lib64/libnvidia-ml.so.550.127.08
  - hostPath: /usr/lib64/libcuda.so.550.127.08
    containerPath: /usr/lib64/libcuda.so.550.127.08
"""


def test_cdi_spec(mod, tmp_path):
    path = tmp_path / "nvidia.yaml"
    assert mod.cdi_spec(str(path))["exists"] is False
    path.write_text(SPEC)
    path.chmod(0o600)
    assert mod.cdi_spec(str(path)) == {
        "exists": True, "kind": "nvidia.com/gpu", "devices": ["0", "all"],
        "driver_version": "550.127.08", "mode": "0600"}


def test_cdi_generate_atomic_and_world_readable(mod, tmp_path):
    cdi = tmp_path / "cdi"

    def generate(argv):
        out = argv[-1].split("=", 1)[1]
        assert os.path.dirname(os.path.dirname(out)) == str(cdi)
        pathlib.Path(out).write_text(SPEC)
        os.chmod(out, 0o600)
        return {}

    fake = cmd(mod, {"nvidia-ctk cdi generate": generate})
    spec = mod.cdi_generate(str(cdi / "nvidia.yaml"))
    assert fake.calls[0][:3] == ["nvidia-ctk", "cdi", "generate"]
    assert spec["mode"] == "0644" and spec["driver_version"] == "550.127.08"
    assert os.listdir(cdi) == ["nvidia.yaml"]


def test_cdi_generate_failure_leaves_old_spec_and_no_temp(mod, tmp_path):
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    (cdi / "nvidia.yaml").write_text(SPEC)
    cmd(mod, {"nvidia-ctk": {"retcode": 1, "stderr": "failed to initialize NVML: driver/library version mismatch"}})
    with pytest.raises(CommandExecutionError, match="version mismatch"):
        mod.cdi_generate(str(cdi / "nvidia.yaml"))
    assert os.listdir(cdi) == ["nvidia.yaml"]
    assert (cdi / "nvidia.yaml").read_text() == SPEC


# --------------------------------------------------------------------------- SELinux


def test_policy_modules_first_column(mod):
    cmd(mod, {"semodule -l": {"stdout": "abrt\t1.4.1\nnvidia-container\t0.1\ncontainer\n"}})
    assert mod.policy_modules() == ["abrt", "container", "nvidia-container"]


def test_relabel_needed_parses_both_formats(mod, tmp_path):
    dev = tmp_path / "nvidia0"
    dev.write_text("")
    out = (f"Would relabel {dev} from system_u:object_r:device_t:s0 to "
           "system_u:object_r:xserver_misc_device_t:s0\n"
           "restorecon reset /usr/lib64/libcuda.so.1 context a->b\n")
    fake = cmd(mod, {"restorecon": {"stdout": out}})
    assert mod.relabel_needed([str(dev), str(tmp_path / "absent")], recursive=True) == [
        str(dev), "/usr/lib64/libcuda.so.1"]
    assert fake.calls == [["restorecon", "-n", "-v", "-R", str(dev)]]


def test_selinux_mode_without_getenforce_is_disabled(mod, monkeypatch):
    import salt.utils.path

    monkeypatch.setattr(salt.utils.path, "which", lambda name: None)
    assert mod.selinux_mode() == "Disabled"


# --------------------------------------------------------------------------- kernel modules, driver


def test_kernel_module_loaded_reads_sys_module(mod):
    assert mod.kernel_module_loaded("nouveau") is False
    os.makedirs(os.path.join(mod._SYS_MODULE, "nouveau"))
    assert mod.kernel_module_loaded("nouveau") is True


def test_installed_driver_version_takes_newest(mod, tmp_path):
    lib = tmp_path / "lib64"
    lib.mkdir()
    for name in ("libcuda.so.1", "libcuda.so.550.127.08", "libcuda.so.580.105.08"):
        (lib / name).write_text("")
    mod._DRIVER_LIB_GLOB = str(lib / "libcuda.so.*.*")
    assert mod.installed_driver_version() == "580.105.08"


# --------------------------------------------------------------------------- subordinate ids


def test_subids(mod):
    pathlib.Path(mod._SUBID_FILES["subuid"]).write_text("alice:100000:65536\ncarol:231072:65536\n")
    assert mod.subid_range("alice") == [{"start": 100000, "count": 65536}]
    assert mod.subid_range("bob") == []
    assert mod.free_subid_start(65536) == 165536
    assert mod.free_subid_start(70000) == 296608
    mod.set_subid_range("bob", 165536, 65536)
    mod.set_subid_range("alice", 400000, 65536)
    lines = pathlib.Path(mod._SUBID_FILES["subuid"]).read_text().splitlines()
    assert sorted(lines) == ["alice:400000:65536", "bob:165536:65536", "carol:231072:65536"]
    assert mod.subid_range("bob", kind="subgid") == []
