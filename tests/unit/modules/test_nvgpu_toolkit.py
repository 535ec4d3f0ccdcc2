"""
The toolkit execution module (_modules/nvgpu_toolkit.py): config.toml, NVIDIA's OCI
hook file and the CDI spec, on real files in a temporary tree; ``nvidia-ctk`` is the fake
``cmd.run_all``, which writes what the real tool would.
"""

import errno
import json
import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.nvidia import NVIDIA_HOOK
from tests.unit.fakes import FakeSalt
from tests.unit.loader import load


@pytest.fixture
def toolkit(host):
    # Loaded after host moved the paths: the functions' default paths are in the tree.
    return load("_modules/nvgpu_toolkit.py")


@pytest.fixture
def configure_loader_modules(toolkit, run_all):
    return {
        toolkit: {
            "__salt__": FakeSalt(run_all=run_all),
            "__grains__": {"kernel": "Linux"},
            "__opts__": {"test": False},
            "__context__": {},
        }
    }


class TestVirtual:
    def test_linux(self, toolkit):
        assert toolkit.__virtual__() == "nvgpu_toolkit"

    def test_not_linux(self, toolkit):
        toolkit.__grains__["kernel"] = "Darwin"
        assert toolkit.__virtual__() == (False, "The nvgpu_toolkit execution module only runs on Linux minions")

    def test_without_a_toml_reader(self, toolkit, monkeypatch):
        monkeypatch.setattr(toolkit, "tomllib", None)
        loaded, reason = toolkit.__virtual__()
        assert loaded is False and "tomli" in reason


# ---------------------------------------------------------------------------- config.toml

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


class TestConfig:
    def test_config_reads_the_toolkits_file(self, toolkit, host):
        host.write("/etc/nvidia-container-runtime/config.toml", CONFIG)
        config = toolkit.config()
        assert config["disable-require"] is False
        assert config["nvidia-container-cli"] == {
            "environment": [], "ldconfig": "@/sbin/ldconfig", "load-kmods": True, "no-cgroups": True}
        assert config["nvidia-container-runtime"]["runtimes"] == ["docker-runc", "runc", "crun"]

    def test_config_absent_is_empty(self, toolkit):
        assert toolkit.config() == {}

    def test_config_invalid_says_which_file_and_what_to_do(self, toolkit, host):
        path = host.write("/etc/nvidia-container-runtime/config.toml", "[nvidia-container-cli\nno-cgroups = true\n")
        with pytest.raises(CommandExecutionError) as err:
            toolkit.config()
        assert f"{path} is not valid TOML" in str(err.value)
        assert "reinstall nvidia-container-toolkit" in str(err.value)

    def test_config_value(self, toolkit, tmp_path):
        path = tmp_path / "config.toml"
        path.write_text(CONFIG)
        assert toolkit.config_value("nvidia-container-cli.no-cgroups", path=str(path)) is True
        assert toolkit.config_value("nvidia-container-runtime.log-level", path=str(path)) == "info"
        assert toolkit.config_value("nvidia-container-cli.user", path=str(path)) is None
        assert toolkit.config_value("disable-require.deeper", path=str(path)) is None
        assert toolkit.config_value("nvidia-container-cli.no-cgroups", path=str(tmp_path / "absent.toml")) is None

    def test_set_config_argv_and_the_value_the_file_then_holds(self, toolkit, host, run_all):
        path = host.write("/etc/nvidia-container-runtime/config.toml", "[nvidia-container-cli]\nno-cgroups = false\n")

        def nvidia_ctk(argv, kwargs):
            key, value = argv[3].split("=")
            section, name = key.split(".")
            path.write_text(f"[{section}]\n{name} = {value}\n")

        run_all.on("nvidia-ctk", "config", effect=nvidia_ctk)
        assert toolkit.set_config("nvidia-container-cli.no-cgroups", True) is True
        assert run_all.argvs == [["nvidia-ctk", "config", "--set", "nvidia-container-cli.no-cgroups=true", "--in-place"]]
        assert toolkit.set_config("nvidia-container-cli.no-cgroups", False) is False
        assert run_all.argvs[1][3] == "nvidia-container-cli.no-cgroups=false"
        assert toolkit.set_config("nvidia-container-runtime.log-level", '"debug"') == "debug"

    def test_set_config_failure(self, toolkit, run_all):
        run_all.on("nvidia-ctk", retcode=1, stderr="open /etc/nvidia-container-runtime/config.toml: read-only file system")
        with pytest.raises(CommandExecutionError) as err:
            toolkit.set_config("nvidia-container-cli.no-cgroups", True)
        assert "read-only file system" in str(err.value)
        assert "nvidia-container-toolkit is installed" in str(err.value)


# ---------------------------------------------------------------------------- OCI hook


