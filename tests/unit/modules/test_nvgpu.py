"""
The nvgpu execution module (_modules/nvgpu.py): kernel modules and the driver, Podman's
version, the files nvidia-container-cli injects, the diagnosis, the vector add and the
pillar check. The node's files are a temporary tree, commands go to the fake
``cmd.run_all``. What really happens on a node is in tests/functional/test_module.py.
"""

import json
import os
import shutil

import nvgpu_failures
import nvgpu_node
import nvgpu_pillar
import pytest
import salt.modules.useradd
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.nvidia import VECTOR_ADD_PASSED
from tests.unit.conftest import KERNEL
from tests.unit.fakes import FakeSalt
from tests.unit.loader import load, real

MODPROBE = "/usr/bin/nvidia-modprobe"
CLI = "/usr/bin/nvidia-container-cli"
PODMAN = "/usr/bin/podman"


@pytest.fixture
def nvgpu(host):
    return load("_modules/nvgpu.py")


@pytest.fixture
def configure_loader_modules(nvgpu, run_all, which):
    functions = {"user.info": salt.modules.useradd.info, "nvgpu_cuda.vector_add": real("_modules/nvgpu_cuda.py").vector_add,
                 "nvgpu_doctor.run": real("_modules/nvgpu_doctor.py").run,
                 "nvgpu_health.gpus": real("_modules/nvgpu_health.py").gpus,
                 "nvgpu_cuda.vector_add_each": real("_modules/nvgpu_cuda.py").vector_add_each,
                 "nvgpu_toolkit.cdi_spec": real("_modules/nvgpu_toolkit.py").cdi_spec,
                 "nvgpu_selinux.container_type": real("_modules/nvgpu_selinux.py").container_type,
                 "nvgpu_selinux.mode": real("_modules/nvgpu_selinux.py").mode,
                 "nvgpu_selinux.policy_modules": real("_modules/nvgpu_selinux.py").policy_modules,
                 "nvgpu_selinux.boolean": real("_modules/nvgpu_selinux.py").boolean}
    return {
        nvgpu: {
            "__salt__": FakeSalt(functions=functions, run_all=run_all),
            "__pillar__": {},
            "__grains__": {"kernel": "Linux"},
            "__opts__": {"test": False},
            "__context__": {},
        }
    }


class TestVirtual:
    def test_linux(self, nvgpu):
        assert nvgpu.__virtual__() == "nvgpu"

    def test_not_linux(self, nvgpu):
        nvgpu.__grains__["kernel"] = "Windows"
        loaded, reason = nvgpu.__virtual__()
        assert loaded is False and "Linux" in reason


# ---------------------------------------------------------------------------- kernel modules


class TestLoadedModules:
    def test_from_sys_module(self, nvgpu, host):
        host.load("nvidia", "nouveau")
        assert nvgpu.loaded_modules() == {
            "nvidia": True,
            "nvidia_uvm": False,
            "nvidia_modeset": False,
            "nvidia_drm": False,
            "nouveau": True,
        }

    def test_proc_modules_fallback(self, nvgpu, host, monkeypatch):
        monkeypatch.setattr(nvgpu_node, "SYS_MODULE", str(host.path("/no-sysfs")))
        host.write(
            "/proc/modules",
            "nvidia_uvm 1544192 0 - Live 0x0000000000000000 (POE)\n"
            "nvidia 56729600 1 nvidia_uvm, Live 0x0000000000000000 (POE)\n",
        )
        assert nvgpu.loaded_modules() == {
            "nvidia": True,
            "nvidia_uvm": True,
            "nvidia_modeset": False,
            "nvidia_drm": False,
            "nouveau": False,
        }

    def test_neither_source(self, nvgpu, host, monkeypatch):
        monkeypatch.setattr(nvgpu_node, "SYS_MODULE", str(host.path("/no-sysfs")))
        assert not any(nvgpu.loaded_modules().values())

    def test_kernel_module_loaded_reads_sys_module(self, nvgpu, host):
        assert nvgpu.kernel_module_loaded("nouveau") is False
        host.path("/sys/module/nouveau").mkdir()
        assert nvgpu.kernel_module_loaded("nouveau") is True


def modprobe(host):
    """What nvidia-modprobe does: load nvidia (or nvidia_uvm with -u) and make the device nodes."""

    def effect(argv, kwargs):
        if argv[1:] == []:
            host.load("nvidia")
            host.touch("/dev/nvidiactl", "/dev/nvidia0")
        elif argv[1:] == ["-u"]:
            host.load("nvidia_uvm")
            host.touch("/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")

    return effect


def built(host, release=KERNEL):
    host.touch(f"/lib/modules/{release}/extra/nvidia.ko.xz")


