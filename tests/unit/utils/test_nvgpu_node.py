"""
The shared layer (_utils/nvgpu_node.py): the one rule for ``auto``, the readers of the
node's files (on real files in a temporary tree), the parsers of tools' output, and the
one way a failed command becomes an error.
"""

import errno
import os

import nvgpu_node
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.unit.conftest import KERNEL
from tests.unit.fakes import FakeRunAll

# ---------------------------------------------------------------------------- modes


def test_modes():
    assert nvgpu_node.MODES == ("auto", "hook", "cdi")


@pytest.mark.parametrize(
    "text, expected",
    [("4.9.4-rhel", (4, 9, 4)), ("4.1", (4, 1)), ("podman 5.2.2-dev", (5, 2, 2)), ("1.2.3.4", (1, 2, 3)), ("", ())],
)
def test_version_tuple(text, expected):
    assert nvgpu_node.version_tuple(text) == expected


@pytest.mark.parametrize(
    "podman, expected",
    [
        ("3.4.4", "hook"),
        ("4.0.2", "hook"),
        ("4.0", "hook"),
        ("4.1", "cdi"),
        ("4.1.0", "cdi"),
        ("4.9.4-rhel", "cdi"),
        ("5.2.2", "cdi"),
        ("10.0.0", "cdi"),  # numbers, not text: "10" < "4" as strings
        (None, None),
        ("", None),
    ],
)
def test_resolve_mode_auto_by_podman_version(podman, expected):
    assert nvgpu_node.resolve_mode("auto", podman) == expected


@pytest.mark.parametrize("mode", ["hook", "cdi"])
@pytest.mark.parametrize("podman", [None, "3.4.4", "4.9.4"])
def test_resolve_mode_explicit_modes_stand_for_themselves(mode, podman):
    assert nvgpu_node.resolve_mode(mode, podman) == mode


@pytest.mark.parametrize("mode", ["oci", "AUTO", None, ""])
def test_resolve_mode_refuses_unknown_modes(mode):
    with pytest.raises(ValueError, match="auto, hook, cdi"):
        nvgpu_node.resolve_mode(mode, "4.9.4")


@pytest.mark.parametrize("owner, shipped, expected", [
    ("auto", True, "refresh"), ("auto", False, "formula"), ("formula", True, "formula"), ("refresh", False, "refresh")])
def test_resolve_cdi_owner(owner, shipped, expected):
    assert nvgpu_node.resolve_cdi_owner(owner, shipped) == expected


def test_resolve_cdi_owner_refuses_unknown_owners():
    with pytest.raises(ValueError, match="auto, formula, refresh"):
        nvgpu_node.resolve_cdi_owner("systemd", True)


@pytest.mark.parametrize("method, defined, expected", [
    ("auto", True, "boolean"), ("auto", False, "module"),
    ("boolean", False, "boolean"), ("module", True, "module")])
def test_resolve_selinux_method(method, defined, expected):
    assert nvgpu_node.resolve_selinux_method(method, defined) == expected
    assert nvgpu_node.SELINUX_CONTAINER_TYPES[expected] == {"boolean": "container_t",
                                                            "module": "nvidia_container_t"}[expected]


@pytest.mark.parametrize("method", ["on", "Auto", None, ""])
def test_resolve_selinux_method_refuses_unknown_methods(method):
    with pytest.raises(ValueError, match="auto, boolean, module"):
        nvgpu_node.resolve_selinux_method(method, True)


# ---------------------------------------------------------------------------- files


def test_read_file(tmp_path):
    (tmp_path / "text").write_text("550.127.08\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00garbage")
    assert nvgpu_node.read_file(str(tmp_path / "text")) == "550.127.08\n"
    assert nvgpu_node.read_file(str(tmp_path / "absent")) is None
    assert nvgpu_node.read_file(str(tmp_path / "binary")) is None
    assert nvgpu_node.read_file(str(tmp_path)) is None


def test_atomic_write_creates_directories_mode_and_no_temp(tmp_path):
    path = tmp_path / "a" / "b" / "hook.json"
    nvgpu_node.atomic_write(str(path), "one\n")
    assert path.read_text() == "one\n"
    assert path.stat().st_mode & 0o777 == 0o644
    nvgpu_node.atomic_write(str(path), "two\n", mode=0o600)
    assert path.read_text() == "two\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(path.parent) == ["hook.json"]


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "hook.json"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        nvgpu_node.atomic_write(str(path), b"bytes are not text")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["hook.json"]


