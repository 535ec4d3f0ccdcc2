"""
The fault suite: the gpu formula (`salt-call --local state.apply gpu`) on the simulated
RHEL 8 node while the node fails it. Each case injects one fault on a copy of one
converged node (or on a fresh node where the fault is about a first install) and checks:

- the run fails, at the state the fault hits, with a cause in the comment's first line
  that names what failed and where; the other failures are Salt's requisite failures;
  no Python traceback anywhere in the output;
- no partial file: nothing but the changes that completed (and each tool's own
  bookkeeping) differs from before the run, no temporary file is left;
- after the fault is removed, the next run converges (and validates) with no manual repair.

Faults that live in the mount table (a read-only or full directory) are set up inside
the one command that runs Salt (tests/node/enter gives every command a fresh mount
namespace), by FAULT below: the fault exists for exactly that run, and the directory's
listing as the run left it is written to the node's /tmp.
"""

import hashlib
import json
import subprocess
import uuid

import pytest

from tests.functional.test_formula import BOOKKEEPING, CONTAINER_STORAGE, _failed, _states, apply, converge
from tests.node import HOME, KERNEL_RELEASE, SALT_CALL, Node, SaltResult, site_pillar

pytestmark = pytest.mark.node

CDI_DIR, CDI_SPEC = "/etc/cdi", "/etc/cdi/nvidia.yaml"
HOOK_DIR = "/usr/share/containers/oci/hooks.d"
HOOK = f"{HOOK_DIR}/oci-nvidia-hook.json"
BLACKLIST = "/etc/modprobe.d/blacklist-nouveau.conf"
INITRAMFS = f"/boot/initramfs-{KERNEL_RELEASE}.img"
LISTING = "nvgpu-fault-listing"

# bash -c FAULT fault KIND DIR ARGV...: make DIR read-only, or full (a small tmpfs holding
# a copy of DIR and a file that takes all its space, bound over DIR), run ARGV, and leave
# DIR's listing as the run left it in /tmp/nvgpu-fault-listing.
FAULT = r"""
set -e
kind=$1 dir=$2
shift 2
case $kind in
    read-only)
        mount --bind "$dir" "$dir"
        mount -o remount,bind,ro "$dir" ;;
    full)
        mkdir -p /run/nvgpu-full
        mount -t tmpfs -o size=64k nvgpu-full /run/nvgpu-full
        mkdir /run/nvgpu-full/dir
        cp -a "$dir"/. /run/nvgpu-full/dir/
        dd if=/dev/zero of=/run/nvgpu-full/filler bs=4k 2>/dev/null || true
        mount --bind /run/nvgpu-full/dir "$dir" ;;
esac
set +e
"$@"
rc=$?
ls -A "$dir" > /tmp/nvgpu-fault-listing
exit $rc
"""


def apply_with_fault(node, pillar, kind, directory):
    """`state.apply gpu` with `directory` read-only or full for this run only; the result
    and the directory's listing as the run left it."""
    salt_call = [SALT_CALL, "--local", "--out=json", "--log-level=quiet", "state.apply", "gpu",
                 "pillar=" + json.dumps(pillar)]
    proc = node.run(["bash", "-c", FAULT, "fault", kind, directory, *salt_call])
    listing = (node.root / "tmp" / LISTING).read_text().split()
    (node.root / "tmp" / LISTING).unlink()
    return SaltResult.of(proc), listing


def fails_cleanly(res, sid, *words, salts_own_state=False):
    """The run failed at `sid`; the first line of its comment holds `words`; the only other
    failures are requisites; no traceback anywhere. Returns the comment."""
    assert res.retcode != 0
    failed = _failed(_states(res))
    assert sid in failed, failed
    first = failed[sid].splitlines()[0]
    for word in words:
        assert word in first, (word, failed[sid])
    for other, comment in failed.items():
        assert other == sid or comment.startswith("One or more requisite failed"), (other, comment)
    assert "Traceback" not in res.stdout + res.stderr
    # Salt appends a dump of a CommandExecutionError's `info` to its text; nvgpu's errors
    # keep it out of the comment (Salt's own pkg states put theirs there).
    assert salts_own_state or "Additional info follows" not in failed[sid]
    print(f"\n[{sid}] {failed[sid]}")
    return failed[sid]


def config_changes(before, after, *also_ignored):
    """What differs between two snapshots, Salt's and dnf's bookkeeping and container storage
    (the validation run's) aside; a directory only where nothing below it changed."""
    ignored = BOOKKEEPING + also_ignored
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    kept = {k for k in changed if not k.startswith(ignored) and not any(c in k for c in CONTAINER_STORAGE)}
    return sorted(
        k for k in kept
        if not ((after.get(k) or before.get(k)).startswith("0o40") and any(c.startswith(k + "/") for c in changed))
    )


