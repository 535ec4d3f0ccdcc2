"""
Logic of the nvgpu execution module's functions, with Salt's dunders replaced by
recording fakes and the module's fixed host paths pointed at a temporary tree.
What really happens on a node (salt-call, /sys/module, Podman) is covered by
tests/functional/test_module.py.
"""

import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.unit.loader import load


class FakeCmd:
    """cmd.run_all that records its calls and answers from a callback."""

    def __init__(self, answer=None):
        self.calls = []
        self.answer = answer or (lambda argv, kwargs: {"retcode": 0, "stdout": "", "stderr": ""})

    def __call__(self, argv, **kwargs):
        self.calls.append((list(argv), kwargs))
        ret = self.answer(argv, kwargs)
        ret.setdefault("pid", 1)
        return ret


@pytest.fixture
def tree(tmp_path):
    for name in ("sys/module", "dev", "lib/modules", "etc/cdi", "run/cdi", "bin"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "osrelease").write_text("4.18.0-513.24.1.el8_9.x86_64\n")
    return tmp_path


@pytest.fixture
def mod(tree, monkeypatch):
    module = load("_modules/nvgpu.py", "nvgpu_under_test_module")
    module.__grains__ = {"kernel": "Linux"}
    module.__context__ = {}
    module.__salt__ = {"cmd.run_all": FakeCmd()}
    module._SYS_MODULE = str(tree / "sys/module")
    module._PROC_MODULES = str(tree / "proc-modules-absent")
    module._DEV = str(tree / "dev")
    module._LIB_MODULES = str(tree / "lib/modules")
    module._OSRELEASE = str(tree / "osrelease")
    module._SYS_DRIVER_VERSION = str(tree / "sys/module/nvidia/version")
    module._PROC_DRIVER_VERSION = str(tree / "proc-driver-nvidia-version")
    module._CDI_DIRS = (str(tree / "etc/cdi"), str(tree / "run/cdi"))
    tools = {"nvidia-modprobe", "nvidia-container-cli", "podman"}

    def which(name):
        return f"/usr/bin/{name}" if name in tools else None

    monkeypatch.setattr(module.salt.utils.path, "which", which)
    module.tools = tools
    return module


def _load(tree, *names):
    for name in names:
        (tree / "sys/module" / name).mkdir(exist_ok=True)
        (tree / "sys/module" / name / "initstate").write_text("live\n")


class TestVirtual:
    def test_linux(self, mod):
        assert mod.__virtual__() == "nvgpu"

    def test_not_linux(self, mod):
        mod.__grains__ = {"kernel": "Windows"}
        loaded, reason = mod.__virtual__()
        assert loaded is False and "Linux" in reason


class TestLoadedModules:
    def test_from_sys_module(self, mod, tree):
        _load(tree, "nvidia", "nouveau")
        assert mod.loaded_modules() == {
            "nvidia": True,
            "nvidia_uvm": False,
            "nvidia_modeset": False,
            "nvidia_drm": False,
            "nouveau": True,
        }

    def test_builtin_module_without_initstate_counts(self, mod, tree):
        (tree / "sys/module/nvidia").mkdir()
        assert mod.loaded_modules()["nvidia"] is True

    def test_module_going_away_does_not_count(self, mod, tree):
        _load(tree, "nvidia")
        (tree / "sys/module/nvidia/initstate").write_text("going\n")
        assert mod.loaded_modules()["nvidia"] is False

    def test_proc_modules_fallback(self, mod, tree):
        mod._SYS_MODULE = str(tree / "no-sysfs")
        proc = tree / "modules"
        proc.write_text(
            "nvidia_uvm 1544192 0 - Live 0x0000000000000000 (POE)\n"
            "nvidia 56729600 1 nvidia_uvm, Live 0x0000000000000000 (POE)\n"
        )
        mod._PROC_MODULES = str(proc)
        assert mod.loaded_modules() == {
            "nvidia": True,
            "nvidia_uvm": True,
            "nvidia_modeset": False,
            "nvidia_drm": False,
            "nouveau": False,
        }

    def test_neither_source(self, mod, tree):
        mod._SYS_MODULE = str(tree / "no-sysfs")
        assert not any(mod.loaded_modules().values())


