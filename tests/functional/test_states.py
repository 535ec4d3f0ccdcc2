"""
Single nvgpu states through real Salt (`salt-call --local state.single`) on the
simulated RHEL 8 node: what each does to a real node, test=True leaving it
untouched, and a second run changing nothing.
"""

import hashlib
import json

import pytest

from tests.nvidia import NVIDIA_HOOK

pytestmark = pytest.mark.node

BOOKKEEPING = ("var.upper/cache/", "var.upper/log/", "etc.upper/salt/pki", "etc.upper/salt/minion_id",
               "var.upper/lib/rpm/rpmdb.sqlite-shm", "var.upper/lib/rpm/rpmdb.sqlite-wal")


def single(node, fun, *args, test=None):
    res = node.salt_call("state.single", fun, *args, test=test)
    assert isinstance(res.data, dict), f"{res.stdout}\n{res.stderr}"
    (state,) = res.data.values()
    return state


def config(node):
    return {k: v for k, v in node.snapshot().items() if not k.startswith(BOOKKEEPING)}


def test_dnf_module_installed_enables_installs_and_then_runs_no_dnf(node):
    before = config(node)
    pending = single(node, "dnf_module.installed", "name=container-tools", "stream=rhel8", "profile=common",
                     test=True)
    assert pending["result"] is None
    assert pending["changes"]["stream"] == {"old": None, "new": "rhel8"}
    assert config(node) == before

    done = single(node, "dnf_module.installed", "name=container-tools", "stream=rhel8", "profile=common")
    assert done["result"] is True, done["comment"]
    assert done["changes"]["profiles"]["new"] == ["common"]
    assert node.run(["rpm", "-q", "podman"]).returncode == 0

    rpmdb = node.snapshot().get("var.upper/lib/rpm/rpmdb.sqlite")
    again = single(node, "dnf_module.installed", "name=container-tools", "stream=rhel8", "profile=common")
    assert again["result"] is True and again["changes"] == {}
    assert node.snapshot().get("var.upper/lib/rpm/rpmdb.sqlite") == rpmdb


def test_dnf_module_installed_failure_names_the_stream(node):
    node.add_repos()
    # Through its former name, which existing SLS files use.
    state = single(node, "nvgpu.module_stream", "name=nvidia-driver", "stream=999-dkms", "profile=default")
    assert state["result"] is False
    assert "nvidia-driver:999-dkms/default" in state["comment"]
    assert "dnf module list nvidia-driver" in state["comment"]


def test_nouveau_unloaded_and_modules_loaded(node):
    node.provision(loaded=False)
    node.run(["modprobe", "nouveau"], check=True)
    before = config(node)
    pending = single(node, "nvgpu.module_unloaded", "name=nouveau", test=True)
    assert pending["result"] is None and pending["changes"] == {"unloaded": ["nouveau"]}
    assert config(node) == before

    assert single(node, "nvgpu.module_unloaded", "name=nouveau")["changes"] == {"unloaded": ["nouveau"]}
    assert not node.exists("/sys/module/nouveau")
    loaded = single(node, "nvgpu.modules_loaded", "name=nvidia")
    assert loaded["result"] is True
    assert loaded["changes"]["loaded"] == ["nvidia", "nvidia_uvm"]
    assert node.exists("/dev/nvidia-uvm")
    assert single(node, "nvgpu.modules_loaded", "name=nvidia")["changes"] == {}


def test_container_toolkit_hook_mode_writes_nvidias_hook_exactly(node, node_assets):
    node.provision()
    path = "/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json"
    node.run(["rm", "-f", path], check=True)
    state = single(node, "nvgpu.container_toolkit", "name=toolkit", "mode=hook", "rootless=True")
    assert state["result"] is True, state["comment"]
    assert state["changes"]["oci_hook"] == {"old": "absent", "new": path}
    assert state["changes"]["no-cgroups"]["new"] is True
    assert json.loads(node.read_file(path)) == NVIDIA_HOOK
    assert node.run(["stat", "-c", "%a", path]).stdout.strip() == "644"
    assert "no-cgroups = true" in node.read_file("/etc/nvidia-container-runtime/config.toml")
    again = single(node, "nvgpu.container_toolkit", "name=toolkit", "mode=hook", "rootless=True")
    assert again["changes"] == {}