class TestLoadModules:
    def test_loads_then_idempotent(self, nvgpu, host, run_all):
        run_all.on(MODPROBE, effect=modprobe(host))
        host.touch("/dev/nvidia-caps/nvidia-cap1")
        ret = nvgpu.load_modules()
        assert run_all.argvs == [[MODPROBE], [MODPROBE, "-u"]]
        assert all(kwargs["python_shell"] is False for _, kwargs in run_all.calls)
        assert ret["changed"] is True
        assert ret["modules"]["nvidia"] and ret["modules"]["nvidia_uvm"]
        dev = host.path("/dev")
        assert ret["device_nodes"] == sorted(
            f"{dev}/{name}"
            for name in ("nvidiactl", "nvidia0", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-caps/nvidia-cap1")
        )

        again = nvgpu.load_modules()
        assert len(run_all.calls) == 2, "second call ran a command"
        assert again["changed"] is False
        assert again["device_nodes"] == ret["device_nodes"]

    def test_uvm_false_runs_only_nvidia_modprobe(self, nvgpu, host, run_all):
        run_all.on(MODPROBE, effect=modprobe(host))
        ret = nvgpu.load_modules(uvm=False)
        assert run_all.argvs == [[MODPROBE]]
        assert ret["modules"]["nvidia"] and not ret["modules"]["nvidia_uvm"]

    def test_uvm_false_with_nvidia_loaded_runs_nothing(self, nvgpu, host, run_all):
        host.load("nvidia")
        assert nvgpu.load_modules(uvm=False)["changed"] is False
        assert run_all.calls == []

    def test_uvm_missing_alone_triggers_load(self, nvgpu, host, run_all):
        host.load("nvidia")
        run_all.on(MODPROBE, effect=modprobe(host))
        assert nvgpu.load_modules()["changed"] is True
        assert len(run_all.calls) == 2

    def test_tool_missing_names_driver_stream(self, nvgpu, which, run_all):
        which.tools.discard("nvidia-modprobe")
        with pytest.raises(CommandExecutionError, match=r"nvidia-modprobe.*nvidia-driver:"):
            nvgpu.load_modules()
        assert run_all.calls == []

    def test_failure_with_nouveau_loaded(self, nvgpu, host, run_all):
        built(host)
        host.load("nouveau")
        run_all.on(MODPROBE, retcode=1, stderr="modprobe: ERROR: could not insert 'nvidia': No such device")
        with pytest.raises(CommandExecutionError) as err:
            nvgpu.load_modules()
        text = str(err.value)
        assert "could not insert 'nvidia'" in text
        assert "nouveau" in text and "blacklist" in text
        assert "kernel-devel" not in text
        assert err.value.info["stderr"].startswith("modprobe: ERROR")
        assert err.value.info["diagnosis"] == nvgpu_failures.NOUVEAU_LOADED
        assert run_all.argvs == [[MODPROBE]], "went on after the first failure"

    def test_failure_with_both_blockers_names_both_module_first(self, nvgpu, host, run_all):
        host.load("nouveau")
        run_all.on(MODPROBE, retcode=1, stderr="modprobe: FATAL: Module nvidia not found")
        with pytest.raises(CommandExecutionError) as err:
            nvgpu.load_modules()
        cause = err.value.info["diagnosis"]["cause"]
        assert cause.index("no nvidia kernel module") < cause.index("nouveau")
        assert f"kernel-devel-{KERNEL}" in err.value.info["diagnosis"]["fix"]

    def test_failure_without_module_for_running_kernel(self, nvgpu, host, run_all):
        built(host, "4.18.0-477.10.1.el8_8.x86_64")  # a module exists, but for another kernel
        run_all.on(MODPROBE, retcode=1, stderr="modprobe: FATAL: Module nvidia not found")
        with pytest.raises(CommandExecutionError) as err:
            nvgpu.load_modules()
        assert f"kernel-devel-{KERNEL}" in str(err.value)
        assert "DKMS" in str(err.value)

    def test_failure_with_module_built(self, nvgpu, host, run_all):
        built(host)
        run_all.on(MODPROBE, retcode=1)
        with pytest.raises(CommandExecutionError) as err:
            nvgpu.load_modules()
        assert "kernel-devel" not in str(err.value)
        assert "dmesg" in str(err.value)
        assert err.value.info["diagnosis"] == nvgpu_failures.KERNEL_REFUSED

    def test_a_module_refused_under_secure_boot(self, nvgpu, host, run_all):
        built(host)
        run_all.on(MODPROBE, retcode=1, stderr="modprobe: ERROR: could not insert 'nvidia': Key was rejected by service")
        with pytest.raises(CommandExecutionError) as err:
            nvgpu.load_modules()
        assert err.value.info["diagnosis"]["fix"] == nvgpu_failures.SECURE_BOOT_FIX
        assert "mokutil --import" in str(err.value)

    def test_silent_success_without_module_is_a_failure(self, nvgpu, host, run_all):
        built(host)
        run_all.on(MODPROBE)
        with pytest.raises(CommandExecutionError, match="nvidia, nvidia_uvm is not loaded") as err:
            nvgpu.load_modules()
        assert err.value.info["modules"]["nvidia"] is False
        assert err.value.info["diagnosis"] == nvgpu_failures.KERNEL_REFUSED


class TestUnloadAndReload:
    def test_unload_kernel_module(self, nvgpu, run_all):
        run_all.on("modprobe", "-r")
        assert nvgpu.unload_kernel_module("nouveau") is True
        assert run_all.argvs == [["modprobe", "-r", "nouveau"]]

    def test_unload_failure_says_how_to_get_rid_of_it(self, nvgpu, run_all):
        run_all.on("modprobe", "-r", retcode=1, stderr="modprobe: FATAL: Module nouveau is in use.")
        with pytest.raises(CommandExecutionError) as err:
            nvgpu.unload_kernel_module("nouveau")
        assert "Module nouveau is in use" in str(err.value)
        assert "rd.driver.blacklist=nouveau" in str(err.value)

    def test_reload_unloads_the_loaded_users_first_then_loads(self, nvgpu, host, run_all):
        host.load("nvidia", "nvidia_modeset", "nvidia_uvm")

        def unload(argv, kwargs):
            for name in argv[2:]:
                (host.path(f"/sys/module/{name}/initstate")).unlink()
                host.path(f"/sys/module/{name}").rmdir()

        run_all.on("modprobe", "-r", effect=unload)
        run_all.on(MODPROBE, effect=modprobe(host))
        ret = nvgpu.reload_driver()
        assert run_all.argvs == [
            ["modprobe", "-r", "nvidia_uvm", "nvidia_modeset", "nvidia"],
            [MODPROBE],
            [MODPROBE, "-u"],
        ]
        assert ret["changed"] is True and ret["modules"]["nvidia_uvm"] is True

    def test_reload_with_nothing_loaded_only_loads(self, nvgpu, host, run_all):
        run_all.on(MODPROBE, effect=modprobe(host))
        nvgpu.reload_driver(uvm=False)
        assert run_all.argvs == [[MODPROBE]]

    def test_reload_in_use_fails_before_loading(self, nvgpu, host, run_all):
        host.load("nvidia")
        run_all.on("modprobe", "-r", retcode=1, stderr="modprobe: FATAL: Module nvidia is in use.")
        with pytest.raises(CommandExecutionError) as err:
            nvgpu.reload_driver()
        assert "lsof /dev/nvidia*" in str(err.value) and "reboot" in str(err.value)
        assert run_all.argvs == [["modprobe", "-r", "nvidia"]]


class TestDriverVersions:
    def test_sysfs(self, nvgpu, host):
        host.load("nvidia")
        host.write("/sys/module/nvidia/version", "550.127.08\n")
        assert nvgpu.driver_version() == "550.127.08"

    def test_proc_fallback(self, nvgpu, host):
        host.write("/proc/driver/nvidia/version",
                   "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.08  Wed Oct  2 05:52:47 UTC 2024\n")
        assert nvgpu.driver_version() == "550.127.08"

    def test_not_loaded(self, nvgpu):
        assert nvgpu.driver_version() is None

    def test_installed_driver_version_takes_newest(self, nvgpu, host):
        host.touch("/usr/lib64/libcuda.so.1", "/usr/lib64/libcuda.so.550.127.08", "/usr/lib64/libcuda.so.580.105.08")
        assert nvgpu.installed_driver_version() == "580.105.08"

    def test_nothing_installed(self, nvgpu):
        assert nvgpu.installed_driver_version() is None


class TestPodmanVersion:
    def test_version(self, nvgpu, run_all):
        run_all.on(PODMAN, "--version", stdout="podman version 4.3.1")
        assert nvgpu.podman_version() == "4.3.1"
        assert run_all.argvs == [[PODMAN, "--version"]]

    def test_not_installed(self, nvgpu, which, run_all):
        which.tools.discard("podman")
        assert nvgpu.podman_version() is None
        assert run_all.calls == []

    def test_broken_podman_raises(self, nvgpu, run_all):
        run_all.on(PODMAN, retcode=125, stderr="Error: cannot read storage.conf")
        with pytest.raises(CommandExecutionError, match="storage.conf"):
            nvgpu.podman_version()


# ---------------------------------------------------------------------------- container files

# nvidia-container-cli -k list on a RHEL 8 node with two A100s in MIG mode (driver 550).
RHEL_LIST = """\
/dev/nvidiactl
/dev/nvidia-uvm
/dev/nvidia-uvm-tools
/dev/nvidia-modeset
/dev/nvidia0
/dev/nvidia1
/dev/nvidia-caps/nvidia-cap1
/dev/nvidia-caps/nvidia-cap2
/proc/driver/nvidia/capabilities/mig/config
/proc/driver/nvidia/capabilities/mig/monitor
/proc/driver/nvidia/capabilities/gpu0/mig/gi1/access
/proc/driver/nvidia/capabilities/gpu0/mig/gi1/ci0/access
/usr/bin/nvidia-smi
/usr/bin/nvidia-debugdump
/usr/bin/nvidia-persistenced
/usr/bin/nvidia-cuda-mps-control
/usr/bin/nvidia-cuda-mps-server
/usr/lib64/libnvidia-ml.so.550.127.08
/usr/lib64/libnvidia-cfg.so.550.127.08
/usr/lib64/libcuda.so.550.127.08
/usr/lib64/libnvidia-ptxjitcompiler.so.550.127.08
/usr/lib64/vdpau/libvdpau_nvidia.so.550.127.08
/usr/lib64/libnvidia-encode.so.550.127.08
/usr/lib/libnvidia-ml.so.550.127.08
/usr/lib/libcuda.so.550.127.08
/usr/lib/vdpau/libvdpau_nvidia.so.550.127.08
/run/nvidia-persistenced/socket
/tmp/nvidia-mps
/lib/firmware/nvidia/550.127.08/gsp_ga10x.bin
/lib/firmware/nvidia/550.127.08/gsp_tu10x.bin
"""

# The same on Ubuntu (multiarch directories, firmware under /usr/lib).
DEBIAN_LIST = """\
/dev/nvidiactl
/dev/nvidia-uvm
/dev/nvidia0
/usr/bin/nvidia-smi
/usr/sbin/nvidia-persistenced
/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.159.04
/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04
/usr/lib/x86_64-linux-gnu/nvidia/xorg/nvidia_drv.so
/usr/lib/i386-linux-gnu/libnvidia-ml.so.580.159.04
/usr/lib/i386-linux-gnu/libcuda.so.580.159.04
/var/run/nvidia-fabricmanager/socket
/usr/lib/firmware/nvidia/580.159.04/gsp_ga10x.bin
"""


class TestCategorise:
    def test_rhel_every_path_in_exactly_one_list_in_order(self, nvgpu):
        files = nvgpu._categorise(RHEL_LIST)
        assert files["devices"] == [
            "/dev/nvidiactl",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidia-modeset",
            "/dev/nvidia0",
            "/dev/nvidia1",
        ]
        assert files["mig"] == [
            "/dev/nvidia-caps/nvidia-cap1",
            "/dev/nvidia-caps/nvidia-cap2",
            "/proc/driver/nvidia/capabilities/mig/config",
            "/proc/driver/nvidia/capabilities/mig/monitor",
            "/proc/driver/nvidia/capabilities/gpu0/mig/gi1/access",
            "/proc/driver/nvidia/capabilities/gpu0/mig/gi1/ci0/access",
        ]
        assert files["binaries"] == [
            "/usr/bin/nvidia-smi",
            "/usr/bin/nvidia-debugdump",
            "/usr/bin/nvidia-persistenced",
            "/usr/bin/nvidia-cuda-mps-control",
            "/usr/bin/nvidia-cuda-mps-server",
        ]
        assert files["libraries"] == [
            "/usr/lib64/libnvidia-ml.so.550.127.08",
            "/usr/lib64/libnvidia-cfg.so.550.127.08",
            "/usr/lib64/libcuda.so.550.127.08",
            "/usr/lib64/libnvidia-ptxjitcompiler.so.550.127.08",
            "/usr/lib64/vdpau/libvdpau_nvidia.so.550.127.08",
            "/usr/lib64/libnvidia-encode.so.550.127.08",
        ]
        assert files["libraries32"] == [
            "/usr/lib/libnvidia-ml.so.550.127.08",
            "/usr/lib/libcuda.so.550.127.08",
            "/usr/lib/vdpau/libvdpau_nvidia.so.550.127.08",
        ]
        assert files["ipcs"] == ["/run/nvidia-persistenced/socket", "/tmp/nvidia-mps"]
        assert files["firmware"] == [
            "/lib/firmware/nvidia/550.127.08/gsp_ga10x.bin",
            "/lib/firmware/nvidia/550.127.08/gsp_tu10x.bin",
        ]
        assert files["other"] == []
        flat = [path for kind in nvgpu.CONTAINER_FILE_KINDS for path in files[kind]]
        assert sorted(flat) == sorted(RHEL_LIST.split())

    def test_debian_multiarch(self, nvgpu):
        files = nvgpu._categorise(DEBIAN_LIST)
        assert files["libraries"] == [
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.159.04",
            "/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04",
            "/usr/lib/x86_64-linux-gnu/nvidia/xorg/nvidia_drv.so",
        ]
        assert files["libraries32"] == [
            "/usr/lib/i386-linux-gnu/libnvidia-ml.so.580.159.04",
            "/usr/lib/i386-linux-gnu/libcuda.so.580.159.04",
        ]
        assert files["binaries"] == ["/usr/bin/nvidia-smi", "/usr/sbin/nvidia-persistenced"]
        assert files["ipcs"] == ["/var/run/nvidia-fabricmanager/socket"]
        assert files["firmware"] == ["/usr/lib/firmware/nvidia/580.159.04/gsp_ga10x.bin"]
        assert files["devices"] == ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"]

    def test_other_64bit_roots(self, nvgpu):
        files = nvgpu._categorise(
            "/lib64/libcuda.so.1\n/usr/local/nvidia/lib64/libcuda.so.1\n"
            "/usr/lib/aarch64-linux-gnu/libcuda.so.1\n/usr/lib32/libcuda.so.1\n/lib/libcuda.so.1\n"
        )
        assert files["libraries"] == [
            "/lib64/libcuda.so.1",
            "/usr/local/nvidia/lib64/libcuda.so.1",
            "/usr/lib/aarch64-linux-gnu/libcuda.so.1",
        ]
        assert files["libraries32"] == ["/usr/lib32/libcuda.so.1", "/lib/libcuda.so.1"]

    def test_duplicates_dropped_first_occurrence_kept(self, nvgpu):
        files = nvgpu._categorise("/dev/nvidia0\n/usr/lib64/libcuda.so.1\n/dev/nvidia0\n/usr/lib64/libcuda.so.1\n")
        assert files["devices"] == ["/dev/nvidia0"]
        assert files["libraries"] == ["/usr/lib64/libcuda.so.1"]

    def test_crlf_blank_lines_and_padding(self, nvgpu):
        files = nvgpu._categorise("\r\n  /dev/nvidiactl  \r\n\r\n/usr/bin/nvidia-smi\r\n\n")
        assert files["devices"] == ["/dev/nvidiactl"]
        assert files["binaries"] == ["/usr/bin/nvidia-smi"]

    def test_empty_output(self, nvgpu):
        for text in ("", None):
            files = nvgpu._categorise(text)
            assert set(files) == set(nvgpu.CONTAINER_FILE_KINDS)
            assert all(value == [] for value in files.values())

    def test_unknown_path_is_kept_not_dropped(self, nvgpu):
        files = nvgpu._categorise("/usr/share/nvidia/nvoptix.bin\n")
        assert files["other"] == ["/usr/share/nvidia/nvoptix.bin"]

    def test_non_path_lines_ignored(self, nvgpu):
        files = nvgpu._categorise("WARNING, something odd\n/dev/nvidia0\n")
        assert [p for kind in files.values() for p in kind] == ["/dev/nvidia0"]

    def test_binary_in_lib_dir_is_a_library_not_a_binary(self, nvgpu):
        # Only a bin/ or sbin/ parent makes a binary; a directory merely starting with "bin" does not.
        files = nvgpu._categorise("/usr/lib64/binfmt/libfoo.so\n/usr/local/bin/nvidia-smi\n")
        assert files["libraries"] == ["/usr/lib64/binfmt/libfoo.so"]
        assert files["binaries"] == ["/usr/local/bin/nvidia-smi"]


class TestListContainerFiles:
    LIST = "/dev/nvidiactl\n/usr/bin/nvidia-smi\n/usr/lib64/libcuda.so.550.127.08\n/usr/lib/libcuda.so.550.127.08\n"

    def test_all_and_kind(self, nvgpu, run_all):
        run_all.on(CLI, stdout=self.LIST)
        files = nvgpu.list_container_files()
        assert files["libraries"] == ["/usr/lib64/libcuda.so.550.127.08"]
        assert files["libraries32"] == ["/usr/lib/libcuda.so.550.127.08"]
        assert run_all.argvs[0] == [CLI, "-k", "list"]
        assert nvgpu.list_container_files(kind="devices") == ["/dev/nvidiactl"]

    def test_without_loading_modules(self, nvgpu, run_all):
        run_all.on(CLI, stdout=self.LIST)
        nvgpu.list_container_files(load_kmods=False)
        assert run_all.argvs == [[CLI, "list"]]

    def test_unknown_kind_runs_nothing(self, nvgpu, run_all):
        with pytest.raises(SaltInvocationError, match="libraries32") as err:
            nvgpu.list_container_files(kind="libs")
        assert "devices" in str(err.value)
        assert run_all.calls == []

    def test_driver_not_loaded(self, nvgpu, run_all):
        run_all.on(CLI, retcode=1, stderr="nvidia-container-cli: initialization error: nvml error: driver not loaded")
        with pytest.raises(CommandExecutionError) as err:
            nvgpu.list_container_files()
        assert "nvml error: driver not loaded" in str(err.value)
        assert "nvgpu.load_modules" in str(err.value)
        assert err.value.info["retcode"] == 1
        assert err.value.info["diagnosis"]["layer"] == "kernel-modules"

    def test_unknown_failure_has_no_diagnosis(self, nvgpu, run_all):
        run_all.on(CLI, retcode=1, stderr="something new")
        with pytest.raises(CommandExecutionError) as err:
            nvgpu.list_container_files()
        assert err.value.info["diagnosis"] is None

    def test_tool_missing(self, nvgpu, which):
        which.tools.discard("nvidia-container-cli")
        with pytest.raises(CommandExecutionError, match="nvidia-container-toolkit.*libnvidia-container-tools"):
            nvgpu.list_container_files()


# ---------------------------------------------------------------------------- diagnose


class TestDiagnose:
    def test_known_text(self, nvgpu):
        assert nvgpu.diagnose("nvidia-container-cli: initialization error: nvml error: driver not loaded") == (
            nvgpu_failures.diagnose_text("nvml error: driver not loaded")
        )
        assert nvgpu.diagnose("nvml error: driver not loaded")["layer"] == "kernel-modules"

    def test_nothing_known(self, nvgpu):
        assert nvgpu.diagnose("") is None
        assert nvgpu.diagnose(None) is None

    def test_text_the_cli_parsed_as_yaml(self, nvgpu):
        # salt-call nvgpu.diagnose 123 / 'a: b' hands over an int / a dict.
        assert nvgpu.diagnose(123) is None
        assert nvgpu.diagnose({"Error": "nvml error: driver not loaded"})["layer"] == "kernel-modules"


# ---------------------------------------------------------------------------- vector add

NO_LIBCUDA = (
    "Failed to allocate device vector A (error code CUDA driver version is insufficient for CUDA runtime version)!"
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


class TestParseVectorAdd:
    def test_success(self, nvgpu):
        parsed = nvgpu._parse_vector_add(VECTOR_ADD_PASSED)
        assert parsed == {"passed_text": True, "elements": 50000, "blocks": 196, "threads": 256}

    def test_crlf(self, nvgpu):
        parsed = nvgpu._parse_vector_add(VECTOR_ADD_PASSED.replace("\n", "\r\n"))
        assert parsed == {"passed_text": True, "elements": 50000, "blocks": 196, "threads": 256}

    def test_other_block_size_and_extra_lines(self, nvgpu):
        text = (
            "Trying to pull localhost:5000/nvgpu/cuda-vector-add:v0.1...\n"
            "[Vector addition of 50000 elements]\n"
            "some debug line\n"
            "CUDA kernel launch with 391 blocks of 128 threads\n"
            "Test PASSED\n"
            "Done\n"
        )
        assert nvgpu._parse_vector_add(text) == {"passed_text": True, "elements": 50000, "blocks": 391, "threads": 128}

    def test_empty(self, nvgpu):
        assert nvgpu._parse_vector_add("", "") == {
            "passed_text": False, "elements": None, "blocks": None, "threads": None}
        assert nvgpu._parse_vector_add(None, None)["passed_text"] is False

    def test_failure_has_elements_but_no_pass(self, nvgpu):
        parsed = nvgpu._parse_vector_add("[Vector addition of 50000 elements]\n", NO_LIBCUDA + "\n")
        assert parsed == {"passed_text": False, "elements": 50000, "blocks": None, "threads": None}

    def test_passed_must_be_its_own_line(self, nvgpu):
        assert not nvgpu._parse_vector_add("Test PASSED? no: Result verification failed\n")["passed_text"]
        assert nvgpu._parse_vector_add("  Test PASSED  \r\n")["passed_text"]

    def test_pass_in_stderr_stream_counts(self, nvgpu):
        assert nvgpu._parse_vector_add("", "Test PASSED\n")["passed_text"]


SETPRIV = shutil.which("setpriv", path=nvgpu_node.USER_PATH)


def as_user(uid, gid, *argv):
    """argv as run_vector_add runs it as a rootless user: through setpriv (util-linux)."""
    return [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *argv]


def podman(run_all, version="4.9.4", stdout=VECTOR_ADD_PASSED, stderr="", retcode=0):
    """Podman ``version`` that answers ``podman run`` (as root or as a user) with the given output."""
    run_all.on(PODMAN, "--version", stdout=f"podman version {version}\n")
    run_all.on(PODMAN, "run", stdout=stdout, stderr=stderr, retcode=retcode)
    run_all.on(SETPRIV, stdout=stdout, stderr=stderr, retcode=retcode)
    return run_all


def runs(run_all):
    """The ``podman run`` calls, as root or through setpriv as a user: [(argv, kwargs)]."""
    return [(argv, kwargs) for argv, kwargs in run_all.calls
            if argv[1:2] == ["run"] or (argv[0] == SETPRIV and argv[argv.index("--") + 2:][:1] == ["run"])]


@pytest.fixture
def gpuuser(nvgpu, host):
    home = host.path("/home/gpuuser")
    home.mkdir(parents=True)
    nvgpu.__salt__.set(
        "user.info", lambda name: {"name": name, "uid": 2001, "gid": 2001, "home": str(home)} if name == "gpuuser" else {}
    )
    # A node whose policy lacks container_use_xserver_devices: NVIDIA's module, the guide's type.
    nvgpu.__salt__.set("nvgpu_selinux.container_type", "nvidia_container_t")
    return home


class TestRunVectorAdd:
    def test_root_hook_is_the_guides_root_test(self, nvgpu, run_all):
        podman(run_all)
        ret = nvgpu.run_vector_add(image=IMAGE, mode="hook")
        assert ret["command"] == [PODMAN, "run", "--rm", "--pull=missing", "--network=none", "--privileged", IMAGE]
        assert run_all.argvs == [ret["command"]], "an explicit mode needs no Podman version"
        kwargs = runs(run_all)[0][1]
        assert kwargs["python_shell"] is False and kwargs["timeout"] == 300 and "runas" not in kwargs
        assert ret["passed"] is True
        assert (ret["elements"], ret["blocks"], ret["threads"]) == (50000, 196, 256)
        assert ret["diagnosis"] is None and ret["user"] is None and ret["mode"] == "hook"
        assert isinstance(ret["duration_s"], float)
        assert nvgpu.__context__.get("retcode", 0) == 0

    def test_default_image(self, nvgpu, run_all):
        podman(run_all)
        ret = nvgpu.run_vector_add()
        assert ret["command"][-1] == "docker.io/mirrorgooglecontainers/cuda-vector-add:v0.1"

    def test_exact_return_keys(self, nvgpu, run_all):
        podman(run_all)
        assert set(nvgpu.run_vector_add(image=IMAGE)) == {
            "passed", "elements", "blocks", "threads", "user", "mode", "command",
            "retcode", "stdout", "stderr", "diagnosis", "duration_s",
        }  # fmt: skip

    def test_root_cdi(self, nvgpu, run_all):
        podman(run_all)
        ret = nvgpu.run_vector_add(image=IMAGE, mode="cdi", pull="never", timeout=30)
        assert ret["command"] == [
            PODMAN, "run", "--rm", "--pull=never", "--network=none", "--device", "nvidia.com/gpu=all", IMAGE,
        ]  # fmt: skip
        assert runs(run_all)[0][1]["timeout"] == 30

    @pytest.mark.parametrize("configured", ["hook", "cdi"])
    def test_auto_mode_is_what_pillar_configured(self, nvgpu, run_all, configured):
        podman(run_all, version="4.9.4")
        nvgpu.__pillar__["gpu"] = {"toolkit": {"mode": configured}}
        ret = nvgpu.run_vector_add(image=IMAGE)
        assert ret["mode"] == configured
        assert len(run_all.argvs) == 1, "the node's configured mode needs no Podman version"

    @pytest.mark.parametrize(
        "version, expected",
        [("3.4.4", "hook"), ("4.0.2", "hook"), ("4.1.1", "cdi"), ("4.9.4-rhel", "cdi"), ("5.2.2", "cdi")],
    )
    def test_auto_mode_follows_podmans_version(self, nvgpu, run_all, version, expected):
        podman(run_all, version=version)
        ret = nvgpu.run_vector_add(image=IMAGE)
        assert ret["mode"] == expected == nvgpu_node.resolve_mode("auto", version)
        assert ("nvidia.com/gpu=all" in ret["command"]) == (expected == "cdi")
        assert ("--privileged" in ret["command"]) == (expected == "hook")
        assert run_all.argvs == [[PODMAN, "--version"], ret["command"]]

    def test_explicit_mode_wins_over_podmans_version(self, nvgpu, run_all):
        podman(run_all, version="5.2.2")
        assert nvgpu.run_vector_add(image=IMAGE, mode="hook")["mode"] == "hook"

    def test_rootless_runs_as_the_user_with_the_guides_flags(self, nvgpu, run_all, gpuuser):
        podman(run_all)
        ret = nvgpu.run_vector_add(image=IMAGE, user="gpuuser", mode="hook")
        assert ret["command"] == [PODMAN, "run", "--rm", "--pull=missing", "--network=none", *ROOTLESS, IMAGE]
        assert "--privileged" not in ret["command"]
        (argv, kwargs), = runs(run_all)
        # Podman itself as the user (setpriv execs it: no su, no login shell, no PAM).
        assert argv == as_user(2001, 2001, *ret["command"])
        assert "runas" not in kwargs
        assert kwargs["env"] == {"HOME": str(gpuuser), "USER": "gpuuser", "LOGNAME": "gpuuser",
                                 "PATH": nvgpu_node.USER_PATH}
        assert kwargs["cwd"] == str(gpuuser)
        assert kwargs["clean_env"] is True
        assert kwargs["python_shell"] is False
        assert ret["user"] == "gpuuser" and ret["passed"] is True
        assert nvgpu.__salt__.called("user.info") == [(("gpuuser",), {})]

    @pytest.mark.parametrize("method, label", [("auto", "container_t"), ("boolean", "container_t"),
                                               ("module", "nvidia_container_t")])
    def test_rootless_label_follows_the_selinux_method_in_pillar(self, nvgpu, run_all, gpuuser, method, label):
        podman(run_all)
        nvgpu.__pillar__["gpu"] = {"selinux": {"method": method}}
        nvgpu.__salt__.set("nvgpu_selinux.container_type", lambda configured: {
            "auto": "container_t", "boolean": "container_t", "module": "nvidia_container_t"}[configured])
        ret = nvgpu.run_vector_add(image=IMAGE, user="gpuuser", mode="cdi")
        assert ret["command"][10] == f"label=type:{label}"
        assert nvgpu.__salt__.called("nvgpu_selinux.container_type") == [((method,), {})]

    def test_rootless_cdi(self, nvgpu, run_all, gpuuser):
        podman(run_all)
        ret = nvgpu.run_vector_add(image=IMAGE, user="gpuuser", mode="cdi")
        assert ret["command"][5:] == [*ROOTLESS, "--device", "nvidia.com/gpu=all", IMAGE]
        assert "--privileged" not in ret["command"]

    def test_rootless_gets_its_runtime_dir_when_it_exists(self, nvgpu, run_all, gpuuser, monkeypatch):
        isdir = os.path.isdir
        monkeypatch.setattr(os.path, "isdir", lambda path: path == "/run/user/2001" or isdir(path))
        podman(run_all)
        nvgpu.run_vector_add(image=IMAGE, user="gpuuser", mode="cdi")
        assert runs(run_all)[0][1]["env"]["XDG_RUNTIME_DIR"] == "/run/user/2001"

    def test_rootless_without_home_runs_in_root_dir(self, nvgpu, run_all, gpuuser):
        gpuuser.rmdir()
        podman(run_all)
        nvgpu.run_vector_add(image=IMAGE, user="gpuuser", mode="cdi")
        assert runs(run_all)[0][1]["cwd"] == "/"

    def test_no_xdg_runtime_dir_from_root_leaks(self, nvgpu, run_all, host, monkeypatch):
        monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/0")
        home = host.path("/home/u")
        home.mkdir(parents=True)
        nvgpu.__salt__.set("user.info", {"uid": 2999999, "gid": 2999999, "home": str(home)})
        nvgpu.__salt__.set("nvgpu_selinux.container_type", "nvidia_container_t")
        podman(run_all)
        nvgpu.run_vector_add(image=IMAGE, user="u", mode="hook")
        kwargs = runs(run_all)[0][1]
        assert not os.path.isdir("/run/user/2999999")
        assert "XDG_RUNTIME_DIR" not in kwargs["env"] and kwargs["clean_env"] is True

    def test_unknown_user(self, nvgpu, run_all, gpuuser):
        podman(run_all)
        with pytest.raises(SaltInvocationError, match="nobody-here"):
            nvgpu.run_vector_add(user="nobody-here")
        assert runs(run_all) == []

    def test_failure_is_a_result_with_diagnosis_and_nonzero_retcode(self, nvgpu, run_all):
        podman(run_all, stdout="[Vector addition of 50000 elements]\n", stderr=NO_LIBCUDA, retcode=1)
        ret = nvgpu.run_vector_add(image=IMAGE)
        assert ret["passed"] is False
        assert ret["retcode"] == 1
        assert ret["elements"] == 50000 and ret["blocks"] is None
        assert "libcuda was not injected" in ret["diagnosis"]["cause"]
        assert ret["diagnosis"]["layer"] == "toolkit"
        assert nvgpu.__context__["retcode"] == 1

    def test_exit_zero_without_pass_is_a_failure(self, nvgpu, run_all):
        podman(run_all, stdout="hello from the wrong image\n")
        ret = nvgpu.run_vector_add(image=IMAGE)
        assert ret["passed"] is False
        assert ret["diagnosis"] == nvgpu_failures.UNKNOWN
        assert "Test PASSED" in ret["diagnosis"]["cause"]
        assert nvgpu.__context__["retcode"] == 1

    def test_pass_text_but_nonzero_exit_is_a_failure(self, nvgpu, run_all):
        podman(run_all, retcode=125, stderr="Error: cleaning up container: some podman error")
        ret = nvgpu.run_vector_add(image=IMAGE)
        assert ret["passed"] is False and ret["diagnosis"] is not None
        assert nvgpu.__context__["retcode"] == 1

    def test_timeout(self, nvgpu, run_all):
        # What cmd.run_all returns when its timeout fires.
        podman(run_all, stdout="['/usr/bin/podman', 'run'] : Timed out after 5 seconds", retcode=1)
        ret = nvgpu.run_vector_add(image=IMAGE, timeout=5)
        assert runs(run_all)[0][1]["timeout"] == 5
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
            {"image": None},
            {"user": "root; id"},
            {"user": "-u"},
            {"user": 1000},
        ],
    )
    def test_bad_arguments_raise_and_run_nothing(self, nvgpu, run_all, kwargs):
        podman(run_all)
        with pytest.raises(SaltInvocationError):
            nvgpu.run_vector_add(**kwargs)
        assert run_all.calls == []
        assert nvgpu.__salt__.calls == []

    def test_podman_missing(self, nvgpu, which, run_all):
        which.tools.discard("podman")
        with pytest.raises(CommandExecutionError, match="dnf install podman"):
            nvgpu.run_vector_add()
        assert run_all.calls == []

    def test_host_runtime_delegates(self, nvgpu, run_all):
        nvgpu.__salt__.set("nvgpu_cuda.vector_add", {"passed": False, "diagnosis": {"cause": "c", "fix": "f"}})
        ret = nvgpu.run_vector_add(runtime="host", timeout=42)
        assert nvgpu.__salt__.called("nvgpu_cuda.vector_add") == [((), {"timeout": 42})]
        assert ret == {"passed": False, "diagnosis": {"cause": "c", "fix": "f"}}
        assert nvgpu.__context__["retcode"] == 1
        assert run_all.calls == []

    def test_host_runtime_passing_keeps_retcode(self, nvgpu):
        nvgpu.__salt__.set("nvgpu_cuda.vector_add", {"passed": True})
        assert nvgpu.run_vector_add(runtime="host")["passed"] is True
        assert "retcode" not in nvgpu.__context__

    def test_host_runtime_without_module(self, nvgpu):
        del nvgpu.__salt__["nvgpu_cuda.vector_add"]
        with pytest.raises(CommandExecutionError, match="nvgpu_cuda"):
            nvgpu.run_vector_add(runtime="host")


