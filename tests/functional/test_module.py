"""
The nvgpu execution module through real ``salt-call --local`` on the simulated RHEL 8
GPU node (tests/node): real dnf, real Podman running the stand-in vector-add image
from the local registry, real users; stand-in NVIDIA tools that fail like the real ones.

Each test says what a node looks like (provisioned by hand, as the guide does), calls
the module, and checks what it returned and what it did to the node.
"""

import json

import pytest

from tests.nvidia import NVIDIA_HOOK as HOOK

pytestmark = pytest.mark.node

IMAGE = "localhost:5000/nvgpu/cuda-vector-add:v0.1"
KERNEL_RELEASE = "4.18.0-513.24.1.el8_9.x86_64"
LATEST = "580.105.08"  # the latest-dkms stream's driver in the stand-in repos
OLDER = "550.127.08"  # the 550-dkms stream's
HOOK_PATH = "/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json"
ROOTLESS_FLAGS = [
    "--security-opt=no-new-privileges",
    "--cap-drop=ALL",
    "--security-opt",
    "label=type:nvidia_container_t",
]
ALL_MODULES_UNLOADED = {
    "nvidia": False,
    "nvidia_uvm": False,
    "nvidia_modeset": False,
    "nvidia_drm": False,
}


def install_driver(node, stream="latest-dkms", kernel_devel=True):
    """The guide's driver steps, without unloading nouveau or loading anything."""
    if kernel_devel:
        node.dnf("install", f"kernel-devel-{KERNEL_RELEASE}", f"kernel-headers-{KERNEL_RELEASE}")
    node.add_repos()
    node.dnf("module", "install", f"nvidia-driver:{stream}/default")


def add_hook(node):
    node.write_file(HOOK_PATH, json.dumps(HOOK, indent=4) + "\n")


def rootless_ready(node, name="gpuuser", uid=2001):
    node.add_user(name, uid=uid)
    node.run(
        ["nvidia-ctk", "config", "--set", "nvidia-container-cli.no-cgroups=true", "--in-place"],
        check=True,
    )


def vector_add(node, *args):
    return node.salt_call("nvgpu.run_vector_add", f"image={IMAGE}", *args, timeout=600)


def failure_message(res):
    assert res.retcode != 0, res.stdout
    return res.stderr + res.stdout


def kernel_state(node):
    return {k: v for k, v in node.snapshot().items() if k.startswith(("sys-module/", "dev/"))}


# --------------------------------------------------------------------------- loading


def test_loads_on_a_node_without_a_driver(node):
    res = node.salt_call("nvgpu.loaded_modules")
    assert res.retcode == 0, res.stderr
    assert res.data == {**ALL_MODULES_UNLOADED, "nouveau": True}
    assert node.salt_call("nvgpu.driver_version").data is None
    assert node.salt_call("nvgpu.podman_version").data is None


def test_load_modules_without_a_driver(node):
    text = failure_message(node.salt_call("nvgpu.load_modules"))
    assert "nvidia-modprobe not found" in text
    assert "dnf module install nvidia-driver:" in text


def test_load_modules_with_nouveau_loaded(node):
    install_driver(node)
    text = failure_message(node.salt_call("nvgpu.load_modules"))
    assert "could not insert 'nvidia'" in text  # the tool's own words
    assert "nouveau" in text and "blacklist" in text
    assert not node.exists("/sys/module/nvidia")


def test_load_modules_without_a_module_for_the_running_kernel(node):
    # No kernel-devel: DKMS could not build nvidia.ko for the running kernel.
    install_driver(node, kernel_devel=False)
    node.run(["modprobe", "-r", "nouveau"], check=True)
    text = failure_message(node.salt_call("nvgpu.load_modules"))
    assert "Module nvidia not found" in text
    assert f"kernel-devel-{KERNEL_RELEASE}" in text and "DKMS" in text