def no_temp_files(snapshot):
    """No temporary file of nvgpu (.nvgpu-*), dracut (dracut.*) or rpm (name;hex) anywhere."""
    return [k for k in snapshot if "/.nvgpu-" in k or "/var/tmp/dracut." in k or ";" in k.rsplit("/", 1)[-1]]


def converges(node, pillar):
    """The run after the fault is removed: no failure, the vector add passes."""
    states = converge(node, pillar)
    if "gpu-validate-root" in states:
        assert "PASSED" in states["gpu-validate-root"]["comment"]
    return states


@pytest.fixture(scope="module")
def converged(node_assets):
    """One node converged with the site's pillar (cdi mode), copied for each case."""
    node = Node.create(node_assets, name=f"faults-{uuid.uuid4().hex[:8]}")
    converges(node, site_pillar(node_assets))
    yield node
    node.destroy()


@pytest.fixture
def fnode(converged):
    """A copy of the converged node (cp -a, as Node.create copies the golden node)."""
    root = HOME / "nodes" / f"fault-{uuid.uuid4().hex[:12]}"
    subprocess.run(["cp", "-a", str(converged.root), str(root)], check=True)
    node = Node(root, converged.assets)
    yield node
    node.destroy()


# ---------------------------------------------------------------------------- files nvgpu writes


@pytest.mark.parametrize(
    "kind, mode, directory, target, key, said",
    [
        ("read-only", "cdi", CDI_DIR, CDI_SPEC, "gpu:toolkit:cdi_path", "Read-only file system"),
        ("full", "cdi", CDI_DIR, CDI_SPEC, "gpu:toolkit:cdi_path", "no space left on device"),
        ("read-only", "hook", HOOK_DIR, HOOK, "gpu:toolkit:hook_path", "Read-only file system"),
        ("full", "hook", HOOK_DIR, HOOK, "gpu:toolkit:hook_path", "No space left on device"),
    ],
)
def test_toolkit_file_in_a_read_only_or_full_directory(fnode, node_assets, kind, mode, directory, target, key, said):
    pillar = site_pillar(node_assets, toolkit={"mode": mode})
    fnode.run(["rm", "-f", CDI_SPEC], check=True)
    fnode.run(["mkdir", "-p", directory], check=True)
    before = fnode.snapshot()

    res, listing = apply_with_fault(fnode, pillar, kind, directory)
    comment = fails_cleanly(res, "gpu-container-toolkit", target, said, key)
    assert "\n" not in comment or mode == "cdi" and kind == "full"  # nvidia-ctk's failure adds a Fix: line
    assert _states(res)["gpu-container-toolkit"]["changes"] == {}
    # Nothing half-written in the directory (no spec or hook, no .nvgpu-* temporary),
    # nothing changed elsewhere.
    assert listing == [], listing
    after = fnode.snapshot()
    assert config_changes(before, after) == []
    assert no_temp_files(after) == []

    states = converges(fnode, pillar)
    assert ("cdi_spec" if mode == "cdi" else "oci_hook") in states["gpu-container-toolkit"]["changes"]
    assert fnode.exists(target)
    assert fnode.run(["ls", "-A", directory]).stdout.split() == [target.rsplit("/", 1)[1]]


def test_relative_paths_are_refused_and_leave_nothing(fnode, node_assets):
    before = fnode.snapshot()
    # From root's home, where a relative path used to land.
    in_home = ["sh", "-c", 'cd /root && exec "$@"', "sh", SALT_CALL, "--local", "--out=json", "--log-level=quiet"]
    for args in (["nvgpu.container_toolkit", "name=toolkit", "mode=cdi", "cdi_path=nvidia.yaml"],
                 ["nvgpu.container_toolkit", "name=toolkit", "mode=hook", "hook_path=hooks.d/nvidia.json"]):
        res = SaltResult.of(fnode.run([*in_home, "state.single", *args]))
        (state,) = res.data.values()
        assert state["result"] is False and res.retcode != 0
        key = "gpu:toolkit:cdi_path" if "cdi_path=nvidia.yaml" in args else "gpu:toolkit:hook_path"
        assert "must be an absolute path" in state["comment"] and key in state["comment"], state["comment"]
        assert "\n" not in state["comment"] and "Traceback" not in res.stdout + res.stderr
        print(f"\n[state.single {args[-1]}] {state['comment']}")
    for fun, arg in (("nvgpu_toolkit.cdi_generate", "path=nvidia.yaml"),
                     ("nvgpu_toolkit.write_oci_hook", "path=nvidia.json"),
                     ("nvgpu_toolkit.remove_oci_hook", "path=nvidia.json")):
        proc = fnode.run([*in_home, fun, arg])
        assert proc.returncode != 0
        assert "must be an absolute path" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
    after = fnode.snapshot()
    assert config_changes(before, after) == []
    assert no_temp_files(after) == []
    assert fnode.run(["sh", "-c", "ls -A /root / | grep -e nvgpu -e nvidia"]).stdout == ""
    converges(fnode, site_pillar(node_assets))