# ---------------------------------------------------------------------------- doctor


@pytest.mark.parametrize("ok", [True, False])
def test_doctor_is_the_doctors_run(nvgpu, ok):
    answer = {"ok": ok, "first_failing_layer": None if ok else "toolkit", "checks": []}
    nvgpu.__salt__.set("nvgpu_doctor.run", answer)
    assert nvgpu.doctor(user="alice") == answer
    assert nvgpu.__salt__.called("nvgpu_doctor.run") == [((), {"user": "alice"})]
    assert nvgpu.__context__.get("retcode") == (None if ok else 1)


# ---------------------------------------------------------------------------- pillar


def test_check_pillar_is_the_pillar_check(nvgpu):
    assert nvgpu.check_pillar("not a mapping") == nvgpu_pillar.check("not a mapping") != []
    errors = nvgpu.check_pillar({"driver": None})
    assert errors and errors[0].startswith("gpu:driver: None is not a mapping")


# --- gpus=each: one check per GPU ---------------------------------------------------------

EIGHT = [{"index": i, "uuid": f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd", "name": "NVIDIA H100 80GB HBM3",
          "pci": f"0000:{0x18 + 0x10 * i:02x}:00.0"} for i in range(8)]
ECC_TEXT = "Failed to allocate device vector A (error code uncorrectable ECC error encountered)!"