def test_load_modules_on_a_fresh_install_names_both_blockers(node):
    # nouveau still bound and no kernel-devel: the module must be built first.
    install_driver(node, kernel_devel=False)
    text = failure_message(node.salt_call("nvgpu.load_modules"))
    assert text.index("no nvidia kernel module is built") < text.index("nouveau driver is loaded")
    assert f"kernel-devel-{KERNEL_RELEASE}" in text and "modprobe -r nouveau" in text


def test_load_modules_loads_then_changes_nothing(node):
    node.provision(loaded=False)
    before = node.salt_call("nvgpu.loaded_modules").data
    assert before == {**ALL_MODULES_UNLOADED, "nouveau": False}

    first = node.salt_call("nvgpu.load_modules")
    assert first.retcode == 0, first.stderr
    assert first.data["changed"] is True
    assert first.data["modules"]["nvidia"] and first.data["modules"]["nvidia_uvm"]
    assert {"/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"} <= set(first.data["device_nodes"])
    assert first.data["device_nodes"] == sorted(first.data["device_nodes"])
    state = kernel_state(node)

    # The second call must not even look for nvidia-modprobe.
    node.run(["mv", "/usr/bin/nvidia-modprobe", "/usr/bin/nvidia-modprobe.away"], check=True)
    second = node.salt_call("nvgpu.load_modules")
    assert second.retcode == 0, second.stderr
    assert second.data == {**first.data, "changed": False}
    assert kernel_state(node) == state


def test_load_modules_without_uvm(node):
    node.provision(loaded=False)
    res = node.salt_call("nvgpu.load_modules", "uvm=False")
    assert res.retcode == 0, res.stderr
    assert res.data["modules"]["nvidia"] is True
    assert res.data["modules"]["nvidia_uvm"] is False
    assert "/dev/nvidia-uvm" not in res.data["device_nodes"]


# --------------------------------------------------------------------------- facts


def test_versions(node):
    node.provision()
    assert node.salt_call("nvgpu.driver_version").data == LATEST
    assert node.salt_call("nvgpu.podman_version").data == "4.3.1"


def test_list_container_files(node):
    node.provision()
    res = node.salt_call("nvgpu.list_container_files")
    assert res.retcode == 0, res.stderr
    files = res.data
    assert set(files) == {"devices", "mig", "binaries", "libraries", "libraries32", "ipcs", "firmware", "other"}
    assert {"/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-uvm"} <= set(files["devices"])
    assert f"/usr/lib64/libcuda.so.{LATEST}" in files["libraries"]
    assert f"/usr/lib64/libnvidia-ml.so.{LATEST}" in files["libraries"]
    assert files["libraries32"] == [f"/usr/lib/libcuda.so.{LATEST}"]
    assert "/usr/bin/nvidia-smi" in files["binaries"]
    assert f"/lib/firmware/nvidia/{LATEST}/gsp_ga10x.bin" in files["firmware"]
    assert files["other"] == []

    # Every path the tool printed, once, nothing else.
    raw = node.run(["nvidia-container-cli", "list"], check=True).stdout.split()
    flat = [path for paths in files.values() for path in paths]
    assert sorted(flat) == sorted(set(raw)) and len(flat) == len(set(flat))

    only = node.salt_call("nvgpu.list_container_files", "kind=libraries")
    assert only.data == files["libraries"]


def test_list_container_files_loads_modules_with_k_only(node):
    node.provision(loaded=False)
    text = failure_message(node.salt_call("nvgpu.list_container_files", "load_kmods=False"))
    assert "nvidia-container-cli: initialization error: nvml error: driver not loaded" in text
    assert "nvgpu.load_modules" in text
    assert not node.exists("/sys/module/nvidia")

    res = node.salt_call("nvgpu.list_container_files")
    assert res.retcode == 0, res.stderr
    assert node.exists("/sys/module/nvidia")


def test_list_container_files_without_the_toolkit(node):
    node.provision(toolkit=False)
    text = failure_message(node.salt_call("nvgpu.list_container_files"))
    assert "nvidia-container-toolkit" in text and "libnvidia-container-tools" in text