class TestOciHook:
    def test_write_oci_hook_is_nvidias_format(self, toolkit, tmp_path):
        path = tmp_path / "hooks.d" / "oci-nvidia-hook.json"
        assert toolkit.write_oci_hook(str(path)) == NVIDIA_HOOK
        data = json.loads(path.read_text())
        assert data == NVIDIA_HOOK
        assert oct(path.stat().st_mode & 0o777) == "0o644"
        assert toolkit.oci_hook(str(path)) == data
        assert toolkit.oci_hook(str(tmp_path / "absent.json")) is None
        assert os.listdir(path.parent) == ["oci-nvidia-hook.json"]

    def test_default_path(self, toolkit, host):
        toolkit.write_oci_hook()
        assert json.loads(host.path("/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json").read_text()) == NVIDIA_HOOK
        assert toolkit.oci_hook() == NVIDIA_HOOK

    def test_content_for_another_binary(self, toolkit):
        content = toolkit.oci_hook_content("/opt/nvidia/bin/nvidia-container-runtime-hook")
        assert content["hook"]["path"] == "/opt/nvidia/bin/nvidia-container-runtime-hook"
        assert content["hook"]["args"] == ["nvidia-container-runtime-hook", "prestart"]
        assert toolkit.oci_hook_content() == NVIDIA_HOOK

    def test_invalid_json_is_none(self, toolkit, tmp_path):
        path = tmp_path / "hook.json"
        path.write_text('{"version": "1.0.0",')
        assert toolkit.oci_hook(str(path)) is None

    def test_remove_oci_hook(self, toolkit, tmp_path):
        path = tmp_path / "hook.json"
        path.write_text("{}")
        assert toolkit.remove_oci_hook(str(path)) is True
        assert not path.exists()
        assert toolkit.remove_oci_hook(str(path)) is False


# ---------------------------------------------------------------------------- CDI spec

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
ABSENT = {"exists": False, "kind": None, "devices": [], "driver_version": None, "mode": None}


class TestCdiSpec:
    def test_cdi_spec(self, toolkit, tmp_path):
        path = tmp_path / "nvidia.yaml"
        assert toolkit.cdi_spec(str(path)) == ABSENT
        path.write_text(SPEC)
        path.chmod(0o600)
        assert toolkit.cdi_spec(str(path)) == {
            "exists": True, "kind": "nvidia.com/gpu", "devices": ["0", "all"],
            "driver_version": "550.127.08", "mode": "0600"}

    def test_default_path(self, toolkit, host):
        host.write("/etc/cdi/nvidia.yaml", SPEC)
        assert toolkit.cdi_spec()["driver_version"] == "550.127.08"

    def test_json_spec(self, toolkit, tmp_path):
        path = tmp_path / "nvidia.json"
        path.write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [{"name": "all"}]}))
        spec = toolkit.cdi_spec(str(path))
        assert (spec["kind"], spec["devices"], spec["driver_version"]) == ("nvidia.com/gpu", ["all"], None)

    @pytest.mark.parametrize("text", ["kind: [nvidia.com/gpu\n", "- a list\n- not a spec\n", ""])
    def test_unreadable_spec_exists_but_says_nothing(self, toolkit, tmp_path, text):
        path = tmp_path / "nvidia.yaml"
        path.write_text(text)
        assert toolkit.cdi_spec(str(path)) == dict(ABSENT, exists=True, mode="0644")

    def test_cdi_generate_atomic_and_world_readable(self, toolkit, tmp_path, run_all):
        cdi = tmp_path / "cdi"

        def generate(argv, kwargs):
            out = argv[-1].split("=", 1)[1]
            # Written beside the spec, in a directory of its own that Podman does not read.
            assert os.path.dirname(os.path.dirname(out)) == str(cdi)
            assert os.path.basename(out) == "nvidia.yaml"
            with open(out, "w") as fh:
                fh.write(SPEC)
            os.chmod(out, 0o600)

        run_all.on("nvidia-ctk", "cdi", "generate", effect=generate)
        spec = toolkit.cdi_generate(str(cdi / "nvidia.yaml"))
        assert run_all.argvs[0][:3] == ["nvidia-ctk", "cdi", "generate"]
        assert run_all.argvs[0][3].startswith(f"--output={cdi}/.nvgpu-")
        assert spec["mode"] == "0644" and spec["driver_version"] == "550.127.08"
        assert os.listdir(cdi) == ["nvidia.yaml"]

    def test_cdi_generate_failure_leaves_old_spec_and_no_temp(self, toolkit, tmp_path, run_all):
        cdi = tmp_path / "cdi"
        cdi.mkdir()
        (cdi / "nvidia.yaml").write_text(SPEC)
        run_all.on("nvidia-ctk", retcode=1, stderr="failed to initialize NVML: driver/library version mismatch")
        with pytest.raises(CommandExecutionError, match="version mismatch") as err:
            toolkit.cdi_generate(str(cdi / "nvidia.yaml"))
        assert "nvidia-smi" in str(err.value)
        assert os.listdir(cdi) == ["nvidia.yaml"]
        assert (cdi / "nvidia.yaml").read_text() == SPEC

    def test_cdi_generate_default_path(self, toolkit, host, run_all):
        def generate(argv, kwargs):
            with open(argv[-1].split("=", 1)[1], "w") as fh:
                fh.write(SPEC)

        run_all.on("nvidia-ctk", "cdi", "generate", effect=generate)
        toolkit.cdi_generate()
        assert host.path("/etc/cdi/nvidia.yaml").read_text() == SPEC


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize("call", [
    lambda tk: tk.cdi_generate("nvidia.yaml"),
    lambda tk: tk.cdi_generate("cdi/nvidia.yaml"),
    lambda tk: tk.write_oci_hook("oci-nvidia-hook.json"),
    lambda tk: tk.remove_oci_hook("oci-nvidia-hook.json"),
])
def test_relative_paths_are_refused_before_anything_is_written(toolkit, tmp_path, monkeypatch, run_all, call):
    home = tmp_path / "root"
    home.mkdir()
    monkeypatch.chdir(home)
    with pytest.raises(SaltInvocationError, match="must be an absolute path"):
        call(toolkit)
    assert os.listdir(home) == []
    assert run_all.calls == []