def test_container_toolkit_cdi_spec_world_readable_and_repaired(node):
    node.provision()
    state = single(node, "nvgpu.container_toolkit", "name=toolkit", "mode=cdi")
    assert state["changes"]["cdi_spec"]["reason"] == "missing"
    node.run(["chmod", "0600", "/etc/cdi/nvidia.yaml"], check=True)
    state = single(node, "nvgpu.container_toolkit", "name=toolkit", "mode=cdi")
    assert state["changes"]["cdi_spec"]["reason"].startswith("not world-readable")
    assert node.run(["stat", "-c", "%a", "/etc/cdi/nvidia.yaml"]).stdout.strip() == "644"
    # No temporary file is left where Podman reads specs.
    assert node.run(["ls", "-A", "/etc/cdi"]).stdout.split() == ["nvidia.yaml"]


def _selinux_node(node):
    """A provisioned node with SELinux Permissive (the kernel here has SELinux off: stand-in
    getenforce/getsebool/setsebool; semodule and restorecon are the real tools on the real
    policy store). Its RHEL 8 container-selinux has no container_use_xserver_devices."""
    node.provision()
    node.set_selinux("Permissive")


def test_selinux_ready_installs_policy_once(node, node_assets):
    _selinux_node(node)
    digest = hashlib.sha256(node_assets.policy.read_bytes()).hexdigest()
    args = ["name=selinux", f"policy_source={node_assets.policy}", f"source_hash=sha256={digest}"]
    pending = single(node, "nvgpu.selinux_ready", *args, test=True)
    assert pending["result"] is None
    assert pending["changes"]["policy_module"] == {"old": None, "new": "nvidia-container"}
    assert "nvidia-container" not in node.run(["semodule", "-l"]).stdout.split()

    done = single(node, "nvgpu.selinux_ready", *args)
    assert done["result"] is True, done["comment"]
    assert "nvidia-container" in node.run(["semodule", "-l"]).stdout.split()
    again = single(node, "nvgpu.selinux_ready", *args)
    assert again["result"] is True and again["changes"] == {}


def test_selinux_ready_refuses_wrong_hash_and_unhashed_download(node, node_assets):
    _selinux_node(node)
    wrong = single(node, "nvgpu.selinux_ready", "name=selinux", f"policy_source={node_assets.policy}",
                   "source_hash=sha256=" + "0" * 64)
    assert wrong["result"] is False
    assert "gpu:selinux:policy_hash" in wrong["comment"]
    unhashed = single(node, "nvgpu.selinux_ready", "name=selinux",
                      "policy_source=https://raw.githubusercontent.com/NVIDIA/dgx-selinux/master/bin/RHEL8/nvidia-container.pp")
    assert unhashed["result"] is False
    assert "source_hash is required" in unhashed["comment"]
    assert "nvidia-container" not in node.run(["semodule", "-l"]).stdout.split()


def test_selinux_disabled_changes_nothing(node, node_assets):
    before = config(node)
    state = single(node, "nvgpu.selinux_ready", "name=selinux", f"policy_source={node_assets.policy}")
    assert state["result"] is True and state["changes"] == {}
    assert "disabled" in state["comment"]
    assert config(node) == before


def test_subids_present_allocates_free_range_and_keeps_it(node):
    node.add_user("alice", uid=2001)
    node.run(["useradd", "-m", "-u", "2002", "bob"], check=True)
    node.run(["sed", "-i", "/^bob:/d", "/etc/subuid", "/etc/subgid"], check=True)
    state = single(node, "nvgpu.subids_present", "name=bob")
    assert state["result"] is True
    ranges = [ln.split(":") for ln in node.read_file("/etc/subuid").splitlines() if ln.count(":") == 2]
    bob = [(int(s), int(c)) for n, s, c in ranges if n == "bob"]
    others = [(int(s), int(c)) for n, s, c in ranges if n != "bob"]
    assert len(bob) == 1 and bob[0][1] == 65536
    start = bob[0][0]
    assert all(start >= s + c or start + 65536 <= s for s, c in others), (bob, others)
    assert any(ln.startswith("bob:") for ln in node.read_file("/etc/subgid").splitlines())
    assert single(node, "nvgpu.subids_present", "name=bob")["changes"] == {}
    moved = single(node, "nvgpu.subids_present", "name=bob", "start=500000")
    assert moved["changes"]["subuid"]["new"] == [{"start": 500000, "count": 65536}]
    assert "bob:500000:65536" in node.read_file("/etc/subuid")