def _gpu_three_is_bad(argv, kwargs):
    if f"nvidia.com/gpu={EIGHT[3]['uuid']}" in argv:
        return {"retcode": 1, "stdout": "[Vector addition of 50000 elements]", "stderr": ECC_TEXT}
    return None


@pytest.fixture
def spec_names(nvgpu, host):
    """Write a CDI spec naming these devices; cdi_spec answers with the real reader."""
    nvgpu.__salt__.set("nvgpu_toolkit.cdi_spec", real("_modules/nvgpu_toolkit.py").cdi_spec)

    def write(*names):
        host.write("/etc/cdi/nvidia.yaml", json.dumps({"kind": "nvidia.com/gpu", "devices": [{"name": n} for n in names]}))
    return write


class TestEachGpu:
    def test_exactly_the_bad_gpu_is_named(self, nvgpu, run_all, spec_names):
        spec_names(*[str(g["index"]) for g in EIGHT], *[g["uuid"] for g in EIGHT], "all")
        nvgpu.__salt__.set("nvgpu_health.gpus", EIGHT)
        run_all.on(PODMAN, "run", stdout=VECTOR_ADD_PASSED, effect=_gpu_three_is_bad)
        ret = nvgpu.run_vector_add(image=IMAGE, mode="cdi", gpus="each")
        assert ret["passed"] is False and nvgpu.__context__["retcode"] == 1
        # One podman run per GPU, each with that GPU's CDI device by UUID and no other.
        assert sorted(argv[-2] for argv, _ in runs(run_all)) == sorted(f"nvidia.com/gpu={g['uuid']}" for g in EIGHT)
        assert [g["passed"] for g in ret["gpus"]] == [i != 3 for i in range(8)]
        assert [(g["index"], g["uuid"]) for g in ret["gpus"]] == [(g["index"], g["uuid"]) for g in EIGHT]
        assert [(g["index"], g["uuid"], g["layer"]) for g in ret["failed_gpus"]] == [(3, EIGHT[3]["uuid"], "gpu")]
        assert "uncorrectable ECC" in ret["failed_gpus"][0]["cause"]
        assert ret["diagnosis"]["cause"].startswith(f"GPU 3 ({EIGHT[3]['uuid']}, NVIDIA H100 80GB HBM3): ")
        assert ret["diagnosis"]["layer"] == "gpu" and ret["diagnosis"]["fix"] == ret["failed_gpus"][0]["fix"]

    def test_a_healthy_node_passes(self, nvgpu, run_all, spec_names):
        spec_names(*[str(g["index"]) for g in EIGHT], "all")
        nvgpu.__salt__.set("nvgpu_health.gpus", EIGHT)
        podman(run_all)
        ret = nvgpu.run_vector_add(image=IMAGE, mode="cdi", gpus="each")
        assert ret["passed"] is True and ret["failed_gpus"] == [] and ret["diagnosis"] is None
        assert "retcode" not in nvgpu.__context__
        # The spec names GPUs by index only: the devices are asked for by index.
        assert sorted(argv[-2] for argv, _ in runs(run_all)) == sorted(f"nvidia.com/gpu={i}" for i in range(8))

    def test_hook_mode_selects_the_gpu_by_environment(self, nvgpu, run_all):
        nvgpu.__salt__.set("nvgpu_health.gpus", EIGHT[:2])
        podman(run_all)
        nvgpu.run_vector_add(image=IMAGE, mode="hook", gpus="each")
        argvs = sorted(argv for argv, _ in runs(run_all))
        assert [argv[argv.index("--env") + 1] for argv in argvs] == [f"NVIDIA_VISIBLE_DEVICES={g['uuid']}"
                                                                     for g in EIGHT[:2]]
        assert all("--privileged" in argv and f"CUDA_VISIBLE_DEVICES={argv[-2].split('=')[-1]}" in argv
                   for argv in argvs)

    def test_host_checks_each_gpu_by_uuid(self, nvgpu):
        nvgpu.__salt__.set("nvgpu_health.gpus", EIGHT[:2])
        nvgpu.__salt__.set("nvgpu_cuda.vector_add_each", [{"passed": True}, {"passed": False, "diagnosis": {
            "cause": "The GPU failed", "fix": "reset", "layer": "gpu"}}])
        ret = nvgpu.run_vector_add(runtime="host", gpus="each", timeout=9)
        assert nvgpu.__salt__.called("nvgpu_cuda.vector_add_each") == [(([g["uuid"] for g in EIGHT[:2]],),
                                                                         {"timeout": 9})]
        assert [g["uuid"] for g in ret["failed_gpus"]] == [EIGHT[1]["uuid"]] and ret["passed"] is False

    def test_no_driver_is_a_failed_result(self, nvgpu):
        nvgpu.__salt__.set("nvgpu_health.gpus", CommandExecutionError(
            "`nvidia-smi --query-gpu=...` failed (9): NVIDIA-SMI has failed because it couldn't communicate with the "
            "NVIDIA driver."))
        ret = nvgpu.run_vector_add(runtime="host", gpus="each")
        assert ret["passed"] is False and ret["gpus"] == [] and nvgpu.__context__["retcode"] == 1
        assert "could not list the GPUs" in ret["diagnosis"]["cause"]

    def test_one_gpu(self, nvgpu, run_all):
        podman(run_all)
        ret = nvgpu.run_vector_add(image=IMAGE, mode="cdi", gpus=EIGHT[5]["uuid"])
        assert ["--device", f"nvidia.com/gpu={EIGHT[5]['uuid']}"] == ret["command"][-3:-1]
        nvgpu.__salt__.set("nvgpu_cuda.vector_add", {"passed": True})
        nvgpu.run_vector_add(runtime="host", gpus=5)
        assert nvgpu.__salt__.called("nvgpu_cuda.vector_add")[-1] == ((), {"timeout": 300, "gpu": "5"})

    @pytest.mark.parametrize("bad", ["some", "-1", "GPU-", "all,each", True, ["0"], "0; rm -rf /"])
    def test_bad_gpus_are_refused(self, nvgpu, bad):
        with pytest.raises(SaltInvocationError, match="gpus must be all, each"):
            nvgpu.run_vector_add(image=IMAGE, gpus=bad)