# ---------------------------------------------------------------------------- the initramfs


def test_dracut_failing_is_retried_until_the_initramfs_carries_the_blacklist(fnode, node_assets):
    pillar = site_pillar(node_assets)
    # A node whose initramfs was built without the blacklist (as the kernel's install built
    # it), and no blacklist file yet: the run writes the file, then dracut fails.
    fnode.run(["sh", "-c", f"rm {BLACKLIST} && dracut -f --kver {KERNEL_RELEASE}"], check=True)
    assert fnode.run(["lsinitrd", INITRAMFS, "-f", BLACKLIST]).stdout == ""
    before = fnode.snapshot()

    res, listing = apply_with_fault(fnode, pillar, "read-only", "/boot")
    fails_cleanly(res, "gpu-initramfs-carries-blacklist", f"rebuilding the initramfs {INITRAMFS} failed", "dracut",
                  "No permission to write to /boot")
    states = _states(res)
    assert states["gpu-initramfs-carries-blacklist"]["changes"] == {}
    assert states["gpu-nouveau-blacklisted"]["changes"]  # the file itself was written
    assert listing == [INITRAMFS.rsplit("/", 1)[1]]
    after = fnode.snapshot()
    assert config_changes(before, after) == ["etc.upper/modprobe.d/blacklist-nouveau.conf"]
    assert no_temp_files(after) == []

    # test=True sees the stale image and would rebuild it; it changes nothing.
    pending = _states(apply(fnode, pillar, test=True))["gpu-initramfs-carries-blacklist"]
    assert pending["result"] is None
    assert pending["changes"]["stale"] == {BLACKLIST: f"not in {INITRAMFS}"}
    assert config_changes(after, fnode.snapshot()) == []

    # The blacklist file did not change again: the old onchanges would never rebuild now.
    states = converges(fnode, pillar)
    assert states["gpu-nouveau-blacklisted"]["changes"] == {}
    assert states["gpu-initramfs-carries-blacklist"]["changes"]["rebuilt"] == INITRAMFS
    assert fnode.run(["lsinitrd", INITRAMFS, "-f", BLACKLIST]).stdout == fnode.read_file(BLACKLIST)
    again = _states(apply(fnode, pillar))
    carried = again["gpu-initramfs-carries-blacklist"]
    assert carried["changes"] == {} and carried["result"] is True


# ---------------------------------------------------------------------------- dnf and repositories


def test_dnf_failing_mid_transaction_is_repaired_by_the_next_run(fnode, node_assets):
    pillar = site_pillar(node_assets, driver={"stream": "550-dkms"})
    # A directory where the 550 driver package puts a file (left by a hand-made firmware
    # copy): rpm fails to unpack that one package half-way through the switch.
    blocker = "/usr/lib/firmware/nvidia/550.127.08/gsp_ga10x.bin"
    fnode.run(["mkdir", "-p", f"{blocker}/old"], check=True)

    res = apply(fnode, pillar)
    fails_cleanly(res, "gpu-driver-stream", "switching module nvidia-driver to nvidia-driver:550-dkms/default",
                  f"unpacking of archive failed on file {blocker}")
    assert no_temp_files(fnode.snapshot()) == []
    # rpm has no rollback: the other packages were switched, nvidia-driver was not.
    assert "580.105.08" in fnode.run(["rpm", "-q", "nvidia-driver"]).stdout
    assert fnode.run(["dnf", "-q", "check"]).returncode != 0

    fnode.run(["rm", "-rf", blocker], check=True)
    states = converges(fnode, pillar)
    assert states["gpu-driver-stream"]["changes"]["repaired"]
    assert "repaired" in states["gpu-driver-stream"]["comment"]
    assert "550.127.08" in fnode.run(["rpm", "-q", "nvidia-driver"]).stdout
    assert fnode.run(["dnf", "-q", "check"]).returncode == 0
    assert states["gpu-driver-modules-loaded"]["changes"]["driver_version"] == {
        "old": "580.105.08", "new": "550.127.08"}


