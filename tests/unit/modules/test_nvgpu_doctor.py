"""
The doctor (_modules/nvgpu_doctor.py) on a node of real files in a temporary tree: a
healthy node gives every check ok or skip; each fault flips exactly its own check to
fail, names its layer first, and sets the exit code; the doctor changes nothing (no
function of tests.unit.fakes.ACTIONS, only read-only commands). The other modules are
autospecced from the real ones and answer with the real readers where those read files.
"""

import json
import os

import nvgpu_failures
import nvgpu_node
import pytest
import salt.modules.systemd_service
import salt.modules.useradd

from tests.unit.conftest import KERNEL
from tests.unit.fakes import FakeSalt
from tests.unit.loader import load, real

DRIVER = "550.127.08"
UID = 2001
PODMAN_OUT = "podman version 4.9.4-rhel"
SPEC = {
    "cdiVersion": "0.5.0",
    "kind": "nvidia.com/gpu",
    "devices": [{"name": "all", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0"}]}}],
    "containerEdits": {"mounts": [{"hostPath": f"/usr/lib64/libcuda.so.{DRIVER}", "containerPath": "/usr/lib64/x"}]},
}
SMI_QUERY = "--query-gpu=" + ",".join(nvgpu_node.SMI_HEALTH_FIELDS)
GPU_UUID = "GPU-4b2f9a1e-5c3d-4e7f-9a8b-1c2d3e4f5a6b"
HEALTHY_SMI = f"0, {GPU_UUID}, NVIDIA A100-SXM4-80GB, 00000000:3B:00.0, Enabled, 0, No, No, No, 0\n"
# The commands the doctor may run: each only reads.
READ_ONLY = (("rpm", "-q"), ("/usr/bin/podman", "--version"), ("systemctl", "is-active"), ("mokutil", "--sb-state"),
             ("mokutil", "--list-enrolled"), ("modinfo", "-k"), ("/usr/bin/podman", "image"),
             ("/usr/bin/podman", "manifest"), ("/usr/bin/nvidia-smi", SMI_QUERY))
IMAGE = nvgpu_node.DEFAULT_IMAGE
NEXT_KERNEL = "4.18.0-553.el8_10.x86_64"


@pytest.fixture
def doctor(host, monkeypatch):
    monkeypatch.setattr(nvgpu_node, "OCI_HOOK_BINARY", str(host.path(nvgpu_node.OCI_HOOK_BINARY)))
    return load("_modules/nvgpu_doctor.py")


@pytest.fixture
def health(host):
    return load("_modules/nvgpu_health.py")


@pytest.fixture
def salt_fns(run_all, health):
    toolkit, selinux, rootless, real_health = (
        real(f"_modules/nvgpu_{name}.py") for name in ("toolkit", "selinux", "rootless", "health"))
    fake = FakeSalt(toolkit, selinux, rootless, real_health, functions={"user.info": salt.modules.useradd.info},
                    run_all=run_all)
    # The GPU health checks are the real ones, on the temporary tree and the fake nvidia-smi.
    fake.set("nvgpu_health.check", health.check)
    # The readers of files answer with the real functions, on the temporary tree.
    for key in ("cdi_spec", "oci_hook", "oci_hook_content"):
        fake.set(f"nvgpu_toolkit.{key}", getattr(toolkit, key))
    for key in ("subids", "overlaps"):
        fake.set(f"nvgpu_rootless.{key}", getattr(rootless, key))
    fake.set("nvgpu_toolkit.config_value", True)
    fake.set("nvgpu_selinux.mode", "Enforcing")
    fake.set("nvgpu_selinux.method", "module")
    fake.set("nvgpu_selinux.policy_modules", ["container", "nvidia-container"])
    fake.set("nvgpu_selinux.relabel_needed", [])
    fake.set("nvgpu_toolkit.cdi_refresh_shipped", False)
    fake.set("user.info", lambda name: {"name": name, "uid": UID, "gid": UID, "home": f"/home/{name}"}
             if name == "alice" else {})
    return fake


@pytest.fixture
def configure_loader_modules(doctor, health, salt_fns):
    return {
        health: {"__salt__": salt_fns, "__grains__": {"kernel": "Linux"}, "__context__": {}},
        doctor: {
            "__salt__": salt_fns,
            "__pillar__": {"gpu": {"toolkit": {"mode": "cdi"}, "rootless_users": [{"name": "alice", "uid": UID}]}},
            "__grains__": {"kernel": "Linux"},
            "__opts__": {"test": False},
            "__context__": {},
        }
    }


@pytest.fixture
def node(host, run_all, which):
    """A healthy converged node in cdi mode with one rootless user, alice."""
    which.tools |= {"rpm", "nvidia-ctk", "mokutil", "nvidia-smi"}
    run_all.on("rpm", "-q", stdout=f"kernel-devel-{KERNEL}\nkernel-headers-{KERNEL}")
    run_all.on(which.path("nvidia-smi"), SMI_QUERY, stdout=HEALTHY_SMI)
    # One GPU on the PCI bus, and a kernel log with the driver's start and no Xid.
    host.write("/sys/bus/pci/devices/0000:3b:00.0/vendor", "0x10de\n")
    host.write("/sys/bus/pci/devices/0000:3b:00.0/class", "0x030200\n")
    host.write("/sys/bus/pci/devices/0000:00:00.0/vendor", "0x8086\n")
    host.write("/sys/bus/pci/devices/0000:00:00.0/class", "0x060000\n")
    host.write("/dev/kmsg", "6,354,659407,-;nvidia-nvlink: Nvlink Core is being initialized\n"
               "3,355,659423,-;NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  580.159.04\n")
    run_all.on(which.path("podman"), "--version", stdout=PODMAN_OUT)
    run_all.on(which.path("podman"), "image", "exists", IMAGE)
    run_all.on("mokutil", "--sb-state", stdout="SecureBoot disabled")
    host.write(f"/lib/modules/{KERNEL}/vmlinuz", "")
    host.write(f"/lib/modules/{KERNEL}/extra/nvidia.ko.xz", "")
    host.write("/var/lib/systemd/linger/alice", "")
    host.write(f"/usr/lib64/libcuda.so.{DRIVER}", "")
    host.load("nvidia", "nvidia_uvm")
    host.write("/sys/module/nvidia/version", DRIVER + "\n")
    for name in ("nvidiactl", "nvidia0", "nvidia-uvm", "nvidia-uvm-tools"):
        os.chmod(host.write(f"/dev/{name}", ""), 0o666)
    os.chmod(host.write("/etc/cdi/nvidia.yaml", json.dumps(SPEC)), 0o644)
    host.write("/etc/subuid", "alice:100000:65536\nbob:165536:65536\n")
    host.write("/etc/subgid", "alice:100000:65536\nbob:165536:65536\n")
    return host


def hook_mode(doctor, host):
    doctor.__pillar__["gpu"]["toolkit"]["mode"] = "hook"
    host.path("/etc/cdi/nvidia.yaml").unlink()
    host.write(nvgpu_node.OCI_HOOK_PATH.removeprefix(str(host.root)),
               json.dumps(real("_modules/nvgpu_toolkit.py").oci_hook_content(nvgpu_node.OCI_HOOK_BINARY)))
    os.chmod(host.write(nvgpu_node.OCI_HOOK_BINARY.removeprefix(str(host.root)), "#!/bin/sh\n"), 0o755)


def statuses(result):
    return {check["name"]: check["status"] for check in result["checks"]}


GPU_NAMES = ["gpus-on-bus", "xid", "gpu-memory", "dcgm"]
CDI_NAMES = ["kernel-devel", "nvidia-ko", "nvidia-ko-newest", "secure-boot",
             "nouveau", "nvidia-loaded", "driver-version", "device-nodes", "persistenced",
             "fabric-manager", *GPU_NAMES, "podman", "toolkit", "mode", "cdi-spec-count", "cdi-spec-readable",
             "cdi-spec-driver", "cdi-refresh", "oci-hook", "no-cgroups", "selinux-mode", "selinux-policy", "selinux-labels",
             "account:alice", "subuid:alice", "subgid:alice", "runtime-dir:alice", "image"]


def test_virtual(doctor):
    assert doctor.__virtual__() == "nvgpu_doctor"
    doctor.__grains__["kernel"] = "Darwin"
    assert doctor.__virtual__()[0] is False


def test_a_healthy_node_is_ok(doctor, node, run_all, salt_fns):
    result = doctor.run()
    assert [check["name"] for check in result["checks"]] == CDI_NAMES
    skipped = ("persistenced", "fabric-manager", "dcgm", "oci-hook", "no-cgroups")
    assert statuses(result) == {name: "skip" if name in skipped else "ok" for name in CDI_NAMES}
    assert result["gpus"] == [{"index": 0, "uuid": GPU_UUID, "name": "NVIDIA A100-SXM4-80GB", "pci": "0000:3b:00.0",
                               "healthy": True, "causes": []}]
    assert (result["gpus_healthy"], result["gpus_failing"]) == (1, 0)
    assert result["ok"] is True and result["first_failing_layer"] is None
    assert "retcode" not in doctor.__context__
    for check in result["checks"]:
        assert check["layer"] in nvgpu_failures.LAYERS and check["evidence"] and check["fix"] is None
    mode = next(c for c in result["checks"] if c["name"] == "mode")
    assert mode["evidence"] == "pillar gpu:toolkit:mode cdi -> cdi"
    # Read-only: nothing that changes the node, only commands that read.
    assert salt_fns.actions() == []
    assert all(tuple(argv[:2]) in READ_ONLY for argv in run_all.argvs)


def test_a_healthy_node_in_hook_mode(doctor, node, salt_fns):
    hook_mode(doctor, node)
    result = doctor.run()
    assert result["ok"] is True
    assert {name for name, status in statuses(result).items() if status == "skip"} == {
        "persistenced", "fabric-manager", "dcgm", "cdi-spec-count", "cdi-spec-readable", "cdi-spec-driver",
        "cdi-refresh"}
    assert salt_fns.actions() == []


def test_auto_mode_follows_podman(doctor, node):
    doctor.__pillar__["gpu"]["toolkit"]["mode"] = "auto"
    mode = next(c for c in doctor.run()["checks"] if c["name"] == "mode")
    assert mode["evidence"] == "pillar gpu:toolkit:mode auto (Podman 4.9.4-rhel) -> cdi"


def _missing_spec(node, **_):
    node.path("/etc/cdi/nvidia.yaml").unlink()


def _second_spec(node, **_):
    node.write("/var/run/cdi/nvidia.yaml", json.dumps(SPEC))


def _stale_spec(node, **_):
    node.write("/etc/cdi/nvidia.yaml", json.dumps(SPEC).replace(DRIVER, "550.54.14"))


def _nvswitch(node, which, run_all, **_):
    node.write("/sys/bus/pci/devices/0000:05:00.0/vendor", "0x10de\n")
    node.write("/sys/bus/pci/devices/0000:05:00.0/device", "0x22a3\n")
    node.write("/sys/bus/pci/devices/0000:3b:00.0/vendor", "0x10de\n")  # a GPU: not a switch
    node.write("/sys/bus/pci/devices/0000:3b:00.0/device", "0x2335\n")
    which.tools |= {"systemctl", "rpm"}
    run_all.on("systemctl", "is-active", "nvidia-fabricmanager", retcode=3, stdout="inactive")
    run_all.on("systemctl", "is-active", "nvidia-persistenced", stdout="active")
    run_all.on("rpm", "-q", "--qf", "%{VERSION}", "nvidia-fabric-manager", stdout=DRIVER)


def _secure_boot_unenrolled(run_all, **_):
    run_all.on("mokutil", "--sb-state", stdout="SecureBoot enabled")
    run_all.on("modinfo", "-k", KERNEL, "-F", "signer", "nvidia", stdout="DKMS module signing key")
    run_all.on("mokutil", "--list-enrolled", retcode=1, stderr="MokListRT is empty")


def _newer_kernel(node, **_):
    node.write(f"/lib/modules/{NEXT_KERNEL}/vmlinuz", "")


def _image_unreachable(run_all, **_):
    run_all.on(which_podman(), "image", "exists", IMAGE, retcode=1)
    run_all.on(which_podman(), "manifest", "inspect", IMAGE, retcode=125,
               stderr=f"Error: reading image \"docker://{IMAGE}\": manifest unknown")


def which_podman():
    return "/usr/bin/podman"


XID_48 = ("3,1201,88123456,-;NVRM: Xid (PCI:0000:3b:00): 48, pid=4123, name=vectorAdd, An uncorrectable "
          "double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.\n")


def _gpu_off_the_bus(node, **_):
    node.write("/sys/bus/pci/devices/0000:5e:00.0/vendor", "0x10de\n")
    node.write("/sys/bus/pci/devices/0000:5e:00.0/class", "0x030200\n")


def _memory_errors(run_all, which, **_):
    bad = HEALTHY_SMI.replace("Enabled, 0, No, No, No, 0", "Enabled, 2, No, Yes, No, 1")
    run_all.on(which.path("nvidia-smi"), SMI_QUERY, stdout=bad)


def _boolean_off(salt_fns, **_):
    """EL 9.5+: the method is the boolean, and it is off."""
    salt_fns.set("nvgpu_selinux.method", "boolean")
    salt_fns.set("nvgpu_selinux.boolean", "off")


FAULTS = {
    "nvidia-ko-newest": _newer_kernel,
    "secure-boot": _secure_boot_unenrolled,
    "secure-boot ": lambda run_all, **_: (_secure_boot_unenrolled(run_all),
                                          run_all.on("modinfo", "-k", KERNEL, "-F", "signer", "nvidia")),
    "selinux-labels": lambda salt_fns, **_: salt_fns.set("nvgpu_selinux.relabel_needed", ["/dev/nvidia0"], []),
    "image": _image_unreachable,
    "kernel-devel": lambda run_all, **_: run_all.on(
        "rpm", "-q", retcode=1, stdout=f"package kernel-devel-{KERNEL} is not installed\nkernel-headers-{KERNEL}"),
    "nouveau": lambda node, **_: node.load("nouveau"),
    "nvidia-loaded": lambda node, **_: node.write("/sys/module/nvidia_uvm/initstate", "going\n"),
    "driver-version": lambda node, **_: node.write("/usr/lib64/libcuda.so.560.35.03", ""),
    "device-nodes": lambda node, **_: node.path("/dev/nvidia-uvm").unlink(),
    "fabric-manager": _nvswitch,
    "gpus-on-bus": _gpu_off_the_bus,
    "xid": lambda node, **_: node.write("/dev/kmsg", XID_48),
    "gpu-memory": _memory_errors,
    "podman": lambda which, **_: which.tools.discard("podman"),
    "toolkit": lambda which, **_: which.tools.discard("nvidia-ctk"),
    "mode": lambda doctor, **_: doctor.__pillar__["gpu"]["toolkit"].update(mode="docker"),
    "cdi-spec-count": _missing_spec,
    "cdi-spec-count ": _second_spec,
    "cdi-spec-readable": lambda node, **_: os.chmod(node.path("/etc/cdi/nvidia.yaml"), 0o600),
    "cdi-spec-driver": _stale_spec,
    "selinux-policy": lambda salt_fns, **_: salt_fns.set("nvgpu_selinux.policy_modules", ["container"]),
    "selinux-policy ": _boolean_off,
    "account:alice": lambda salt_fns, **_: salt_fns.set("user.info", {}),
    "subuid:alice": lambda node, **_: node.write("/etc/subuid", "bob:165536:65536\n"),
    "subgid:alice": lambda node, **_: node.write("/etc/subgid", "alice:100000:65536\nbob:150000:65536\n"),
    "subuid:alice ": lambda node, **_: node.write("/etc/subuid", "alice:2000:65536\n"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_fails_exactly_its_check(doctor, node, run_all, which, salt_fns, fault):
    FAULTS[fault](node=node, run_all=run_all, which=which, salt_fns=salt_fns, doctor=doctor)
    result = doctor.run()
    name = fault.strip()
    failing = [check for check in result["checks"] if check["status"] in ("fail", "warn")]
    assert [check["name"] for check in failing] == [name]
    check = failing[0]
    assert check["status"] == "fail" and check["evidence"] and check["fix"]
    assert result["ok"] is False and result["first_failing_layer"] == check["layer"]
    assert doctor.__context__["retcode"] == 1
    assert salt_fns.actions() == []


HOOK_FAULTS = {
    "oci-hook": lambda node: node.write(nvgpu_node.OCI_HOOK_PATH.removeprefix(str(node.root)), "{}"),
    "oci-hook ": lambda node: os.unlink(nvgpu_node.OCI_HOOK_BINARY),
    "no-cgroups": None,
}


@pytest.mark.parametrize("fault", HOOK_FAULTS)
def test_each_hook_fault_fails_exactly_its_check(doctor, node, salt_fns, fault):
    hook_mode(doctor, node)
    if HOOK_FAULTS[fault]:
        HOOK_FAULTS[fault](node)
    else:
        salt_fns.set("nvgpu_toolkit.config_value", None)
    result = doctor.run()
    failing = [check for check in result["checks"] if check["status"] in ("fail", "warn")]
    assert [(c["name"], c["status"]) for c in failing] == [(fault.strip(), "fail")]
    assert result["first_failing_layer"] == failing[0]["layer"] and failing[0]["fix"]


def test_the_fixes_come_from_the_knowledge_base(doctor, node, run_all):
    node.load("nouveau")
    node.write("/usr/lib64/libcuda.so.560.35.03", "")
    _stale_spec(node)
    fixes = {check["name"]: check["fix"] for check in doctor.run()["checks"]}
    assert fixes["nouveau"] == nvgpu_failures.NOUVEAU_LOADED["fix"]
    assert fixes["driver-version"] == nvgpu_failures.RELOAD_FIX
    assert fixes["cdi-spec-driver"] == nvgpu_failures.CDI_REGENERATE_FIX


def test_the_first_failing_layer_is_the_lowest_check(doctor, node):
    node.path("/etc/subuid").unlink()
    node.load("nouveau")
    result = doctor.run()
    assert [c["name"] for c in result["checks"] if c["status"] == "fail"] == ["nouveau", "subuid:alice"]
    assert result["first_failing_layer"] == "kernel-modules"


def test_a_second_spec_names_both_and_the_winner(doctor, node):
    _second_spec(node)
    check = next(c for c in doctor.run()["checks"] if c["name"] == "cdi-spec-count")
    etc, run = nvgpu_node.CDI_DIRS[0] + "/nvidia.yaml", nvgpu_node.CDI_DIRS[1] + "/nvidia.yaml"
    assert f"{etc}, {run}; Podman uses {run}" in check["evidence"]
    assert check["fix"].startswith(f"keep one: rm {run} ")


def test_nothing_loaded_skips_what_needs_the_driver(doctor, node):
    for name in ("nvidia", "nvidia_uvm"):
        node.write(f"/sys/module/{name}/initstate", "going\n")
    node.path("/sys/module/nvidia/version").unlink()
    result = statuses(doctor.run())
    assert result["nvidia-loaded"] == "fail"
    assert result["driver-version"] == result["cdi-spec-driver"] == "skip"
    assert result["gpus-on-bus"] == result["xid"] == result["gpu-memory"] == "skip"


def test_loaded_without_a_module_file_for_this_kernel_warns(doctor, node):
    # As on the H200 machine: the driver works, but nothing under /lib/modules would load it again.
    node.path(f"/lib/modules/{KERNEL}/extra/nvidia.ko.xz").unlink()
    result = doctor.run()
    check = next(c for c in result["checks"] if c["name"] == "nvidia-ko")
    assert check["status"] == "warn" and "next boot" in check["evidence"] and check["fix"]
    assert result["ok"] is True and "retcode" not in doctor.__context__


def test_no_module_file_and_not_loaded_fails(doctor, node):
    node.path(f"/lib/modules/{KERNEL}/extra/nvidia.ko.xz").unlink()
    for name in ("nvidia_uvm", "nvidia"):
        node.write(f"/sys/module/{name}/initstate", "going\n")
    check = next(c for c in doctor.run()["checks"] if c["name"] == "nvidia-ko")
    assert check["status"] == "fail" and "is installed" in check["evidence"]


def test_mig_capability_nodes_are_not_device_nodes(doctor, node):
    # /dev/nvidia-caps/* are 0400 by design (seen on the H200 machine); they are no reason to warn.
    node.write("/dev/nvidia-caps/nvidia-cap1", "")
    os.chmod(node.path("/dev/nvidia-caps/nvidia-cap1"), 0o400)
    check = next(c for c in doctor.run()["checks"] if c["name"] == "device-nodes")
    assert check["status"] == "ok"


def test_no_driver_installed(doctor, node):
    node.path(f"/lib/modules/{KERNEL}/extra/nvidia.ko.xz").unlink()
    node.path(f"/usr/lib64/libcuda.so.{DRIVER}").unlink()
    for name in ("nvidia_uvm", "nvidia"):
        node.write(f"/sys/module/{name}/initstate", "going\n")
    check = next(c for c in doctor.run()["checks"] if c["name"] == "nvidia-ko")
    assert check["status"] == "fail" and "no driver installed" in check["evidence"]


def test_an_nvswitch_with_fabric_manager_active(doctor, node, which, run_all):
    _nvswitch(node, which, run_all)
    run_all.on("systemctl", "is-active", "nvidia-fabricmanager", stdout="active")
    # Each GPU's NVLink fabric, as nvidia-smi reports it.
    smi = (which.path("nvidia-smi"), "--query-gpu=index,fabric.state", "--format=csv,noheader")
    run_all.on(*smi, stdout="0, Completed\n1, Completed\n")
    check = next(c for c in doctor.run()["checks"] if c["name"] == "fabric-manager")
    assert check["status"] == "ok" and "1 NVSwitch (0000:05:00.0)" in check["evidence"]
    assert f"`rpm -q --qf %{{VERSION}} nvidia-fabric-manager` said: {DRIVER}" in check["evidence"]
    assert "0, Completed; 1, Completed" in check["evidence"]
    run_all.on(*smi, stdout="0, Completed\n1, Not Supported\n")
    assert next(c for c in doctor.run()["checks"] if c["name"] == "fabric-manager")["status"] == "ok"
    run_all.on(*smi, stdout="0, Completed\n1, In Progress\n")
    check = next(c for c in doctor.run()["checks"] if c["name"] == "fabric-manager")
    assert check["status"] == "fail" and "not trained (GPU 1 In Progress)" in check["evidence"]
    assert "journalctl -u nvidia-fabricmanager" in check["fix"]
    which.tools.discard("systemctl")
    check = next(c for c in doctor.run()["checks"] if c["name"] == "fabric-manager")
    assert check["status"] == "skip" and "no systemctl" in check["evidence"]


def test_skips_where_the_tool_or_layer_is_absent(doctor, node, which, salt_fns):
    which.tools.discard("rpm")
    salt_fns.set("nvgpu_selinux.mode", "Disabled")
    result = statuses(doctor.run())
    assert result["kernel-devel"] == result["selinux-mode"] == result["selinux-policy"] == "skip"


def test_headers_missing_only_warns(doctor, node, run_all):
    run_all.on("rpm", "-q", retcode=1, stdout=f"kernel-devel-{KERNEL}\npackage kernel-headers-{KERNEL} is not installed")
    result = doctor.run()
    assert statuses(result)["kernel-devel"] == "warn" and result["ok"] is True


def test_device_nodes_closed_to_users_warn(doctor, node):
    os.chmod(node.path("/dev/nvidia0"), 0o660)
    check = next(c for c in doctor.run()["checks"] if c["name"] == "device-nodes")
    assert check["status"] == "warn" and "nvidia0 0660" in check["evidence"]


def test_hook_left_in_cdi_mode_warns(doctor, node):
    hook_mode(doctor, node)
    doctor.__pillar__["gpu"]["toolkit"]["mode"] = "cdi"
    # hook_mode removed the spec: put it back
    node.write("/etc/cdi/nvidia.yaml", json.dumps(SPEC))
    check = next(c for c in doctor.run()["checks"] if c["name"] == "oci-hook")
    assert check["status"] == "warn" and "twice" in check["evidence"]


def test_user_argument_checks_that_user_only(doctor, node, salt_fns):
    result = doctor.run(user="carol")
    names = [c["name"] for c in result["checks"]]
    assert names[-5:-1] == ["account:carol", "subuid:carol", "subgid:carol", "runtime-dir:carol"]
    assert "account:alice" not in names
    assert statuses(result)["account:carol"] == "fail"


def test_no_users_no_user_checks(doctor, node):
    doctor.__pillar__["gpu"]["rootless_users"] = []
    assert not [c for c in doctor.run()["checks"] if c["layer"] == "rootless" and c["name"] != "no-cgroups"]


def test_every_declared_check_is_run_and_every_check_run_is_declared(doctor, node):
    """The catalogue (CHECKS, source of docs/troubleshooting.md) and the walk agree."""
    ran = [c["name"] for c in doctor.run()["checks"]]
    hook_mode(doctor, node)
    ran += [c["name"] for c in doctor.run()["checks"]]
    declared = [check.name.replace("USER", "alice") for check in doctor.CHECKS]
    assert sorted(set(ran)) == sorted(declared)
    # In the catalogue's order.
    assert [name for name in declared if name in ran[:len(CDI_NAMES)]] == CDI_NAMES
    with pytest.raises(ValueError, match="CHECKS declares"):
        doctor._check("nvidia-ko", "toolkit", "ok", "a check in another layer than declared")


def test_the_newest_kernel_with_its_module_is_ok(doctor, node):
    _newer_kernel(node)
    node.write(f"/lib/modules/{NEXT_KERNEL}/extra/nvidia.ko.xz", "")
    node.write("/lib/modules/4.18.0-477.el8_8.x86_64/vmlinuz", "")  # an older one: not the next boot's
    check = next(c for c in doctor.run()["checks"] if c["name"] == "nvidia-ko-newest")
    assert check["status"] == "ok" and NEXT_KERNEL in check["evidence"]


def test_a_newer_kernel_without_the_driver_names_its_kernel_devel(doctor, node):
    _newer_kernel(node)
    check = next(c for c in doctor.run()["checks"] if c["name"] == "nvidia-ko-newest")
    assert f"kernel-devel-{NEXT_KERNEL} is not installed" in check["evidence"]
    assert check["fix"] == f"dnf install kernel-devel-{NEXT_KERNEL}, then dkms autoinstall -k {NEXT_KERNEL} " \
        "(a precompiled driver stream: dnf update brings its kmod package for that kernel)"


def test_secure_boot_with_an_enrolled_signer(doctor, node, run_all):
    _secure_boot_unenrolled(run_all)
    run_all.on("mokutil", "--list-enrolled", stdout="[key 1]\nCertificate:\n    Data:\n"
               "        Issuer: CN=DKMS module signing key\n        Subject: CN=DKMS module signing key\n")
    check = next(c for c in doctor.run()["checks"] if c["name"] == "secure-boot")
    assert check["status"] == "ok" and "DKMS module signing key" in check["evidence"]


def test_secure_boot_with_a_key_the_kernel_holds(doctor, node, run_all):
    # As /proc/keys shows the built-in keyring: a distribution's own signed module.
    _secure_boot_unenrolled(run_all)
    run_all.on("modinfo", "-k", KERNEL, "-F", "signer", "nvidia", stdout="Build time autogenerated kernel key")
    node.write("/proc/keys", "1c0a2c67 I------     1 perm 1f010000     0     0 asymmetri Build time autogenerated "
               "kernel key: 5d2f7a9b: X509.rsa 5d2f7a9b []\n")
    check = next(c for c in doctor.run()["checks"] if c["name"] == "secure-boot")
    assert check["status"] == "ok"


def test_secure_boot_unknown_without_mokutil_or_efi(doctor, node, which, run_all):
    run_all.on("mokutil", "--sb-state", retcode=1, stderr="EFI variables are not supported on this system")
    check = next(c for c in doctor.run()["checks"] if c["name"] == "secure-boot")
    assert check["status"] == "skip" and "EFI variables are not supported" in check["evidence"]
    which.tools.discard("mokutil")
    check = next(c for c in doctor.run()["checks"] if c["name"] == "secure-boot")
    assert check["status"] == "skip" and "mokutil is not installed" in check["evidence"]


def test_the_kernel_s_refusal_is_diagnosed_as_secure_boot():
    said = "modprobe: ERROR: could not insert 'nvidia': Key was rejected by service"
    assert nvgpu_failures.diagnose_text(said)["fix"] == nvgpu_failures.SECURE_BOOT_FIX


def test_no_runtime_dir_nor_lingering_under_systemd_warns(doctor, node):
    node.path("/var/lib/systemd/linger/alice").unlink()
    result = doctor.run()
    check = next(c for c in result["checks"] if c["name"] == "runtime-dir:alice")
    assert check["status"] == "skip" and "systemd is not the init system" in check["evidence"]
    node.path("/run/systemd/system").mkdir(parents=True)
    result = doctor.run()
    check = next(c for c in result["checks"] if c["name"] == "runtime-dir:alice")
    assert check["status"] == "warn" and check["fix"] == "loginctl enable-linger alice"
    assert result["ok"] is True


def test_a_runtime_dir_of_the_user_is_ok(doctor, node):
    node.path("/var/lib/systemd/linger/alice").unlink()
    path = node.path(f"/run/user/{UID}")
    path.mkdir(parents=True)
    os.chown(path, UID, UID)
    check = next(c for c in doctor.run()["checks"] if c["name"] == "runtime-dir:alice")
    assert check["status"] == "ok" and "owned by alice" in check["evidence"]
    os.chown(path, 0, 0)
    check = next(c for c in doctor.run()["checks"] if c["name"] == "runtime-dir:alice")
    assert check["status"] == "fail" and "belongs to uid 0" in check["evidence"]


def test_an_image_only_in_the_registry_warns_and_is_not_pulled(doctor, node, run_all):
    run_all.on(which_podman(), "image", "exists", IMAGE, retcode=1)
    run_all.on(which_podman(), "manifest", "inspect", IMAGE, stdout='{"schemaVersion": 2}')
    result = doctor.run()
    check = next(c for c in result["checks"] if c["name"] == "image")
    assert check["status"] == "warn" and "the registry has it" in check["evidence"]
    assert check["fix"].startswith(f"podman pull {IMAGE}") and result["ok"] is True
    assert not [argv for argv in run_all.argvs if "pull" in argv]
    doctor.__pillar__["gpu"]["validate"] = {"pull": "never"}
    check = next(c for c in doctor.run()["checks"] if c["name"] == "image")
    assert check["status"] == "fail" and "pull is never" in check["evidence"]


def test_skopeo_reads_the_registry_where_installed(doctor, node, run_all, which):
    which.tools.add("skopeo")
    run_all.on(which_podman(), "image", "exists", IMAGE, retcode=1)
    run_all.on(which.path("skopeo"), "inspect", "--raw", f"docker://{IMAGE}", stdout="{}")
    check = next(c for c in doctor.run()["checks"] if c["name"] == "image")
    assert check["status"] == "warn" and "skopeo inspect --raw" in check["evidence"]


def test_a_fabric_manager_of_another_version_than_the_driver(doctor, node, which, run_all):
    _nvswitch(node, which, run_all)
    run_all.on("rpm", "-q", "--qf", "%{VERSION}", "nvidia-fabric-manager", stdout="550.54.15")
    result = doctor.run()
    check = next(c for c in result["checks"] if c["name"] == "fabric-manager")
    assert check["status"] == "fail" and f"the loaded driver is {DRIVER}" in check["evidence"]
    assert check["fix"].startswith(f"dnf install nvidia-fabric-manager-{DRIVER} ")
    assert result["first_failing_layer"] == "fabric"


def test_persistenced_not_running_warns(doctor, node, which, run_all):
    which.tools.add("systemctl")
    run_all.on("systemctl", "is-active", "nvidia-persistenced", retcode=3, stdout="inactive")
    result = doctor.run()
    check = next(c for c in result["checks"] if c["name"] == "persistenced")
    assert check["status"] == "warn" and "said: inactive" in check["evidence"]
    assert check["fix"].startswith("systemctl enable --now nvidia-persistenced") and result["ok"] is True
    run_all.on("systemctl", "is-active", "nvidia-persistenced", stdout="active")
    assert next(c for c in doctor.run()["checks"] if c["name"] == "persistenced")["status"] == "ok"


def test_services_where_systemd_is_not_running_are_skipped(doctor, node, which, run_all):
    # systemctl 252's words where systemd is not PID 1 (seen in the simulated node).
    _nvswitch(node, which, run_all)
    run_all.on("systemctl", "is-active", retcode=1, stderr="System has not been booted with systemd as init system "
               "(PID 1). Can't operate.\nFailed to connect to bus: Host is down")
    for name in ("nvidia-persistenced", "nvidia-fabricmanager"):
        run_all.on("systemctl", "is-active", name, retcode=1, stderr="System has not been booted with systemd as "
                   "init system (PID 1). Can't operate.\nFailed to connect to bus: Host is down")
    result = statuses(doctor.run())
    assert result["persistenced"] == result["fabric-manager"] == "skip"


def test_a_driver_version_mismatch_fails_driver_version_only(doctor, node, run_all, which):
    # After an upgrade nvidia-smi cannot ask the driver: the GPU checks say so and skip.
    node.write("/usr/lib64/libcuda.so.560.35.03", "")
    run_all.on(which.path("nvidia-smi"), SMI_QUERY, retcode=18,
               stderr="Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 560.35")
    result = doctor.run()
    assert [c["name"] for c in result["checks"] if c["status"] == "fail"] == ["driver-version"]
    check = next(c for c in result["checks"] if c["name"] == "gpus-on-bus")
    assert check["status"] == "skip" and "version mismatch" in check["evidence"]


def test_the_labels_are_checked_with_the_boolean_method_too(doctor, node, salt_fns):
    salt_fns.set("nvgpu_selinux.method", "boolean")
    salt_fns.set("nvgpu_selinux.boolean", "on")
    salt_fns.set("nvgpu_selinux.relabel_needed", ["/dev/nvidia0"], [])
    result = statuses(doctor.run())
    assert result["selinux-policy"] == "ok" and result["selinux-labels"] == "fail"


def _with_systemd(salt_fns, enabled, watching):
    """systemd runs (its service module is loaded) and the toolkit ships nvidia-cdi-refresh."""
    for name in ("enabled", "status"):
        salt_fns.add(f"service.{name}", getattr(salt.modules.systemd_service, name))
    salt_fns.add("service.enable", salt.modules.systemd_service.enable)
    salt_fns.set("nvgpu_toolkit.cdi_refresh_shipped", True)
    salt_fns.set("service.enabled", lambda unit: unit in enabled)
    salt_fns.set("service.status", watching)


def test_cdi_refresh_owning_the_spec(doctor, node, salt_fns):
    # auto with the unit shipped and systemd running: nvidia-cdi-refresh's spec in /var/run/cdi.
    node.path("/etc/cdi/nvidia.yaml").rename(node.path("/etc/cdi/gone"))
    node.write("/var/run/cdi/nvidia.yaml", json.dumps(SPEC))
    node.path("/etc/cdi/gone").unlink()
    units = ("nvidia-cdi-refresh.path", "nvidia-cdi-refresh.service")
    _with_systemd(salt_fns, units, True)
    result = doctor.run()
    check = next(c for c in result["checks"] if c["name"] == "cdi-refresh")
    assert check["status"] == "ok" and "cdi_owner auto -> refresh" in check["evidence"], check
    assert result["ok"] is True
    # Its path unit stopped: a driver change would leave the spec stale.
    salt_fns.set("service.status", False)
    result = doctor.run()
    failing = [c for c in result["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failing] == ["cdi-refresh"]
    assert failing[0]["fix"].startswith("systemctl enable nvidia-cdi-refresh.path nvidia-cdi-refresh.service; ")


def test_cdi_refresh_enabled_while_the_formula_owns_the_spec(doctor, node, salt_fns):
    doctor.__pillar__["gpu"]["toolkit"]["cdi_owner"] = "formula"
    _with_systemd(salt_fns, ("nvidia-cdi-refresh.path",), False)
    failing = [c for c in doctor.run()["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failing] == ["cdi-refresh"]
    assert "cdi_owner formula -> formula" in failing[0]["evidence"]
    assert failing[0]["fix"].startswith("systemctl disable --now nvidia-cdi-refresh.path nvidia-cdi-refresh.service")
    salt_fns.set("service.enabled", False)
    check = next(c for c in doctor.run()["checks"] if c["name"] == "cdi-refresh")
    assert check["status"] == "ok" and "the spec is the formula's" in check["evidence"]


def test_a_stale_spec_of_nvidia_cdi_refresh_is_refreshed_by_its_service(doctor, node, salt_fns):
    node.path("/etc/cdi/nvidia.yaml").unlink()
    node.write("/var/run/cdi/nvidia.yaml", json.dumps(SPEC).replace(DRIVER, "550.54.14"))
    _with_systemd(salt_fns, ("nvidia-cdi-refresh.path", "nvidia-cdi-refresh.service"), True)
    check = next(c for c in doctor.run()["checks"] if c["name"] == "cdi-spec-driver")
    assert check["status"] == "fail" and check["fix"].startswith("systemctl restart nvidia-cdi-refresh.service")


def test_cdi_refresh_installed_without_systemd_is_skipped(doctor, node, salt_fns):
    salt_fns.set("nvgpu_toolkit.cdi_refresh_shipped", True)
    check = next(c for c in doctor.run()["checks"] if c["name"] == "cdi-refresh")
    assert check["status"] == "skip" and "systemd does not run" in check["evidence"]
