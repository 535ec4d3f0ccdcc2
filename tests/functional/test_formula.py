"""
The gpu formula through real Salt (`salt-call --local state.apply gpu`) on the
simulated RHEL 8 node: real dnf module streams, real Podman, stand-in NVIDIA tools.
These are the "Done when" checks of the formula's issue.
"""

import pytest

from tests.node import site_pillar

pytestmark = pytest.mark.node

# What Salt and dnf write for themselves on every run, test=True included: Salt's
# cache, key pair and logs, dnf's metadata cache and logs, and SQLite's shared-memory
# index that opening the rpm database creates. None of it is node configuration.
BOOKKEEPING = (
    "var.upper/cache/",
    "var.upper/log/",
    "etc.upper/salt/pki",
    "etc.upper/salt/minion_id",
    "var.upper/lib/rpm/rpmdb.sqlite-shm",
    "var.upper/lib/rpm/rpmdb.sqlite-wal",
)
# What any Podman command updates, also a read-only one (`podman image inspect`, which
# the validation state asks for the image's id under test=True too): its locks and its
# state database. Bookkeeping of Podman's own, not the node's configuration or images.
PODMAN_BOOKKEEPING = ("storage/libpod/bolt_state.db", "storage.lock", "layers.lock")
# What the validation run itself writes: Podman's container storage (root and rootless).
CONTAINER_STORAGE = ("var.upper/lib/containers/", "/.local/share/containers/")
# Where a dnf transaction leaves its mark: the rpm database and dnf's history.
TRANSACTION_MARKS = ("var.upper/lib/rpm/rpmdb.sqlite", "var.upper/lib/dnf/history.sqlite")


def _states(res):
    assert isinstance(res.data, dict), f"no state results:\n{res.stdout}\n{res.stderr}"
    return {v["__id__"]: v for v in res.data.values()}


def _failed(states):
    return {sid: v["comment"] for sid, v in states.items() if v["result"] is False}


def _changed(states):
    return {sid: v["changes"] for sid, v in states.items() if v["changes"]}


def apply(node, pillar, test=None, sls="gpu"):
    return node.salt_call("state.apply", sls, pillar=pillar, test=test)


def converge(node, pillar):
    res = apply(node, pillar)
    states = _states(res)
    assert not _failed(states), _failed(states)
    assert res.retcode == 0
    return states


def _config(snapshot, validated=False):
    """The node's configuration in a snapshot; `validated`: also ignore container storage."""
    return {
        k: v
        for k, v in snapshot.items()
        if not k.startswith(BOOKKEEPING) and not k.endswith(PODMAN_BOOKKEEPING)
        and not (validated and any(c in k for c in CONTAINER_STORAGE))
    }


def test_fresh_apply_converges_and_second_run_changes_nothing(node, node_assets):
    pillar = site_pillar(node_assets)
    states = converge(node, pillar)
    assert states["gpu-driver-stream"]["changes"]["stream"]["new"] == "latest-dkms"
    assert "cdi_spec" in states["gpu-container-toolkit"]["changes"]
    assert "PASSED" in states["gpu-validate-root"]["comment"]
    assert node.exists("/etc/cdi/nvidia.yaml")
    assert "blacklist nouveau" in node.read_file("/etc/modprobe.d/blacklist-nouveau.conf")
    assert not node.exists("/sys/module/nouveau")

    before = node.snapshot()
    res = apply(node, pillar)
    states = _states(res)
    assert res.retcode == 0
    assert not _failed(states)
    assert _changed(states) == {}
    after = node.snapshot()
    # No dnf transaction: the rpm database and dnf history are byte-identical.
    for mark in TRANSACTION_MARKS:
        assert before.get(mark) == after.get(mark), mark
    assert _config(before, validated=True) == _config(after, validated=True)