def test_wrong_gpg_key_on_the_cuda_repo_installs_nothing_unverified(node, node_assets):
    pillar = site_pillar(node_assets)
    wrong = json.loads(json.dumps(pillar))
    # The OS vendor's key where NVIDIA's belongs.
    wrong["gpu"]["repos"]["cuda"]["gpgkey"] = f"file://{node_assets.os_gpgkey}"

    res = apply(node, wrong)
    fails_cleanly(res, "gpu-driver-stream", "installing module stream nvidia-driver:latest-dkms/default",
                  "GPG keys", "not correct for this package")
    assert node.run(["rpm", "-q", "nvidia-driver"]).returncode != 0
    assert node.run(["sh", "-c", "ls /usr/lib64/libcuda.so* /lib/modules/*/extra 2>/dev/null"]).stdout == ""
    assert no_temp_files(node.snapshot()) == []

    converges(node, pillar)


def test_semodule_failing_leaves_the_policy_store_as_it_was(fnode, node_assets):
    fnode.set_selinux("Permissive")
    # A policy package built for another policy: it needs a type this one lacks.
    fnode.write_file("/root/pp/nvidia-container.te", (
        "module nvidia-container 0.1;\n"
        "require {\n\ttype xserver_misc_device_t;\n\ttype container_runtime_rhel9_t;\n"
        "\tclass chr_file { getattr ioctl open read write };\n\tclass process transition;\n}\n"
        "type nvidia_container_t;\n"
        "allow nvidia_container_t xserver_misc_device_t:chr_file { getattr ioctl open read write };\n"
        "allow container_runtime_rhel9_t nvidia_container_t:process transition;\n"))
    fnode.run(["sh", "-c", "cd /root/pp && checkmodule -M -m -o nvidia-container.mod nvidia-container.te && "
                           "semodule_package -o nvidia-container.pp -m nvidia-container.mod"], check=True)
    package = "/root/pp/nvidia-container.pp"
    digest = hashlib.sha256((fnode.root / "root.upper/pp/nvidia-container.pp").read_bytes()).hexdigest()
    bad = site_pillar(node_assets, selinux={"method": "module", "policy_source": package,
                                            "policy_hash": f"sha256={digest}"})
    before = fnode.snapshot()

    res = apply(fnode, bad)
    fails_cleanly(res, "gpu-selinux-ready", f"installing SELinux policy module {package} failed",
                  f"semodule -i {package}", "Failed to resolve")
    assert "nvidia-container" not in fnode.run(["semodule", "-l"]).stdout.split()
    # semodule's own transaction sandbox (removed by semodule's next transaction) is all
    # that differs: the active policy store is untouched.
    sandbox = ("var.upper/lib/selinux/default/tmp", "var.upper/lib/selinux/final")
    after = fnode.snapshot()
    assert config_changes(before, after, *sandbox) == []
    assert no_temp_files(after) == []

    converges(fnode, site_pillar(node_assets))
    assert "nvidia-container" in fnode.run(["semodule", "-l"]).stdout.split()
    # semodule's next transaction removed the sandbox (its empty parent "final" stays, as
    # after every transaction).
    assert [k for k in fnode.snapshot() if k.startswith(sandbox) and k != sandbox[1]] == []


def test_podman_missing_fails_naming_it_and_installs_once_available(fnode, node_assets):
    pillar = site_pillar(node_assets)
    # Podman removed and its module stream disabled: dnf filters podman out.
    fnode.run(["rpm", "-e", "podman"], check=True)
    fnode.dnf("module", "disable", "container-tools")
    before = fnode.snapshot()

    res = apply(fnode, pillar)
    # Salt's own pkg.installed: its first line is Salt's, dnf's cause follows.
    comment = fails_cleanly(res, "gpu-container-runtime", "Error occurred installing package(s)",
                            salts_own_state=True)
    assert "Unable to find a match: podman" in comment
    assert config_changes(before, fnode.snapshot()) == []
    # The README's ad-hoc check says the same in one line.
    check = fnode.salt_call("nvgpu.run_vector_add", f"image={node_assets.image}")
    assert check.retcode != 0
    assert "podman" in check.stdout + check.stderr and "Traceback" not in check.stdout + check.stderr

    fnode.dnf("module", "reset", "container-tools")
    states = converges(fnode, pillar)
    assert states["gpu-container-runtime"]["changes"]