class TestLoadModules:
    def _modprobe(self, tree):
        """nvidia-modprobe that really 'loads' what it is asked to."""

        def answer(argv, kwargs):
            if argv[1:] == []:
                _load(tree, "nvidia")
                (tree / "dev/nvidiactl").touch()
                (tree / "dev/nvidia0").touch()
            elif argv[1:] == ["-u"]:
                _load(tree, "nvidia_uvm")
                (tree / "dev/nvidia-uvm").touch()
                (tree / "dev/nvidia-uvm-tools").touch()
            return {"retcode": 0, "stdout": "", "stderr": ""}

        return FakeCmd(answer)

    def test_loads_then_idempotent(self, mod, tree):
        cmd = mod.__salt__["cmd.run_all"] = self._modprobe(tree)
        (tree / "dev/nvidia-caps").mkdir()
        (tree / "dev/nvidia-caps/nvidia-cap1").touch()
        ret = mod.load_modules()
        assert [argv for argv, _ in cmd.calls] == [
            ["/usr/bin/nvidia-modprobe"],
            ["/usr/bin/nvidia-modprobe", "-u"],
        ]
        assert all(kwargs["python_shell"] is False for _, kwargs in cmd.calls)
        assert ret["changed"] is True
        assert ret["modules"]["nvidia"] and ret["modules"]["nvidia_uvm"]
        dev = str(tree / "dev")
        assert ret["device_nodes"] == sorted(
            f"{dev}/{name}"
            for name in ("nvidiactl", "nvidia0", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-caps/nvidia-cap1")
        )

        again = mod.load_modules()
        assert len(cmd.calls) == 2, "second call ran a command"
        assert again["changed"] is False
        assert again["device_nodes"] == ret["device_nodes"]

    def test_uvm_false_runs_only_nvidia_modprobe(self, mod, tree):
        cmd = mod.__salt__["cmd.run_all"] = self._modprobe(tree)
        ret = mod.load_modules(uvm=False)
        assert [argv for argv, _ in cmd.calls] == [["/usr/bin/nvidia-modprobe"]]
        assert ret["modules"]["nvidia"] and not ret["modules"]["nvidia_uvm"]

    def test_uvm_missing_alone_triggers_load(self, mod, tree):
        _load(tree, "nvidia")
        cmd = mod.__salt__["cmd.run_all"] = self._modprobe(tree)
        assert mod.load_modules()["changed"] is True
        assert len(cmd.calls) == 2

    def test_tool_missing_names_driver_stream(self, mod):
        mod.tools.discard("nvidia-modprobe")
        with pytest.raises(CommandExecutionError, match=r"nvidia-modprobe.*nvidia-driver:"):
            mod.load_modules()

    def _failing(self, stderr="", retcode=1):
        return FakeCmd(lambda argv, kwargs: {"retcode": retcode, "stdout": "", "stderr": stderr})

    def _built(self, tree):
        dkms = tree / "lib/modules/4.18.0-513.24.1.el8_9.x86_64/extra"
        dkms.mkdir(parents=True)
        (dkms / "nvidia.ko.xz").touch()

    def test_failure_with_nouveau_loaded(self, mod, tree):
        self._built(tree)
        _load(tree, "nouveau")
        mod.__salt__["cmd.run_all"] = self._failing(
            "modprobe: ERROR: could not insert 'nvidia': No such device"
        )
        with pytest.raises(CommandExecutionError) as err:
            mod.load_modules()
        text = str(err.value)
        assert "could not insert 'nvidia'" in text
        assert "nouveau" in text and "blacklist" in text
        assert "kernel-devel" not in text
        assert err.value.info["stderr"].startswith("modprobe: ERROR")

    def test_failure_with_both_blockers_names_both_module_first(self, mod, tree):
        _load(tree, "nouveau")
        mod.__salt__["cmd.run_all"] = self._failing("modprobe: FATAL: Module nvidia not found")
        with pytest.raises(CommandExecutionError) as err:
            mod.load_modules()
        cause = err.value.info["diagnosis"]["cause"]
        assert cause.index("no nvidia kernel module") < cause.index("nouveau")
        assert "kernel-devel-4.18.0-513.24.1.el8_9.x86_64" in err.value.info["diagnosis"]["fix"]

    def test_failure_without_module_for_running_kernel(self, mod, tree):
        # A module exists, but for another kernel.
        other = tree / "lib/modules/4.18.0-477.10.1.el8_8.x86_64/extra"
        other.mkdir(parents=True)
        (other / "nvidia.ko.xz").touch()
        mod.__salt__["cmd.run_all"] = self._failing("modprobe: FATAL: Module nvidia not found")
        with pytest.raises(CommandExecutionError) as err:
            mod.load_modules()
        assert "kernel-devel-4.18.0-513.24.1.el8_9.x86_64" in str(err.value)
        assert "DKMS" in str(err.value)

    def test_failure_with_module_built(self, mod, tree):
        self._built(tree)
        mod.__salt__["cmd.run_all"] = self._failing("")
        with pytest.raises(CommandExecutionError) as err:
            mod.load_modules()
        assert "kernel-devel" not in str(err.value)
        assert "dmesg" in str(err.value)

    def test_silent_success_without_module_is_a_failure(self, mod, tree):
        self._built(tree)
        mod.__salt__["cmd.run_all"] = self._failing("", retcode=0)
        with pytest.raises(CommandExecutionError, match="nvidia, nvidia_uvm is not loaded"):
            mod.load_modules()


class TestDriverVersion:
    def test_sysfs(self, mod, tree):
        _load(tree, "nvidia")
        (tree / "sys/module/nvidia/version").write_text("550.127.08\n")
        assert mod.driver_version() == "550.127.08"

    def test_proc_fallback(self, mod, tree):
        (tree / "proc-driver-nvidia-version").write_text(
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.08  Wed Oct  2 05:52:47 UTC 2024\n"
        )
        assert mod.driver_version() == "550.127.08"

    def test_not_loaded(self, mod):
        assert mod.driver_version() is None


class TestPodmanVersion:
    def test_version(self, mod):
        mod.__salt__["cmd.run_all"] = FakeCmd(
            lambda argv, kwargs: {"retcode": 0, "stdout": "podman version 4.3.1", "stderr": ""}
        )
        assert mod.podman_version() == "4.3.1"
        assert mod.__salt__["cmd.run_all"].calls[0][0] == ["/usr/bin/podman", "--version"]

    def test_not_installed(self, mod):
        mod.tools.discard("podman")
        assert mod.podman_version() is None


class TestListContainerFiles:
    LIST = (
        "/dev/nvidiactl\n/usr/bin/nvidia-smi\n"
        "/usr/lib64/libcuda.so.550.127.08\n/usr/lib/libcuda.so.550.127.08\n"
    )

    def _cli(self, mod, stdout="", stderr="", retcode=0):
        cmd = mod.__salt__["cmd.run_all"] = FakeCmd(
            lambda argv, kwargs: {"retcode": retcode, "stdout": stdout, "stderr": stderr}
        )
        return cmd

    def test_all_and_kind(self, mod):
        cmd = self._cli(mod, self.LIST)
        files = mod.list_container_files()
        assert files["libraries"] == ["/usr/lib64/libcuda.so.550.127.08"]
        assert files["libraries32"] == ["/usr/lib/libcuda.so.550.127.08"]
        assert cmd.calls[0][0] == ["/usr/bin/nvidia-container-cli", "-k", "list"]
        assert mod.list_container_files(kind="devices") == ["/dev/nvidiactl"]

    def test_without_loading_modules(self, mod):
        cmd = self._cli(mod, self.LIST)
        mod.list_container_files(load_kmods=False)
        assert cmd.calls[0][0] == ["/usr/bin/nvidia-container-cli", "list"]

    def test_unknown_kind_runs_nothing(self, mod):
        cmd = self._cli(mod, self.LIST)
        with pytest.raises(SaltInvocationError, match="libraries32") as err:
            mod.list_container_files(kind="libs")
        assert "devices" in str(err.value)
        assert cmd.calls == []

    def test_driver_not_loaded(self, mod):
        self._cli(
            mod, stderr="nvidia-container-cli: initialization error: nvml error: driver not loaded", retcode=1
        )
        with pytest.raises(CommandExecutionError) as err:
            mod.list_container_files()
        assert "nvml error: driver not loaded" in str(err.value)
        assert "nvgpu.load_modules" in str(err.value)
        assert err.value.info["retcode"] == 1

    def test_tool_missing(self, mod):
        mod.tools.discard("nvidia-container-cli")
        with pytest.raises(
            CommandExecutionError, match="nvidia-container-toolkit.*libnvidia-container-tools"
        ):
            mod.list_container_files()


SUCCESS = (
    "[Vector addition of 50000 elements]\nCopy input data from the host memory to the CUDA device\n"
    "CUDA kernel launch with 196 blocks of 256 threads\nCopy output data from the CUDA device to the "
    "host memory\nTest PASSED\nDone"
)
NO_LIBCUDA = (
    "Failed to allocate device vector A (error code CUDA driver version is insufficient for CUDA "
    "runtime version)!"
)
IMAGE = "localhost:5000/nvgpu/cuda-vector-add:v0.1"
ROOTLESS = [
    "--user",
    "2001:2001",
    "--security-opt=no-new-privileges",
    "--cap-drop=ALL",
    "--security-opt",
    "label=type:nvidia_container_t",
]


class TestRunVectorAdd:
    def _podman(self, mod, stdout=SUCCESS, stderr="", retcode=0):
        cmd = mod.__salt__["cmd.run_all"] = FakeCmd(
            lambda argv, kwargs: {"retcode": retcode, "stdout": stdout, "stderr": stderr}
        )
        return cmd

    def _user(self, mod, tree):
        home = tree / "home/gpuuser"
        home.mkdir(parents=True)
        mod.__salt__["user.info"] = lambda name: (
            {"name": name, "uid": 2001, "gid": 2001, "home": str(home)} if name == "gpuuser" else {}
        )
        return home

    def test_root_hook_is_the_guides_root_test(self, mod):
        cmd = self._podman(mod)
        ret = mod.run_vector_add(image=IMAGE, mode="hook")
        assert ret["command"] == [
            "/usr/bin/podman", "run", "--rm", "--pull=missing", "--network=none", "--privileged", IMAGE]
        assert cmd.calls[0][0] == ret["command"]
        kwargs = cmd.calls[0][1]
        assert kwargs["python_shell"] is False and kwargs["timeout"] == 300 and "runas" not in kwargs
        assert ret["passed"] is True
        assert (ret["elements"], ret["blocks"], ret["threads"]) == (50000, 196, 256)
        assert ret["diagnosis"] is None and ret["user"] is None and ret["mode"] == "hook"
        assert isinstance(ret["duration_s"], float)
        assert mod.__context__.get("retcode", 0) == 0

    def test_exact_return_keys(self, mod):
        self._podman(mod)
        assert set(mod.run_vector_add(image=IMAGE)) == {
            "passed", "elements", "blocks", "threads", "user", "mode", "command",
            "retcode", "stdout", "stderr", "diagnosis", "duration_s",
        }  # fmt: skip

    def test_root_cdi(self, mod):
        self._podman(mod)
        ret = mod.run_vector_add(image=IMAGE, mode="cdi", pull="never", timeout=30)
        assert ret["command"] == [
            "/usr/bin/podman", "run", "--rm", "--pull=never", "--network=none", "--device", "nvidia.com/gpu=all", IMAGE,
        ]  # fmt: skip

    @pytest.mark.parametrize(
        "where,name,content,expected",
        [
            ("etc/cdi", "nvidia.yaml", 'cdiVersion: "0.5.0"\nkind: nvidia.com/gpu\ndevices: []\n', "cdi"),
            ("run/cdi", "nvidia.json", '{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu"}', "cdi"),
            ("etc/cdi", "other.yaml", "cdiVersion: 0.5.0\nkind: vendor.com/fpga\n", "hook"),
            ("etc/cdi", "nvidia.yaml.bak", "kind: nvidia.com/gpu\n", "hook"),
            ("etc/cdi", "broken.yaml", "kind: [nvidia.com/gpu\n", "hook"),
            (None, None, None, "hook"),
        ],
    )
    def test_auto_mode(self, mod, tree, where, name, content, expected):
        if where:
            (tree / where / name).write_text(content)
        self._podman(mod)
        ret = mod.run_vector_add(image=IMAGE)
        assert ret["mode"] == expected
        assert ("nvidia.com/gpu=all" in ret["command"]) == (expected == "cdi")

    def test_rootless_runs_as_the_user_with_the_guides_flags(self, mod, tree):
        home = self._user(mod, tree)
        cmd = self._podman(mod)
        ret = mod.run_vector_add(image=IMAGE, user="gpuuser", mode="hook")
        assert ret["command"] == ["/usr/bin/podman", "run", "--rm", "--pull=missing", "--network=none", *ROOTLESS, IMAGE]
        assert "--privileged" not in ret["command"]
        kwargs = cmd.calls[0][1]
        assert kwargs["runas"] == "gpuuser"
        assert kwargs["env"]["HOME"] == str(home)
        assert kwargs["cwd"] == str(home)
        assert kwargs["clean_env"] is True
        assert kwargs["python_shell"] is False
        assert ret["user"] == "gpuuser" and ret["passed"] is True

    def test_rootless_cdi(self, mod, tree):
        self._user(mod, tree)
        self._podman(mod)
        ret = mod.run_vector_add(image=IMAGE, user="gpuuser", mode="cdi")
        assert ret["command"][5:] == [*ROOTLESS, "--device", "nvidia.com/gpu=all", IMAGE]
        assert "--privileged" not in ret["command"]

    def test_unknown_user(self, mod, tree):
        self._user(mod, tree)
        cmd = self._podman(mod)
        with pytest.raises(SaltInvocationError, match="nobody-here"):
            mod.run_vector_add(user="nobody-here")
        assert cmd.calls == []

    def test_failure_is_a_result_with_diagnosis_and_nonzero_retcode(self, mod):
        self._podman(mod, stdout="[Vector addition of 50000 elements]\n", stderr=NO_LIBCUDA, retcode=1)
        ret = mod.run_vector_add(image=IMAGE)
        assert ret["passed"] is False
        assert ret["retcode"] == 1
        assert ret["elements"] == 50000 and ret["blocks"] is None
        assert "libcuda was not injected" in ret["diagnosis"]["cause"]
        assert mod.__context__["retcode"] == 1

    def test_exit_zero_without_pass_is_a_failure(self, mod):
        self._podman(mod, stdout="hello from the wrong image\n")
        ret = mod.run_vector_add(image=IMAGE)
        assert ret["passed"] is False
        assert "Test PASSED" in ret["diagnosis"]["cause"]
        assert mod.__context__["retcode"] == 1

    def test_pass_text_but_nonzero_exit_is_a_failure(self, mod):
        self._podman(mod, retcode=125, stderr="Error: cleaning up container: some podman error")
        ret = mod.run_vector_add(image=IMAGE)
        assert ret["passed"] is False and ret["diagnosis"] is not None

    def test_timeout(self, mod):
        # What cmd.run_all returns when its timeout fires.
        cmd = self._podman(mod, stdout="['/usr/bin/podman', 'run'] : Timed out after 5 seconds", retcode=1)
        ret = mod.run_vector_add(image=IMAGE, timeout=5)
        assert cmd.calls[0][1]["timeout"] == 5
        assert ret["passed"] is False
        assert "timeout" in ret["diagnosis"]["cause"]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"mode": "nvidia"},
            {"runtime": "docker"},
            {"timeout": 0},
            {"timeout": -1},
            {"timeout": "300"},
            {"timeout": True},
            {"pull": "sometimes"},
            {"runtime": "host", "user": "gpuuser"},
            {"image": "--privileged"},
            {"image": "img; rm -rf /"},
            {"image": ""},
            {"user": "root; id"},
            {"user": "-u"},
            {"user": 1000},
        ],
    )
    def test_bad_arguments_raise_and_run_nothing(self, mod, kwargs):
        cmd = self._podman(mod)
        with pytest.raises(SaltInvocationError):
            mod.run_vector_add(**kwargs)
        assert cmd.calls == []

    def test_podman_missing(self, mod):
        mod.tools.discard("podman")
        with pytest.raises(CommandExecutionError, match="podman"):
            mod.run_vector_add()

    def test_host_runtime_delegates(self, mod):
        seen = {}

        def vector_add(timeout):
            seen["timeout"] = timeout
            return {"passed": False, "diagnosis": {"cause": "c", "fix": "f"}}

        mod.__salt__["nvgpu_cuda.vector_add"] = vector_add
        ret = mod.run_vector_add(runtime="host", timeout=42)
        assert seen == {"timeout": 42}
        assert ret["passed"] is False
        assert mod.__context__["retcode"] == 1
        assert mod.__salt__["cmd.run_all"].calls == []

    def test_host_runtime_without_module(self, mod):
        with pytest.raises(CommandExecutionError, match="nvgpu_cuda"):
            mod.run_vector_add(runtime="host")


def test_no_xdg_runtime_dir_from_root_leaks(mod, tree, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/0")
    home = tree / "home/u"
    home.mkdir(parents=True)
    mod.__salt__["user.info"] = lambda name: {"uid": 2999999, "gid": 2999999, "home": str(home)}
    cmd = mod.__salt__["cmd.run_all"] = FakeCmd(
        lambda argv, kwargs: {"retcode": 0, "stdout": SUCCESS, "stderr": ""}
    )
    mod.run_vector_add(image=IMAGE, user="u", mode="hook")
    kwargs = cmd.calls[0][1]
    assert not os.path.isdir("/run/user/2999999")
    assert "XDG_RUNTIME_DIR" not in kwargs["env"] and kwargs["clean_env"] is True