def test_test_mode_lists_every_change_and_leaves_node_unchanged(node, node_assets):
    pillar = site_pillar(node_assets)
    before = node.snapshot()
    res = apply(node, pillar, test=True)
    states = _states(res)
    after = node.snapshot()
    assert _config(before) == _config(after)
    assert not _failed(states)
    changed = _changed(states)
    for sid in changed:
        assert states[sid]["result"] is None, (sid, states[sid])
    for sid in ("gpu-kernel-devel-headers-installed", "gpu-cuda-repo", "gpu-driver-stream",
                "gpu-cuda-installed", "gpu-nouveau-blacklisted", "gpu-nouveau-unloaded",
                "gpu-driver-modules-loaded", "gpu-container-runtime", "gpu-container-toolkit"):
        assert sid in changed, sid
    assert changed["gpu-driver-stream"]["stream"] == {"old": None, "new": "latest-dkms"}
    assert changed["gpu-driver-modules-loaded"] == {"loaded": ["nvidia", "nvidia_uvm"]}
    assert states["gpu-validate-root"]["result"] is None
    assert "would run" in states["gpu-validate-root"]["comment"]


def test_bad_pillar_fails_early_naming_the_key(node, node_assets):
    before = node.snapshot()
    cases = [
        ({"driver": {"stream": "latest:dkms"}}, "gpu:driver:stream"),
        ({"toolkit": {"mode": "oci"}}, "gpu:toolkit:mode"),
        ({"rootless_users": [{"uid": 2001}]}, "gpu:rootless_users[0]"),
        ({"selinux": {"policy_source": "https://example.com/nvidia-container.pp", "policy_hash": ""}},
         "gpu:selinux:policy_hash"),
        ({"driver": {"initramfs_cmd": "dracut -f; rm -rf /boot"}}, "gpu:driver:initramfs_cmd"),
    ]
    for gpu, key in cases:
        res = apply(node, site_pillar(node_assets, **gpu))
        assert res.retcode != 0, gpu
        assert key in res.stdout + res.stderr, (gpu, res.stdout[-2000:])
    assert _config(before) == _config(node.snapshot())


def test_stream_switch_550_to_latest_with_real_dnf(node, node_assets):
    converge(node, site_pillar(node_assets, driver={"stream": "550-dkms"}))
    assert "stream=550-dkms" in node.read_file("/etc/dnf/modules.d/nvidia-driver.module")
    assert "550.127.08" in node.run(["rpm", "-q", "nvidia-driver"]).stdout

    states = converge(node, site_pillar(node_assets, driver={"stream": "latest-dkms"}))
    assert states["gpu-driver-stream"]["changes"]["stream"] == {"old": "550-dkms", "new": "latest-dkms"}
    assert "switched from stream 550-dkms" in states["gpu-driver-stream"]["comment"]
    assert "stream=latest-dkms" in node.read_file("/etc/dnf/modules.d/nvidia-driver.module")
    assert "580.105.08" in node.run(["rpm", "-q", "nvidia-driver"]).stdout
    # The loaded 550 module is replaced by the installed 580 one, the CDI spec follows,
    # and the node validates in the same run.
    assert states["gpu-driver-modules-loaded"]["changes"]["driver_version"] == {
        "old": "550.127.08", "new": "580.105.08"}
    assert states["gpu-container-toolkit"]["changes"]["cdi_spec"]["reason"].startswith("stale")
    assert "PASSED" in states["gpu-validate-root"]["comment"]