def test_list_container_files_unknown_kind(node):
    text = failure_message(node.salt_call("nvgpu.list_container_files", "kind=libs"))
    assert "valid kinds" in text and "libraries32" in text


# --------------------------------------------------------------------------- vector add: passing


def test_vector_add_as_root_with_the_hook(node):
    node.provision()
    add_hook(node)
    res = vector_add(node, "mode=hook")
    assert res.retcode == 0, res.stdout + res.stderr
    data = res.data
    assert data["passed"] is True, data
    assert (data["elements"], data["blocks"], data["threads"]) == (50000, 196, 256)
    assert data["mode"] == "hook" and data["user"] is None and data["diagnosis"] is None
    assert data["command"][0].endswith("/podman")
    assert data["command"][1:] == ["run", "--rm", "--pull=missing", "--network=none", "--privileged", IMAGE]
    assert data["duration_s"] > 0


def test_vector_add_as_root_with_cdi(node):
    node.provision()
    node.run(["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"], check=True)
    res = vector_add(node)  # mode=auto: this node's Podman (4.3) reads CDI specs
    assert res.retcode == 0, res.stdout + res.stderr
    assert res.data["passed"] is True, res.data
    assert res.data["mode"] == "cdi"
    assert res.data["command"][1:] == [
        "run", "--rm", "--pull=missing", "--network=none", "--device", "nvidia.com/gpu=all", IMAGE]


def test_vector_add_rootless_runs_podman_as_the_user(node):
    node.provision()
    add_hook(node)
    rootless_ready(node)
    res = vector_add(node, "user=gpuuser", "mode=hook")
    assert res.retcode == 0, res.stdout + res.stderr
    data = res.data
    assert data["passed"] is True, data
    assert data["user"] == "gpuuser"
    assert data["command"][1:] == [
        "run", "--rm", "--pull=missing", "--network=none", "--user", "2001:2001", *ROOTLESS_FLAGS, IMAGE]
    assert "--privileged" not in data["command"]
    # Podman really ran as gpuuser: the image is in gpuuser's storage, not root's.
    as_user = node.run(["podman", "images", "--quiet", IMAGE], user="gpuuser")
    as_root = node.run(["podman", "images", "--quiet", IMAGE])
    assert as_user.stdout.strip(), as_user.stderr
    assert not as_root.stdout.strip()
    assert node.exists("/home/gpuuser/.local/share/containers/storage")


def test_vector_add_rootless_with_cdi(node):
    node.provision()
    rootless_ready(node)
    node.run(["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"], check=True)
    res = vector_add(node, "user=gpuuser", "mode=cdi")
    assert res.retcode == 0, res.stdout + res.stderr
    assert res.data["passed"] is True, res.data
    assert res.data["command"][-3:] == ["--device", "nvidia.com/gpu=all", IMAGE]
    assert "--privileged" not in res.data["command"]


# --------------------------------------------------------------------------- vector add: failing


def assert_failed_with(res, in_output, in_cause):
    """A failed vector add: a result, a diagnosis, and a non-zero salt-call exit code."""
    assert res.retcode == 1, (res.retcode, res.stdout, res.stderr)
    data = res.data
    assert data is not None, res.stdout + res.stderr
    assert data["passed"] is False
    assert in_output in data["stdout"] + data["stderr"]
    assert in_cause in data["diagnosis"]["cause"], data["diagnosis"]
    assert data["diagnosis"]["fix"]
    return data


def test_vector_add_without_the_hook_exits_non_zero(node):
    node.provision()  # toolkit installed, but no hook file and no CDI spec
    data = assert_failed_with(
        vector_add(node, "mode=hook"), "CUDA driver version is insufficient for CUDA runtime version",
        "libcuda was not injected",
    )
    assert data["elements"] == 50000 and data["blocks"] is None
    assert data["retcode"] != 0