def test_atomic_write_disk_full_is_one_line_naming_the_path_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "hook.json"
    path.write_text("old\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(nvgpu_node.os, "fsync", no_space)
    with pytest.raises(CommandExecutionError) as err:
        nvgpu_node.atomic_write(str(path), "new\n")
    assert str(err.value) == f"cannot write {path}: No space left on device"
    assert err.value.path == str(path)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["hook.json"]


def test_atomic_write_names_the_directory_it_could_not_create(tmp_path):
    (tmp_path / "etc").write_text("a file where a directory should be\n")
    path = tmp_path / "etc" / "cdi" / "nvidia.yaml"
    with pytest.raises(CommandExecutionError) as err:
        nvgpu_node.atomic_write(str(path), "spec\n")
    assert str(err.value) == f"cannot write {path}: Not a directory (at {tmp_path / 'etc' / 'cdi'})"
    assert os.listdir(tmp_path) == ["etc"]


@pytest.mark.parametrize("path", ["nvidia.yaml", "cdi/nvidia.yaml", "", None, ["/etc/cdi/nvidia.yaml"]])
def test_atomic_write_refuses_a_relative_path_and_writes_nothing(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SaltInvocationError, match="must be an absolute path") as err:
        nvgpu_node.atomic_write(path, "spec\n")
    assert err.value.path == path
    assert os.listdir(tmp_path) == []


def test_os_error_never_names_a_temporary_file():
    err = OSError(errno.EROFS, os.strerror(errno.EROFS), "/etc/cdi/.nvgpu-x1y2z3")
    assert str(nvgpu_node.os_error("write", "/etc/cdi/nvidia.yaml", err)) == (
        "cannot write /etc/cdi/nvidia.yaml: Read-only file system")
    inside = OSError(errno.EROFS, os.strerror(errno.EROFS), "/etc/cdi/.nvgpu-x1y2z3/nvidia.yaml")
    assert str(nvgpu_node.os_error("write", "/etc/cdi/nvidia.yaml", inside)) == (
        "cannot write /etc/cdi/nvidia.yaml: Read-only file system")
    same = OSError(errno.EISDIR, os.strerror(errno.EISDIR), "/etc/cdi/nvidia.yaml")
    assert str(nvgpu_node.os_error("remove", "/etc/cdi/nvidia.yaml", same)) == (
        "cannot remove /etc/cdi/nvidia.yaml: Is a directory")


# ---------------------------------------------------------------------------- commands


def test_command_error_says_what_command_exit_and_the_tools_words():
    ret = {"retcode": 3, "stdout": "ignored", "stderr": "  modprobe: FATAL: Module nvidia not found  \n"}
    err = nvgpu_node.command_error("loading", ["modprobe", "nvidia"], ret, fix="install the driver")
    assert isinstance(err, CommandExecutionError)
    assert err.error == (
        "loading failed (`modprobe nvidia` exited 3): modprobe: FATAL: Module nvidia not found\nFix: install the driver"
    )
    assert err.info == {
        "command": ["modprobe", "nvidia"],
        "retcode": 3,
        "stdout": "ignored",
        "stderr": "  modprobe: FATAL: Module nvidia not found  \n",
        "diagnosis": None,
    }


def test_command_error_diagnosis_wins_over_fix_and_stdout_when_stderr_is_empty():
    diagnosis = {"cause": "nouveau holds the GPU", "fix": "blacklist nouveau", "layer": "kernel-modules"}
    err = nvgpu_node.command_error("loading", ["x"], {"retcode": 1, "stdout": "said on stdout", "stderr": ""},
                                   fix="not this", diagnosis=diagnosis)
    assert err.error == (
        "loading failed (`x` exited 1): said on stdout\nLikely cause: nouveau holds the GPU\nFix: blacklist nouveau"
    )
    assert err.info["diagnosis"] == diagnosis


def test_command_error_without_output():
    err = nvgpu_node.command_error("x", ["true"], {"retcode": 1})
    assert err.error == "x failed (`true` exited 1): no output"
    assert err.info["stdout"] == "" and err.info["stderr"] == ""


def test_command_error_text_is_the_message_alone():
    # What a state shows as its comment: Salt appends a dump of `info` when the
    # constructor gets it ("Additional info follows: ..."), nvgpu keeps it an attribute.
    err = nvgpu_node.command_error("x", ["dnf"], {"retcode": 1, "stdout": "long\noutput", "stderr": "Error: no"})
    assert str(err) == err.error == "x failed (`dnf` exited 1): Error: no"
    assert err.info["stdout"] == "long\noutput"


def test_run_checked_runs_argv_without_shell_and_returns_the_result():
    run_all = FakeRunAll().on("nvidia-smi", stdout="GPU 0")
    ret = nvgpu_node.run_checked(run_all, ["nvidia-smi", "-L"], "listing GPUs",
                                 diagnosis=lambda _ret: pytest.fail("diagnosis asked on success"))
    assert ret["stdout"] == "GPU 0"
    assert run_all.calls == [(["nvidia-smi", "-L"], {"python_shell": False, "ignore_retcode": True})]


def test_run_checked_raises_with_the_diagnosis_of_the_failed_result():
    run_all = FakeRunAll().on("nvidia-smi", retcode=9, stderr="NVIDIA-SMI has failed")
    seen = []

    def diagnosis(ret):
        seen.append(ret["stderr"])
        return {"cause": "no driver", "fix": "load it", "layer": "kernel-modules"}

    with pytest.raises(CommandExecutionError) as err:
        nvgpu_node.run_checked(run_all, ["nvidia-smi"], "asking the GPU", diagnosis=diagnosis)
    assert seen == ["NVIDIA-SMI has failed"]
    assert "Likely cause: no driver\nFix: load it" in str(err.value)
    assert err.value.info["retcode"] == 9


# ---------------------------------------------------------------------------- kernel modules


def test_module_loaded_from_sys_module(host):
    host.load("nvidia", "nouveau")
    assert nvgpu_node.module_loaded("nvidia") is True
    assert nvgpu_node.module_loaded("nouveau") is True
    assert nvgpu_node.module_loaded("nvidia_uvm") is False


def test_module_loaded_takes_dashes_for_underscores(host):
    host.load("nvidia_uvm")
    assert nvgpu_node.module_loaded("nvidia-uvm") is True


def test_builtin_module_without_initstate_counts(host):
    host.path("/sys/module/nvidia").mkdir()
    assert nvgpu_node.module_loaded("nvidia") is True


def test_module_going_away_does_not_count(host):
    host.load("nvidia")
    host.write("/sys/module/nvidia/initstate", "going\n")
    assert nvgpu_node.module_loaded("nvidia") is False


def test_proc_modules_fallback_without_sysfs(host, monkeypatch):
    monkeypatch.setattr(nvgpu_node, "SYS_MODULE", str(host.path("/no-sysfs")))
    host.write(
        "/proc/modules",
        "nvidia_uvm 1544192 0 - Live 0x0000000000000000 (POE)\n"
        "nvidia 56729600 1 nvidia_uvm, Live 0x0000000000000000 (POE)\n\n",
    )
    assert nvgpu_node.module_loaded("nvidia") is True
    assert nvgpu_node.module_loaded("nvidia_uvm") is True
    assert nvgpu_node.module_loaded("nvidia_drm") is False


def test_neither_source_means_nothing_loaded(host, monkeypatch):
    monkeypatch.setattr(nvgpu_node, "SYS_MODULE", str(host.path("/no-sysfs")))
    assert nvgpu_node.module_loaded("nvidia") is False


def test_kernel_release(host):
    assert nvgpu_node.kernel_release() == KERNEL
    host.write("/proc/sys/kernel/osrelease", "\n")
    assert nvgpu_node.kernel_release() == os.uname().release


@pytest.mark.parametrize("name", ["nvidia.ko", "nvidia.ko.xz", "nvidia.ko.zst", "nvidia.ko.gz"])
@pytest.mark.parametrize("where", ["extra", "updates/dkms", "weak-updates/nvidia"])
def test_nvidia_ko_present(host, where, name):
    host.touch(f"/lib/modules/{KERNEL}/{where}/{name}")
    assert nvgpu_node.nvidia_ko_present(KERNEL) is True


def test_nvidia_ko_absent(host):
    host.touch(f"/lib/modules/{KERNEL}/extra/nvidia-uvm.ko.xz", f"/lib/modules/{KERNEL}/extra/nvidia.ko.bak",
               "/lib/modules/4.18.0-477.10.1.el8_8.x86_64/extra/nvidia.ko.xz")
    assert nvgpu_node.nvidia_ko_present(KERNEL) is False
    assert nvgpu_node.nvidia_ko_present("4.18.0-477.10.1.el8_8.x86_64") is True


def test_installed_kernels_in_rpm_order(host):
    for release in ("4.18.0-553.el8_10.x86_64", "4.18.0-513.24.1.el8_9.x86_64", "4.18.0-80.el8.x86_64"):
        host.touch(f"/lib/modules/{release}/vmlinuz")
    host.touch("/lib/modules/6.1.0-28-amd64/modules.dep")  # modules, but no kernel image: not installed here
    assert nvgpu_node.installed_kernels() == [
        "4.18.0-80.el8.x86_64", "4.18.0-513.24.1.el8_9.x86_64", "4.18.0-553.el8_10.x86_64"]


def test_the_next_boot_starts_the_newest_kernel(host):
    assert nvgpu_node.next_boot_kernel(KERNEL) == KERNEL  # nothing else installed
    host.touch("/lib/modules/4.18.0-477.el8_8.x86_64/vmlinuz")
    assert nvgpu_node.next_boot_kernel(KERNEL) == KERNEL  # an older one
    host.touch("/lib/modules/4.18.0-553.el8_10.x86_64/vmlinuz")
    assert nvgpu_node.next_boot_kernel(KERNEL) == "4.18.0-553.el8_10.x86_64"


@pytest.mark.parametrize("older, newer", [
    ("4.18.0-513.24.1.el8_9.x86_64", "4.18.0-553.el8_10.x86_64"),
    ("5.14.0-427.13.1.el9_4.x86_64", "5.14.0-427.42.1.el9_4.x86_64"),
    ("5.14.0-70.el9.x86_64", "5.14.0-503.11.1.el9_5.x86_64"),
    ("4.18.0-553.el8_10.x86_64", "5.14.0-70.el9.x86_64"),
])
def test_release_key_orders_like_rpm(older, newer):
    assert nvgpu_node.release_key(older) < nvgpu_node.release_key(newer)


def test_device_nodes(host):
    host.touch("/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-uvm", "/dev/nvidia-caps/nvidia-cap1", "/dev/null")
    dev = host.path("/dev")
    assert nvgpu_node.device_nodes() == [
        f"{dev}/nvidia-caps/nvidia-cap1", f"{dev}/nvidia-uvm", f"{dev}/nvidia0", f"{dev}/nvidiactl"]


def test_nvswitches_by_pci_vendor_and_device(host):
    for address, vendor, device in (("0000:05:00.0", "0x10de", "0x22a3"), ("0000:06:00.0", "0x10DE", "0x1af1\n"),
                                    ("0000:3b:00.0", "0x10de", "0x2335"), ("0000:00:1f.0", "0x8086", "0x22a3")):
        host.write(f"/sys/bus/pci/devices/{address}/vendor", vendor + "\n")
        host.write(f"/sys/bus/pci/devices/{address}/device", device)
    assert nvgpu_node.nvswitches() == ["0000:05:00.0", "0000:06:00.0"]


def test_no_nvswitches_without_pci_sysfs(host):
    assert nvgpu_node.nvswitches() == []


def test_cdi_spec_files_in_podmans_order(host):
    host.write("/var/run/cdi/nvidia.json", "{}")
    host.write("/etc/cdi/nvidia.yaml", "")
    host.write("/etc/cdi/a.yaml", "")
    host.write("/etc/cdi/notes.txt", "")
    host.write("/etc/cdi/sub/b.yaml", "")
    host.path("/etc/cdi/dir.yaml").mkdir()
    etc, run = nvgpu_node.CDI_DIRS
    assert nvgpu_node.cdi_spec_files() == [f"{etc}/a.yaml", f"{etc}/nvidia.yaml", f"{run}/nvidia.json"]


def test_no_device_nodes(host):
    assert nvgpu_node.device_nodes() == []


# ---------------------------------------------------------------------------- driver versions


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.08  Wed Oct  2 05:52:47 UTC 2024\n"
            "GCC version:  gcc version 8.5.0 20210514 (Red Hat 8.5.0-22) (GCC)\n",
            "550.127.08",
        ),
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  "
            "(dvs-builder@U22-I3-AE18-09-3)  Thu Oct  9 2025\n",
            "580.159.04",
        ),
        ("NVRM version: NVIDIA UNIX aarch64 Kernel Module  535.216.01  Release Build\r\n", "535.216.01"),
        ("", None),
        (None, None),
        ("garbage\n", None),
    ],
)
def test_parse_proc_driver_version(text, expected):
    assert nvgpu_node.parse_proc_driver_version(text) == expected