class TestValidationInputs:
    """What the validation state compares between runs: read from the node's files, the
    image's id from Podman (as the user, through setpriv, for a rootless one)."""

    @pytest.fixture
    def node(self, nvgpu, host, run_all, which, gpuuser):
        host.write("/proc/sys/kernel/random/boot_id", "b0a7\n")
        host.write("/sys/module/nvidia/version", "580.105.08\n")
        host.write("/etc/cdi/nvidia.yaml", "cdiVersion: 0.5.0\n")
        host.write("/etc/nvidia-container-runtime/config.toml", "[nvidia-container-cli]\n")
        host.write("/etc/subuid", "gpuuser:100000:65536\nother:165536:65536\n")
        host.write("/etc/subgid", "gpuuser:100000:65536\n")
        host.write("/usr/bin/podman", "")
        nvgpu.__salt__.set("nvgpu_selinux.mode", "Disabled")
        run_all.on(PODMAN, "image", "inspect", stdout="sha256:root\n")
        run_all.on(SETPRIV, stdout="sha256:user\n")
        return host

    def test_root(self, nvgpu, node, run_all):
        got = nvgpu.validation_inputs(image=IMAGE, mode="cdi")
        assert got["boot_id"] == "b0a7" and got["driver"] == "580.105.08"
        assert list(got["cdi_specs"]) == [str(node.path("/etc/cdi/nvidia.yaml"))]
        assert got["oci_hooks"] == {} and got["toolkit_config"]
        assert got["selinux"] == {"mode": "Disabled"}
        assert got["image_id"] == "sha256:root" and got["subuid"] is None
        assert run_all.argvs == [[PODMAN, "image", "inspect", "--format", "{{.Id}}", IMAGE]]

    def test_rootless_reads_the_users_storage_and_ranges(self, nvgpu, node, run_all):
        got = nvgpu.validation_inputs(user="gpuuser", image=IMAGE, mode="cdi")
        assert got["image_id"] == "sha256:user"
        assert got["subuid"] == got["subgid"] == [[100000, 65536]]
        assert run_all.argvs == [as_user(2001, 2001, PODMAN, "image", "inspect", "--format", "{{.Id}}", IMAGE)]

    def test_each_file_it_depends_on_changes_it(self, nvgpu, node):
        before = nvgpu.validation_inputs(image=IMAGE)
        for path, text in (("/etc/cdi/nvidia.yaml", "cdiVersion: 0.6.0\n"),
                           ("/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json", "{}\n"),
                           ("/etc/nvidia-container-runtime/config.toml", "[nvidia-container-cli]\nno-cgroups = true\n"),
                           ("/proc/sys/kernel/random/boot_id", "c0ffee\n"),
                           ("/sys/module/nvidia/version", "550.127.08\n")):
            node.write(path, text)
            after = nvgpu.validation_inputs(image=IMAGE)
            assert after != before, path
            before = after

    def test_the_fabric_manager_state_is_an_input_on_nvswitch_systems_only(self, nvgpu, node, run_all, which):
        which.tools.add("systemctl")
        assert nvgpu.validation_inputs(image=IMAGE)["fabric_manager"] is None
        assert not any(argv[0] == "systemctl" for argv in run_all.argvs)
        node.write("/sys/bus/pci/devices/0000:05:00.0/vendor", "0x10de\n")
        node.write("/sys/bus/pci/devices/0000:05:00.0/device", "0x22a3\n")
        run_all.on("systemctl", "is-active", stdout="active\n")
        running = nvgpu.validation_inputs(image=IMAGE)
        run_all.on("systemctl", "is-active", retcode=3, stdout="inactive\n")
        stopped = nvgpu.validation_inputs(image=IMAGE)
        assert (running["fabric_manager"], stopped["fabric_manager"]) == ("active", "inactive")
        assert ["systemctl", "is-active", "nvidia-fabricmanager"] in run_all.argvs

    def test_selinux_on_adds_its_modules_and_boolean(self, nvgpu, node):
        nvgpu.__salt__.set("nvgpu_selinux.mode", "Enforcing")
        nvgpu.__salt__.set("nvgpu_selinux.policy_modules", ["container", "nvidia-container"])
        nvgpu.__salt__.set("nvgpu_selinux.boolean", None)
        assert nvgpu.validation_inputs(image=IMAGE)["selinux"] == {
            "mode": "Enforcing", "modules": ["container", "nvidia-container"], "boolean": None}

    def test_missing_image_has_no_id(self, nvgpu, node, run_all):
        run_all.on(PODMAN, "image", "inspect", retcode=125, stderr="Error: no such image")
        assert nvgpu.validation_inputs(image=IMAGE)["image_id"] is None
