"""The simulated node's systemd, NVSwitches, fabric manager and busy GPU (tests/node/README.md):
real Salt states against the stand-in systemctl, a reboot that keeps only enabled units, the
fabric manager's start checks, CUDA error 802 while the fabric is untrained (on the host and
in a container), and a module that cannot be unloaded while a process holds the GPU."""

import subprocess

import pytest

from tests.node import KERNEL_RELEASE, REPO, SALT_CALL

pytestmark = pytest.mark.node

FM = "nvidia-fabricmanager"


def _hgx(node, stream="latest-dkms", profile="fm", toolkit=False):
    """An HGX node with the driver stream's `profile` installed and its modules loaded."""
    node.add_nvswitches()
    node.dnf("install", f"kernel-devel-{KERNEL_RELEASE}", f"kernel-headers-{KERNEL_RELEASE}")
    node.add_repos()
    node.dnf("module", "install", f"nvidia-driver:{stream}/{profile}")
    node.run(["modprobe", "-r", "nouveau"], check=True)
    if toolkit:
        node.dnf("install", "podman", "nvidia-container-toolkit")
    node.run(["nvidia-modprobe"], check=True)
    node.run(["nvidia-modprobe", "-u"], check=True)


def _state(res):
    assert isinstance(res.data, dict), res.stdout + res.stderr
    (state,) = res.data.values()
    return state


def test_salt_service_states_drive_the_stand_in_systemctl_and_a_reboot_keeps_enabled_units(node):
    _hgx(node)
    assert node.run(["systemctl", "is-active", FM]).stdout.strip() == "inactive"

    preview = _state(node.salt_call("state.single", "service.running", f"name={FM}", "enable=True", test=True))
    assert preview["result"] is None and "set to start" in preview["comment"]
    assert node.run(["systemctl", "is-active", FM]).returncode == 3  # test=True started nothing

    applied = _state(node.salt_call("state.single", "service.running", f"name={FM}", "enable=True"))
    assert applied["result"] is True, applied
    assert applied["changes"] == {FM: True}
    assert node.run(["systemctl", "is-enabled", FM]).stdout.strip() == "enabled"
    assert node.exists(f"/etc/systemd/system/multi-user.target.wants/{FM}.service")
    again = _state(node.salt_call("state.single", "service.running", f"name={FM}", "enable=True"))
    assert again["result"] is True and again["changes"] == {}

    # Started but not enabled: a reboot forgets it.
    node.run(["systemctl", "start", "nvidia-persistenced"], check=True)
    assert node.run(["systemctl", "is-active", "nvidia-persistenced"]).returncode == 0
    node.reboot()
    assert node.run(["systemctl", "is-active", "nvidia-persistenced"]).stdout.strip() == "inactive"
    # Enabled: started at boot, and failed there, since nothing loaded the driver first.
    assert node.run(["systemctl", "is-active", FM]).stdout.strip() == "failed"
    status = node.run(["systemctl", "status", FM]).stdout
    assert "the nvidia kernel module is not loaded" in status
    assert "Failed to start NVIDIA fabric manager service." in status


def test_fabric_manager_refuses_a_driver_of_another_version(node):
    _hgx(node, stream="550-dkms")
    # The packages move to 580 while the 550 module stays loaded (no reload, no reboot).
    node.dnf("module", "switch-to", "nvidia-driver:latest-dkms/fm")
    proc = node.run(["systemctl", "start", FM])
    assert proc.returncode == 1
    assert f"Job for {FM}.service failed because the control process exited with error code." in proc.stderr
    status = node.run(["systemctl", "status", FM]).stdout
    assert ("fabric manager NVIDIA GPU driver interface version 580.105.08 don't match with driver "
            "version 550.127.08") in status


def test_no_fabric_manager_on_a_node_without_nvswitches(node):
    node.provision(loaded=True, toolkit=False, podman=False)
    node.dnf("module", "install", "nvidia-driver:latest-dkms/fm")
    assert not node.exists("/sys/module/nvidia/fabric_state")
    proc = node.run(["systemctl", "start", FM])
    assert proc.returncode == 1
    assert "detected number of NVSwitches" in node.run(["systemctl", "status", FM]).stdout