def test_driver_upgrade_makes_cdi_spec_stale_and_next_run_regenerates_it(node, node_assets):
    converge(node, site_pillar(node_assets, driver={"stream": "550-dkms"}, toolkit={"mode": "cdi"}))
    assert "libcuda.so.550.127.08" in node.read_file("/etc/cdi/nvidia.yaml")
    # The driver is upgraded (a new stream) and the host reboots into it.
    node.dnf("module", "switch-to", "nvidia-driver:latest-dkms/default")
    node.reboot()
    node.run(["nvidia-modprobe"], check=True)
    node.run(["nvidia-modprobe", "-u"], check=True)
    res = node.salt_call("nvgpu.run_vector_add", "mode=cdi", f"image={node_assets.image}")
    assert res.data["passed"] is False
    assert "libcuda.so.550.127.08" in res.data["stderr"] + res.data["stdout"]

    states = converge(node, site_pillar(node_assets, toolkit={"mode": "cdi"}))
    change = states["gpu-container-toolkit"]["changes"]["cdi_spec"]
    assert change["reason"].startswith("stale")
    assert change["new"]["driver_version"] == "580.105.08"
    assert "libcuda.so.580.105.08" in node.read_file("/etc/cdi/nvidia.yaml")
    assert "PASSED" in states["gpu-validate-root"]["comment"]


def test_adding_a_rootless_user_adds_account_and_passing_validation(node, node_assets):
    converge(node, site_pillar(node_assets))
    pillar = site_pillar(node_assets, rootless_users=[{"name": "gpuuser", "uid": 2001}])
    states = converge(node, pillar)
    assert states["gpu-rootless-user-gpuuser"]["changes"]
    assert "PASSED as gpuuser" in states["gpu-validate-gpuuser"]["comment"]
    assert states["gpu-container-toolkit"]["changes"]["no-cgroups"] == {"old": None, "new": True}
    assert node.read_file("/etc/passwd").count("gpuuser:x:2001:") == 1
    assert any(line.startswith("gpuuser:") for line in node.read_file("/etc/subuid").splitlines())
    assert any(line.startswith("gpuuser:") for line in node.read_file("/etc/subgid").splitlines())
    again = _states(apply(node, pillar))
    assert _changed(again) == {}
    assert not _failed(again)


@pytest.mark.parametrize(
    "mode, artefact, cause",
    [
        ("hook", "/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json", "libcuda was not injected"),
        ("cdi", "/etc/cdi/nvidia.yaml", "no CDI device"),
    ],
)
def test_mode_passes_then_removal_fails_with_diagnosis_and_next_run_repairs(
    node, node_assets, mode, artefact, cause
):
    pillar = site_pillar(node_assets, toolkit={"mode": mode}, rootless_users=[{"name": "gpuuser", "uid": 2001}])
    states = converge(node, pillar)
    assert f"PASSED as root (mode {mode}" in states["gpu-validate-root"]["comment"]
    assert f"PASSED as gpuuser (rootless) (mode {mode}" in states["gpu-validate-gpuuser"]["comment"]

    node.run(["rm", "-f", artefact], check=True)
    res = node.salt_call(
        "state.single", "nvgpu.vector_add_passes", "name=check", f"mode={mode}", f"image={node_assets.image}"
    )
    (result,) = res.data.values()
    assert result["result"] is False
    assert cause in result["comment"], result["comment"]
    assert "Fix:" in result["comment"]
    assert res.retcode != 0

    states = converge(node, pillar)
    key = "oci_hook" if mode == "hook" else "cdi_spec"
    assert key in states["gpu-container-toolkit"]["changes"]
    assert node.exists(artefact)
    assert "PASSED" in states["gpu-validate-root"]["comment"]


def test_validation_stage_can_be_disabled(node, node_assets):
    states = converge(node, site_pillar(node_assets, validate={"enabled": False}))
    assert "gpu-validate-root" not in states
    assert "gpu-container-toolkit" in states


def test_pillar_example_converges_with_site_mirrors(node, node_assets):
    import pathlib

    import yaml

    example = yaml.safe_load((pathlib.Path(__file__).parents[2] / "pillar.example").read_text())
    site = site_pillar(node_assets)["gpu"]
    gpu = example["gpu"]
    for repo in ("cuda", "toolkit"):
        gpu["repos"][repo].update(site["repos"][repo])
    gpu["validate"]["image"] = site["validate"]["image"]
    gpu["rootless_users"] = [{"name": "gpuuser", "uid": 2001, "gid": 2001, "subuid_start": 300000}]
    states = converge(node, {"gpu": gpu})
    assert "PASSED as gpuuser" in states["gpu-validate-gpuuser"]["comment"]
    assert "gpuuser:300000:65536" in node.read_file("/etc/subuid")
    assert "gpuuser:x:2001:2001:" in node.read_file("/etc/passwd")
    assert _changed(_states(apply(node, {"gpu": gpu}))) == {}