def test_loaded_driver_version_from_sysfs(host):
    host.load("nvidia")
    host.write("/sys/module/nvidia/version", "550.127.08\n")
    host.write("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  1.2.3  x\n")
    assert nvgpu_node.loaded_driver_version() == "550.127.08"


def test_loaded_driver_version_from_proc(host):
    host.write("/proc/driver/nvidia/version",
               "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.08  Wed Oct  2 05:52:47 UTC 2024\n")
    assert nvgpu_node.loaded_driver_version() == "550.127.08"


def test_loaded_driver_version_not_loaded(host):
    assert nvgpu_node.loaded_driver_version() is None


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/usr/lib64/libcuda.so.550.127.08", "550.127.08"),
        ("/usr/lib64/libcuda.so.580.65", "580.65"),
        ("/usr/lib64/libcuda.so.1", None),
        ("/usr/lib64/libcuda.so", None),
        ("/usr/lib64/libcudart.so.12.4.127", None),
        ("/usr/lib64/libnvidia-ml.so.550.127.08", None),
    ],
)
def test_libcuda_version(path, expected):
    assert nvgpu_node.libcuda_version(path) == expected


def test_installed_driver_version_takes_the_newest_by_number(host):
    # 550.54.14 is the larger text, 550.127.08 the newer driver.
    for name in ("libcuda.so", "libcuda.so.1", "libcuda.so.550.54.14", "libcuda.so.550.127.08"):
        host.touch(f"/usr/lib64/{name}")
    assert nvgpu_node.installed_driver_version() == "550.127.08"
    host.touch("/usr/lib64/libcuda.so.580.105.08")
    assert nvgpu_node.installed_driver_version() == "580.105.08"