def test_cdi_generate_into_a_directory_that_cannot_be_made_names_the_spec(toolkit, tmp_path, run_all):
    (tmp_path / "srv").write_text("a file where the spec's parent should be\n")
    path = tmp_path / "srv" / "cdi" / "nvidia.yaml"
    with pytest.raises(CommandExecutionError) as err:
        toolkit.cdi_generate(str(path))
    assert str(err.value) == f"cannot write {path}: Not a directory (at {tmp_path / 'srv' / 'cdi'})"
    assert err.value.path == str(path)
    assert run_all.calls == []


def test_cdi_generate_disk_full_leaves_no_temp_and_names_the_spec(toolkit, tmp_path, run_all):
    cdi = tmp_path / "cdi"

    def full(argv, kwargs):
        out = argv[-1].split("=", 1)[1]
        open(out, "w").close()  # nvidia-ctk created the file, then could not write it
        return {"retcode": 1, "stderr": f'level=error msg="failed to save CDI spec: write {out}: no space left on device"'}

    run_all.on("nvidia-ctk", "cdi", "generate", effect=full)
    with pytest.raises(CommandExecutionError) as err:
        toolkit.cdi_generate(str(cdi / "nvidia.yaml"))
    assert str(err.value).startswith(f"generating the CDI spec {cdi / 'nvidia.yaml'} failed")
    assert "no space left on device" in str(err.value).splitlines()[0]
    assert err.value.path == str(cdi / "nvidia.yaml")
    assert os.listdir(cdi) == []


def test_cdi_generate_rename_failure_is_one_line(toolkit, tmp_path, run_all, monkeypatch):
    cdi = tmp_path / "cdi"
    run_all.on("nvidia-ctk", "cdi", "generate",
               effect=lambda argv, kwargs: open(argv[-1].split("=", 1)[1], "w").write(SPEC) and None)

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), src)

    monkeypatch.setattr(toolkit.os, "replace", read_only)
    with pytest.raises(CommandExecutionError) as err:
        toolkit.cdi_generate(str(cdi / "nvidia.yaml"))
    assert str(err.value) == f"cannot write {cdi / 'nvidia.yaml'}: Read-only file system"
    assert os.listdir(cdi) == []


def test_remove_oci_hook_os_error_names_the_hook(toolkit, tmp_path):
    path = tmp_path / "oci-nvidia-hook.json"
    path.mkdir()
    with pytest.raises(CommandExecutionError) as err:
        toolkit.remove_oci_hook(str(path))
    assert str(err.value).startswith(f"cannot remove {path}: ")
    assert err.value.path == str(path)


def test_cdi_refresh_shipped_is_the_service_unit_file(toolkit, tmp_path):
    lib, etc = tmp_path / "usr/lib/systemd/system", tmp_path / "etc/systemd/system"
    lib.mkdir(parents=True)
    etc.mkdir(parents=True)
    assert toolkit.cdi_refresh_shipped(dirs=(str(etc), str(lib))) is False
    (lib / "nvidia-cdi-refresh.path").write_text("[Path]\n")
    assert toolkit.cdi_refresh_shipped(dirs=(str(etc), str(lib))) is False
    (lib / "nvidia-cdi-refresh.service").write_text("[Service]\n")
    assert toolkit.cdi_refresh_shipped(dirs=(str(etc), str(lib))) is True