def test_a_process_holding_the_gpu_blocks_unloading_the_driver(node):
    node.provision(loaded=True, toolkit=False, podman=False)
    node.hold_gpu()
    proc = node.run(["modprobe", "-r", "nvidia_uvm", "nvidia"])
    assert proc.returncode == 1 and "modprobe: FATAL: Module nvidia_uvm is in use." in proc.stderr
    assert node.run(["modprobe", "-r", "nvidia_uvm"]).returncode == 1  # still held: nothing unloaded
    assert node.exists("/sys/module/nvidia_uvm")
    assert node.read_file("/sys/module/nvidia_uvm/refcnt").strip() == "1"
    # nvidia-persistenced keeps /dev/nvidia* open too (not /dev/nvidia-uvm), until it is stopped.
    node.release_gpu()
    node.run(["systemctl", "start", "nvidia-persistenced"], check=True)
    node.run(["rmmod", "nvidia_uvm"], check=True)
    proc = node.run(["rmmod", "nvidia"])
    assert proc.returncode == 1 and proc.stderr.strip() == "rmmod: ERROR: Module nvidia is in use"
    node.run(["systemctl", "stop", "nvidia-persistenced"], check=True)
    node.run(["modprobe", "-r", "nvidia"], check=True)
    assert not node.exists("/sys/module/nvidia")


def test_cuda_fails_with_802_until_the_fabric_manager_runs(node, node_assets, tmp_path):
    _hgx(node, toolkit=True)
    node.run(["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"], check=True)
    assert node.read_file("/sys/module/nvidia/fabric_state").strip() == "Not Started"

    # In a container: the image's vectorAdd, with the failure diagnosed.
    res = node.salt_call("nvgpu.run_vector_add", "mode=cdi", f"image={node_assets.image_pinned}")
    assert res.data["passed"] is False
    assert "error code system not yet initialized" in res.data["stderr"]
    assert res.data["diagnosis"]["layer"] == "fabric"
    assert "nvidia-fabricmanager" in res.data["diagnosis"]["fix"]

    # On the host: nvgpu_cuda's check against the stand-in libcuda.
    libdir = node.root / "tmp" / "standin-cuda"
    libdir.mkdir()
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(libdir / "libcuda.so.1"),
                    str(REPO / "tests" / "functional" / "stand_in_libcuda.c")], check=True)
    host = node.run([SALT_CALL, "--local", "--out=json", "--log-level=quiet", "nvgpu_cuda.vector_add"],
                    env={"LD_LIBRARY_PATH": "/tmp/standin-cuda"})
    assert "CUDA_ERROR_SYSTEM_NOT_READY" in host.stdout

    node.run(["systemctl", "start", FM], check=True)
    assert node.read_file("/sys/module/nvidia/fabric_state").strip() == "Completed"
    res = node.salt_call("nvgpu.run_vector_add", "mode=cdi", f"image={node_assets.image_pinned}")
    assert res.data["passed"] is True, res.data
    node.run(["systemctl", "stop", FM], check=True)
    res = node.salt_call("nvgpu.run_vector_add", "mode=cdi", f"image={node_assets.image_pinned}")
    assert res.data["passed"] is False and res.data["diagnosis"]["layer"] == "fabric"


def test_the_doctor_reads_the_fabric_manager_and_the_fabric(node):
    _hgx(node)
    checks = {c["name"]: c for c in node.salt_call("nvgpu.doctor").data["checks"]}
    assert checks["fabric-manager"]["status"] == "fail"
    node.run(["systemctl", "start", FM], check=True)
    checks = {c["name"]: c for c in node.salt_call("nvgpu.doctor").data["checks"]}
    assert checks["fabric-manager"]["status"] == "ok", checks["fabric-manager"]
    assert node.run(["nvidia-smi", "--query-gpu=index,fabric.state", "--format=csv,noheader"]).stdout.strip() == \
        "0, Completed"