def test_installed_driver_version_none(host):
    host.touch("/usr/lib64/libcuda.so.1")
    assert nvgpu_node.installed_driver_version() is None


@pytest.mark.parametrize("version, expected", [(12040, "12.4"), (11080, "11.8"), (13000, "13.0"), (12090, "12.9")])
def test_cuda_version_string(version, expected):
    assert nvgpu_node.cuda_version_string(version) == expected


# ---------------------------------------------------------------------------- other tools' output


@pytest.mark.parametrize(
    "text,expected",
    [("podman version 4.3.1\n", "4.3.1"), ("podman version 5.2.2-dev", "5.2.2-dev"), ("", None), (None, None)],
)
def test_parse_podman_version(text, expected):
    assert nvgpu_node.parse_podman_version(text) == expected


def _mount(version):
    return {"hostPath": f"/usr/lib64/libcuda.so.{version}", "containerPath": f"/usr/lib64/libcuda.so.{version}"}


def test_cdi_spec_driver_version_from_the_common_edits():
    spec = {"containerEdits": {"mounts": [{"hostPath": "/usr/lib64/libnvidia-ml.so.1"}, _mount("550.127.08")]}}
    assert nvgpu_node.cdi_spec_driver_version(spec) == "550.127.08"


def test_cdi_spec_driver_version_from_a_devices_edits():
    spec = {"devices": [{"name": "0"}, None, {"name": "all", "containerEdits": {"mounts": [_mount("580.105.08")]}}]}
    assert nvgpu_node.cdi_spec_driver_version(spec) == "580.105.08"