def test_container_tools_stream_and_legacy_toolkit_repos(node, node_assets):
    toolkit = site_pillar(node_assets)["gpu"]["repos"]["toolkit"]
    legacy = {name: dict(toolkit) for name in ("libnvidia-container", "nvidia-container-runtime", "nvidia-docker")}
    pillar = site_pillar(
        node_assets,
        runtime={"container_tools": True},
        repos={**site_pillar(node_assets)["gpu"]["repos"], "toolkit": {"legacy": True, "legacy_repos": legacy}},
        toolkit={"mode": "hook"},
    )
    states = converge(node, pillar)
    assert states["gpu-container-runtime"]["changes"]["stream"]["new"] == "rhel8"
    assert "stream=rhel8" in node.read_file("/etc/dnf/modules.d/container-tools.module")
    for name in legacy:
        text = node.read_file(f"/etc/yum.repos.d/{name}.repo")
        assert "gpgcheck=1" in text.replace(" ", ""), text
    assert not node.exists("/etc/yum.repos.d/nvidia-container-toolkit.repo")
    assert "PASSED as root (mode hook" in states["gpu-validate-root"]["comment"]


def test_switching_hook_to_cdi_replaces_the_hook_with_a_spec(node, node_assets):
    hook = "/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json"
    converge(node, site_pillar(node_assets, toolkit={"mode": "hook"}))
    assert node.exists(hook)
    states = converge(node, site_pillar(node_assets, toolkit={"mode": "cdi"}))
    changes = states["gpu-container-toolkit"]["changes"]
    assert changes["oci_hook"] == {"old": hook, "new": None}
    assert changes["cdi_spec"]["reason"] == "missing"
    assert not node.exists(hook)
    assert "PASSED as root (mode cdi" in states["gpu-validate-root"]["comment"]


def test_switching_cdi_to_hook_removes_the_spec_and_the_ad_hoc_check_agrees(node, node_assets):
    spec = "/etc/cdi/nvidia.yaml"
    converge(node, site_pillar(node_assets, toolkit={"mode": "cdi"}))
    assert node.exists(spec)
    pillar = site_pillar(node_assets, toolkit={"mode": "hook"})
    states = converge(node, pillar)
    assert states["gpu-container-toolkit"]["changes"]["cdi_spec"] == {"old": spec, "new": None}
    assert not node.exists(spec)
    assert "PASSED as root (mode hook" in states["gpu-validate-root"]["comment"]
    # The README's ad-hoc check, with no mode: it follows what pillar configured.
    node.write_pillar(pillar)
    res = node.salt_call("nvgpu.run_vector_add", f"image={node_assets.image}")
    assert res.data["passed"] is True and res.data["mode"] == "hook", (res.data["mode"], res.data["stderr"][-500:])


def test_test_mode_after_a_reboot_loads_no_module_and_changes_nothing(node, node_assets):
    pillar = site_pillar(node_assets)
    converge(node, pillar)
    node.reboot()  # the modules are gone; the toolkit's nvidia-container-cli -k would load them
    before = node.snapshot()
    states = _states(apply(node, pillar, test=True))
    assert not _failed(states)
    assert _config(before) == _config(node.snapshot())
    assert not node.exists("/sys/module/nvidia")
    assert states["gpu-driver-modules-loaded"]["result"] is None
    assert states["gpu-driver-modules-loaded"]["changes"] == {"loaded": ["nvidia", "nvidia_uvm"]}