def test_vector_add_with_the_driver_not_loaded(node):
    node.provision(loaded=False)
    add_hook(node)
    node.run(["modprobe", "nouveau"], check=True)  # so that the hook's -k cannot load nvidia either
    data = assert_failed_with(vector_add(node, "mode=hook"), "nvml error: driver not loaded", "not loaded")
    assert "nvgpu.load_modules" in data["diagnosis"]["fix"]


def test_vector_add_cdi_without_a_spec(node):
    node.provision()
    data = assert_failed_with(vector_add(node, "mode=cdi"), "unresolvable CDI devices", "CDI")
    assert "nvidia-ctk cdi generate" in data["diagnosis"]["fix"]


def test_vector_add_with_a_stale_cdi_spec(node):
    node.provision(stream="550-dkms")
    node.run(["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"], check=True)
    # Driver upgrade, then a reboot into it; the spec still names the 550 libraries.
    node.dnf("module", "switch-to", "nvidia-driver:latest-dkms/default")
    node.reboot()
    node.run(["nvidia-modprobe"], check=True)
    node.run(["nvidia-modprobe", "-u"], check=True)
    data = assert_failed_with(vector_add(node), f"libcuda.so.{OLDER}", "older driver")
    assert data["mode"] == "cdi"


def test_vector_add_rootless_without_no_cgroups(node):
    node.provision()
    add_hook(node)
    node.add_user("gpuuser", uid=2001)
    data = assert_failed_with(vector_add(node, "user=gpuuser", "mode=hook"), "BPF_CGROUP_DEVICE", "cgroup")
    assert "no-cgroups=true" in data["diagnosis"]["fix"]


def test_vector_add_rootless_without_newuidmap(node):
    node.provision()
    rootless_ready(node)
    node.run(["rm", "-f", "/usr/bin/newuidmap"], check=True)
    data = assert_failed_with(vector_add(node, "user=gpuuser", "mode=cdi"), "newuidmap", "newuidmap")
    assert data["diagnosis"]["layer"] == "rootless"
    assert "shadow-utils" in data["diagnosis"]["fix"]


def test_vector_add_rootless_with_its_own_uid_in_its_range(node):
    node.provision()
    rootless_ready(node)
    node.run(["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"], check=True)
    # A range that contains the user's own uid (2001), as a careless subuid_start would give.
    others = [line for line in node.read_file("/etc/subuid").splitlines() if not line.startswith("gpuuser:")]
    node.write_file("/etc/subuid", "\n".join(others + ["gpuuser:1000:65536"]) + "\n")
    data = assert_failed_with(vector_add(node, "user=gpuuser", "mode=cdi"), "includes the user UID",
                              "contains the user's own uid")
    assert data["diagnosis"]["layer"] == "rootless"
    assert "subuid_start" in data["diagnosis"]["fix"]


def test_vector_add_image_missing_from_the_registry(node):
    node.provision()
    add_hook(node)
    res = node.salt_call("nvgpu.run_vector_add", "image=localhost:5000/nvgpu/no-such-image:v0.1", "mode=hook",
                         timeout=600)
    assert res.retcode == 1
    assert res.data["passed"] is False
    assert "image" in res.data["diagnosis"]["cause"], res.data


def test_vector_add_timeout_is_a_failed_result(node):
    node.provision()
    add_hook(node)
    res = vector_add(node, "mode=hook", "timeout=0.01")
    assert res.retcode == 1
    assert res.data["passed"] is False
    assert "timeout" in res.data["diagnosis"]["cause"], res.data


@pytest.mark.parametrize(
    "args",
    [("mode=magic",), ("runtime=host", "user=gpuuser"), ("image=--privileged",), ("user=no-such-user",)],
)
def test_vector_add_unusable_arguments(node, args):
    res = node.salt_call("nvgpu.run_vector_add", *args)
    assert res.retcode != 0
    assert res.data is None or "passed" not in (res.data or {})


def test_vector_add_without_podman(node):
    node.provision(podman=False)
    text = failure_message(node.salt_call("nvgpu.run_vector_add"))
    assert "podman not found" in text