def test_cdi_spec_driver_version_none():
    assert nvgpu_node.cdi_spec_driver_version({}) is None
    assert nvgpu_node.cdi_spec_driver_version({"containerEdits": {"mounts": [None, {"hostPath": "/x"}]}}) is None


def test_parse_restorecon_both_formats_deduplicated():
    output = (
        "Would relabel /dev/nvidia0 from system_u:object_r:device_t:s0 to system_u:object_r:xserver_misc_device_t:s0\n"
        "Relabeled /dev/nvidiactl from system_u:object_r:device_t:s0 to system_u:object_r:xserver_misc_device_t:s0\n"
        "restorecon reset /usr/lib64/libcuda.so.1 context a->b\n"
        "  Would relabel /dev/nvidia0 from a to b\n"
        "restorecon: lstat(/nothing) failed: No such file or directory\n"
    )
    assert nvgpu_node.parse_restorecon(output) == ["/dev/nvidia0", "/dev/nvidiactl", "/usr/lib64/libcuda.so.1"]
    assert nvgpu_node.parse_restorecon("") == []


def test_parse_subids_skips_malformed_lines():
    text = "alice:100000:65536\n\n# comment\nbob:x:65536\ncarol:231072\n dave:300000:10 \neve:1:2:3\n"
    assert nvgpu_node.parse_subids(text) == [("alice", 100000, 65536), ("dave", 300000, 10)]
    assert nvgpu_node.parse_subids(None) == []


# --- one GPU's facts: PCI addresses, the kernel log, nvidia-smi's CSV ----------------------


@pytest.mark.parametrize("given, spelled", [
    ("00000000:3B:00.0", "0000:3b:00.0"),   # nvidia-smi (seen on the H200: 00000000:00:06.0)
    ("0000:3b:00.0", "0000:3b:00.0"),       # sysfs
    ("PCI:0000:cb:00", "0000:cb:00.0"),     # an Xid line: no function
    ("GPU-1234", None), ("", None), (None, None),
])
def test_pci_address(given, spelled):
    assert nvgpu_node.pci_address(given) == spelled


def test_pci_gpus_are_nvidia_display_devices(host):
    for address, vendor, klass in (("0000:3b:00.0", "0x10de", "0x030200"), ("0000:05:00.0", "0x10de", "0x068000"),
                                   ("0000:3b:00.1", "0x10de", "0x040300"), ("0000:00:06.0", "0x1af4", "0x030000"),
                                   ("0000:5e:00.0", "0x10de", "0x030000")):
        host.write(f"/sys/bus/pci/devices/{address}/vendor", vendor + "\n")
        host.write(f"/sys/bus/pci/devices/{address}/class", klass + "\n")
    assert nvgpu_node.pci_gpus() == ["0000:3b:00.0", "0000:5e:00.0"]


def test_read_kmsg_keeps_messages_drops_dictionaries(host):
    host.write("/dev/kmsg", "6,354,659407,-;nvidia-nvlink: Nvlink Core is being initialized\n"
               " SUBSYSTEM=pci\n"
               "4,1201,88123456,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.\n")
    messages = nvgpu_node.read_kmsg()
    assert messages == ["nvidia-nvlink: Nvlink Core is being initialized",
                        "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus."]
    assert nvgpu_node.parse_xids(messages) == [{"pci": "0000:3b:00.0", "xid": 79, "text": messages[1]}]


def test_read_kmsg_without_a_log_raises(host):
    with pytest.raises(OSError):
        nvgpu_node.read_kmsg()


def test_parse_smi_csv_as_the_h200_printed_it():
    # nvidia-smi 580.159.04 on the H200 machine, the doctor's query.
    text = "0, GPU-46ee3110-da84-e783-305a-ccf3bac82310, NVIDIA H200, 00000000:00:06.0, Enabled, 0, [N/A], No, No, 0\n"
    assert nvgpu_node.parse_smi_csv(text, nvgpu_node.SMI_HEALTH_FIELDS) == [{
        "index": 0, "uuid": "GPU-46ee3110-da84-e783-305a-ccf3bac82310", "name": "NVIDIA H200",
        "pci.bus_id": "0000:00:06.0", "ecc.mode.current": "Enabled", "ecc.errors.uncorrected.volatile.total": "0",
        "retired_pages.pending": None, "remapped_rows.pending": "No", "remapped_rows.failure": "No",
        "remapped_rows.uncorrectable": "0"}]
    # nvidia-smi's own words for a GPU it cannot reach are no row.
    assert nvgpu_node.parse_smi_csv("Unable to determine the device handle for GPU0000:3B:00.0: Unknown Error\n",
                                    nvgpu_node.SMI_GPU_FIELDS) == []
