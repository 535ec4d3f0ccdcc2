"""The simulated RHEL 8 or 9 GPU node (see README.md beside this file)."""

import collections
import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from .assets import DEFAULT_RELEASE, HOME, KERNEL_RELEASE, RELEASES, STANDIN, Assets, build_assets, site_pillar  # noqa: F401

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ENTER = HERE / "enter"
LAYERS = ("etc", "usr", "var", "home", "root", "boot")
SALT_CALL = Path(sys.executable).parent / "salt-call"
# The UEFI variables of Secure Boot and of the enrolled Machine Owner Keys (in the node's
# `efivars`, seen at /sys/firmware/efi/efivars).
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
MOK_LIST_VAR = "MokListRT-605dab50-e046-4300-abb6-3dd810dd8b23"
NVSWITCH_PCI_DEVICE = "0x22a3"  # H100/H200-generation NVSwitch (FACTS.md, "Real fleets")
# The character devices a minimal /dev needs (runc and Podman use them).
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
           "tty": (5, 0), "fuse": (10, 229), "net/tun": (10, 200)}


@dataclass
class SaltResult:
    retcode: int
    data: object
    stdout: str
    stderr: str

    @classmethod
    def of(cls, proc):
        """From a finished `salt-call --out=json` process."""
        try:
            data = json.loads(proc.stdout).get("local") if proc.stdout.strip() else None
        except (ValueError, AttributeError):
            data = None
        return cls(proc.returncode, data, proc.stdout, proc.stderr)


class Node:
    """One simulated node: its directory holds everything it changed."""

    def __init__(self, root, assets, release=DEFAULT_RELEASE):
        self.root = Path(root)
        self.assets = assets
        self.release = RELEASES[release]
        # Host directories seen as they are inside the node, never part of its layers:
        # the checkout and the venv running the tests (see `enter`).
        self.host_paths = [REPO] + ([Path(sys.prefix)] if sys.prefix != sys.base_prefix else [])

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(cls, assets, name=None, release=DEFAULT_RELEASE):
        """A fresh node of RHEL `release` ("8": 8.9, "9": 9.6), copied from the assets'
        golden node of that release (built on first use)."""
        rel = RELEASES[release]
        golden = Path(assets.root) / ("golden-node" if release == DEFAULT_RELEASE else f"golden-node-{rel.dist}")
        if not (golden / ".complete").exists():
            _build_golden(assets, golden, rel)
        root = HOME / "nodes" / (name or uuid.uuid4().hex[:12])
        if root.exists():
            shutil.rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(golden), str(root)], check=True)
        (root / ".complete").unlink()
        _new_boot_id(root)
        # Per node, not in the golden node: the checkout under test may differ between runs.
        (root / "etc.upper/salt/minion").write_text(yaml.safe_dump({
            "file_client": "local",
            "file_roots": {"base": [str(REPO / "salt"), str(REPO)]},
            "pillar_roots": {"base": ["/etc/salt/pillar"]},
            "module_dirs": [str(REPO / "_modules")],
            "states_dirs": [str(REPO / "_states")],
            "grains_dirs": [str(REPO / "_grains")],
            "utils_dirs": [str(REPO / "_utils")],
            "outputter_dirs": [str(REPO / "_output")],
            "grains": {"kernelrelease": rel.kernel_release},
        }))
        return cls(root, assets, release)

    def destroy(self):
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ running

    def run(self, argv, *, user=None, input=None, env=None, timeout=900, check=False):
        """Run argv inside the node (as root, or as `user` with a login environment)."""
        argv = [str(a) for a in argv]
        if user is not None:
            argv = ["su", "-l", user, "-s", "/bin/sh", "-c", shlex.join(argv)]
        full_env = dict(os.environ, **(env or {}))
        full_env.pop("XDG_RUNTIME_DIR", None)
        proc = subprocess.run(self.command_prefix() + argv, input=input, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode:
            raise AssertionError(f"{argv} failed in node ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def command_prefix(self):
        """The argv prefix that runs a command inside this node (a private "boot")."""
        keep = ":".join(str(p) for p in self.host_paths)
        return ["env", f"NVGPU_NODE_KEEP={keep}", "unshare", "--mount", "--propagation", "private",
                "--pid", "--fork", "--kill-child", "--mount-proc", "--", "/bin/bash", str(ENTER), str(self.root)]

    def salt_call(self, *args, test=None, pillar=None, timeout=900):
        """`salt-call --local --out=json ARGS` inside the node; data is the "local" value."""
        argv = [SALT_CALL, "--local", "--out=json", "--log-level=quiet", *args]
        if pillar is not None:
            argv.append("pillar=" + json.dumps(pillar))
        if test is not None:
            argv.append(f"test={test}")
        return SaltResult.of(self.run(argv, timeout=timeout))

    def salt_call_traced(self, *args, pillar=None, timeout=900):
        """`salt_call` under `strace -f -e trace=execve`: (SaltResult, Counter of the
        programs every process it started ran, by name). A container counts once in
        `conmon` (Podman starts one per container)."""
        argv = [SALT_CALL, "--local", "--out=json", "--log-level=quiet", *args]
        if pillar is not None:
            argv.append("pillar=" + json.dumps(pillar))
        trace = f"/tmp/nvgpu-exec-{uuid.uuid4().hex[:8]}.trace"
        proc = self.run(["bash", "-c", _TRACED, "traced", trace, *map(str, argv)], timeout=timeout)
        text = self.read_file(trace) or ""
        self.run(["rm", "-f", trace])
        return SaltResult.of(proc), exec_counts(text)

    def write_pillar(self, pillar):
        """Make `pillar` the node's own pillar (top.sls + gpu.sls under /etc/salt/pillar)."""
        self.write_file("/etc/salt/pillar/top.sls", "base:\n  '*':\n    - gpu\n")
        self.write_file("/etc/salt/pillar/gpu.sls", yaml.safe_dump(pillar, default_flow_style=False))

    def write_file(self, path, text, mode=0o644):
        self.run(["install", "-D", "-m", oct(mode)[2:], "/dev/stdin", path], input=text, check=True)

    def read_file(self, path):
        proc = self.run(["cat", path])
        return proc.stdout if proc.returncode == 0 else None

    def exists(self, path):
        return self.run(["test", "-e", path]).returncode == 0

    # ------------------------------------------------------------------ shortcuts for tests

    def dnf(self, *args, check=True):
        return self.run(["dnf", "-y", "-q", *args], check=check)

    def provision(self, stream="latest-dkms", toolkit=True, loaded=True, podman=True):
        """The guide by hand, with plain dnf: a node ready for the execution module."""
        kernel = self.release.kernel_release
        self.dnf("install", f"kernel-devel-{kernel}", f"kernel-headers-{kernel}")
        self.add_repos()
        self.dnf("module", "install", f"nvidia-driver:{stream}/default")
        self.run(["modprobe", "-r", "nouveau"], check=True)
        if podman:
            self.dnf("install", "podman")
        if toolkit:
            self.dnf("install", "nvidia-container-toolkit")
        if loaded:
            self.run(["nvidia-modprobe"], check=True)
            self.run(["nvidia-modprobe", "-u"], check=True)

    def add_repos(self):
        """The CUDA and toolkit repos, as an administrator would add them."""
        for name in ("cuda", "toolkit"):
            self.write_file(f"/etc/yum.repos.d/nvgpu-{name}.repo", _repo_file(self.assets, name, self.release))

    def add_user(self, name, uid=2001):
        """A real local user for rootless Podman, with subordinate id ranges."""
        self.run(["useradd", "-m", "-u", str(uid), name], check=True)
        start = 100000 + (uid - 2000) * 65536
        self.run(["usermod", "--add-subuids", f"{start}-{start + 65535}",
                  "--add-subgids", f"{start}-{start + 65535}", name], check=True)

    def set_selinux(self, mode):
        """SELinux on (`Enforcing` or `Permissive`), as the node's tools report it.

        This machine's kernel has SELinux off, so the real getenforce, getsebool and
        setsebool say "disabled". Stand-ins for the three go first on PATH
        (/usr/local/sbin): getenforce says `mode`; getsebool and setsebool act on the
        booleans the installed policy packages define (see nvstandin). semodule and
        restorecon stay the real tools on the real policy store."""
        self.write_file("/usr/local/sbin/getenforce", f"#!/bin/sh\necho {mode}\n", mode=0o755)
        for tool in ("getsebool", "setsebool"):
            self.run(["install", "-D", "-m", "755", STANDIN, f"/usr/local/sbin/{tool}"], check=True)

    def set_secure_boot(self, enabled):
        """Secure Boot on or off in the node's firmware (the kernel reads it at the next boot)."""
        (self.root / "efivars" / SECURE_BOOT_VAR).write_bytes(b"\x06\x00\x00\x00" + bytes([int(enabled)]))

    def enroll_mok(self, certificate):
        """What the MOK manager does at boot once the administrator confirms `mokutil --import`."""
        path = self.root / "efivars" / MOK_LIST_VAR
        path.write_text((path.read_text() if path.exists() else "") + certificate)

    def set_gpus(self, gpus):
        """
        Make the node's machine have these GPUs (see `gpus_of`): what the stand-in NVIDIA tools
        read (hardware/gpus.json, bound in by `enter`), each GPU's PCI device (replacing this
        machine's /sys/bus/pci/devices in the node), its state for the stand-in vectorAdd
        (hardware/gpuN), and the kernel log (/dev/kmsg) with the Xid errors of its faults.
        Returns the GPUs the driver sees, with their indexes.
        """
        hardware = self.root / "hardware"
        if hardware.exists():
            shutil.rmtree(hardware)
        (hardware / "pci-devices").mkdir(parents=True)
        kmsg = ["6,354,659407,-;nvidia-nvlink: Nvlink Core is being initialized, major device number 240",
                "3,355,659423,-;NVRM: loading NVIDIA UNIX x86_64 Kernel Module  580.105.08"]
        seen = []
        for gpu in gpus:
            address = gpu["bus"][4:].lower()
            device = hardware / "pci-devices" / address
            device.mkdir()
            for name, value in (("vendor", "0x10de"), ("device", "0x20b2"), ("class", "0x030200")):
                (device / name).write_text(value + "\n")
            short = address.rsplit(".", 1)[0]
            fault = gpu.get("fault")
            # The driver's words, as NVIDIA's Xid catalog and real kernel logs print them.
            if fault == "off_bus":
                kmsg.append(f"4,1200,88000000,-;NVRM: Xid (PCI:{short}): 79, pid=1822, name=python3, "
                            "GPU has fallen off the bus.")
                continue
            entry = {key: gpu[key] for key in ("name", "uuid", "bus", "memory_mib")}
            entry["index"] = len(seen)
            state = "ok"
            if fault == "ecc":
                entry.update(ecc_uncorrected=1, remap_pending=True)
                state = "uncorrectable ECC error encountered"
                kmsg.append(f"4,1201,88123456,-;NVRM: Xid (PCI:{short}): 48, pid=4123, name=vectorAdd, An "
                            "uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer "
                            "at partition 6, subpartition 0.")
                kmsg.append(f"4,1202,88123460,-;NVRM: Xid (PCI:{short}): 63, pid='<unknown>', name=<unknown>, "
                            "Row Remapper: New row marked for remapping, reset gpu to activate.")
            (hardware / f"gpu{entry['index']}").write_text(state + "\n")
            seen.append(entry)
        (hardware / "gpus.json").write_text(json.dumps(seen))
        (self.root / "dev" / "kmsg").write_text("".join(line + "\n" for line in kmsg))
        return seen

    def reboot(self):
        """What a reboot forgets: loaded modules and the device nodes they created, which units
        were active or failed; the kernel's boot id (/proc/sys/kernel/random/boot_id) is a new
        one; then, as systemd at boot, every enabled unit is started (the stand-in systemctl,
        see nvstandin) and stays active or fails as its daemon decides."""
        for entry in (self.root / "sys-module").iterdir():
            shutil.rmtree(entry)
        for entry in (self.root / "dev").glob("nvidia*"):
            entry.unlink()
        _new_boot_id(self.root)
        for entry in (self.root / "run-cdi").glob("*"):  # a boot clears /var/run
            entry.unlink()
        if self.exists("/usr/bin/systemctl"):
            self.run(["systemctl", "--standin-boot"], check=True)

    def add_nvswitches(self, count=4, device=NVSWITCH_PCI_DEVICE):
        """Make this an HGX node: `count` NVSwitch chips on its PCI bus (an HGX H100/H200
        board has 4), which need the fabric manager before CUDA works. After set_gpus
        (which replaces the PCI bus); without it, the node gets the default GPU first."""
        if not (self.root / "hardware" / "pci-devices").is_dir():
            self.set_gpus(gpus_of(1))
        for i in range(count):
            path = self.root / "hardware" / "pci-devices" / f"0000:{0xc5 + i:02x}:00.0"
            path.mkdir()
            for name, value in (("vendor", "0x10de"), ("device", device), ("class", "0x068000")):
                (path / name).write_text(value + "\n")

    def hold_gpu(self, name="cuda-job"):
        """A process (`name`) keeps /dev/nvidia* open, as a running CUDA job does: the loaded
        nvidia module cannot be unloaded until release_gpu or a reboot."""
        users = self.root / "sys-module" / "nvidia" / "standin_users"
        if not users.parent.is_dir():
            raise AssertionError("hold_gpu: the nvidia module is not loaded")
        users.mkdir(exist_ok=True)
        (users / name).write_text(name + "\n")
        self._uvm_refcnt(+1)

    def release_gpu(self, name="cuda-job"):
        held = self.root / "sys-module" / "nvidia" / "standin_users" / name
        if held.exists():
            held.unlink()
            self._uvm_refcnt(-1)

    def _uvm_refcnt(self, delta):
        """nvidia_uvm's reference count: the open /dev/nvidia-uvm of the CUDA jobs."""
        path = self.root / "sys-module" / "nvidia_uvm" / "refcnt"
        if path.parent.is_dir():
            count = int(path.read_text().strip() or 0) if path.exists() else 0
            path.write_text(f"{max(count + delta, 0)}\n")

    # ------------------------------------------------------------------ inspection

    def snapshot(self):
        """Every file the node changed since it was created: {path: description}."""
        result = {}
        for base in [self.root / f"{d}.upper" for d in LAYERS] + [self.root / "sys-module", self.root / "dev",
                                                                    self.root / "run-cdi"]:
            for path in sorted(base.rglob("*")):
                info = path.lstat()
                key = f"{base.name}/{path.relative_to(base)}"
                if stat.S_ISREG(info.st_mode):
                    result[key] = f"{oct(info.st_mode)} {hashlib.sha256(path.read_bytes()).hexdigest()}"
                elif stat.S_ISLNK(info.st_mode):
                    result[key] = f"link {os.readlink(path)}"
                else:
                    result[key] = f"{oct(info.st_mode)} {info.st_rdev}"
        return result


def gpus_of(count, model="NVIDIA A100-SXM4-80GB", **faults):
    """
    `count` GPUs of an HGX-like machine for Node.set_gpus: [{"name", "uuid", "bus", "memory_mib",
    "fault"}], bus order; `faults` maps a GPU's position to "ecc" (uncorrectable ECC errors:
    Xid 48 and 63, rows pending remapping, CUDA's "uncorrectable ECC error encountered") or
    "off_bus" (Xid 79: on the PCI bus, gone from the driver). E.g. gpus_of(8, **{"3": "ecc"}).
    """
    return [{"name": model, "uuid": f"GPU-{i:08x}-7a1e-4c3d-9b8a-{0x1c2d3e4f5a60 + i:012x}",
             "bus": f"00000000:{0x18 + 0x10 * i:02X}:00.0", "memory_mib": 81920, "fault": faults.get(str(i))}
            for i in range(count)]


# Runs ARGV under strace -f; when ARGV's process has exited, ends what it left running
# that strace still traces (rootless Podman's pause process lives until the node's
# "boot" ends, and strace -f would wait for it), by pid, so that strace finishes its file.
_TRACED = r"""
trace=$1; shift
pidfile=$(mktemp)
strace -f -qq -e trace=execve -e signal=none -o "$trace" -- sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" &
tracer=$!
until [ -s "$pidfile" ]; do sleep 0.01; done
child=$(cat "$pidfile"); rm -f "$pidfile"
while [ -e "/proc/$child" ] && ! grep -q '^State:.*zombie' "/proc/$child/status" 2>/dev/null; do sleep 0.02; done
for status in /proc/[0-9]*/status; do
    pid=${status#/proc/}; pid=${pid%/status}
    if grep -q "^TracerPid:[[:space:]]*$tracer$" "$status" 2>/dev/null; then kill -9 "$pid" 2>/dev/null; fi
done
wait "$tracer"
"""
_EXECVE_RE = re.compile(r'^(\d+)\s+execve\("([^"]*)", \["([^"]*)"(?:, "([^"]*)")?')


def exec_counts(trace):
    """The processes `strace -f -e trace=execve` saw started, by the program each ended
    up running: Counter {name: processes}. A process that execs again (a wrapper script,
    setpriv, rootless Podman re-executing /proc/self/exe) is one process, named by its
    last program. Successful execs only (a PATH search's failed tries are not runs). The
    key "(containers)" counts the containers started: conmon runs, but `conmon
    --version`, which every podman command runs."""
    last = {}
    for line in trace.splitlines()[1:]:  # the first: the `sh` that writes the pid file
        match = _EXECVE_RE.match(line)
        if not match or not line.rstrip().endswith("= 0"):
            continue
        pid, path, argv0, argv1 = match.groups()
        last[pid] = (os.path.basename(argv0 if path.startswith("/proc/") else path), argv1)
    counts = collections.Counter(name for name, _ in last.values())
    counts["(containers)"] = sum(1 for name, arg in last.values() if name == "conmon" and arg != "--version")
    return counts


def _new_boot_id(root):
    """A boot id as the kernel writes one (a random UUID), bound over the node's
    /proc/sys/kernel/random/boot_id by `enter`."""
    (Path(root) / "boot_id").write_text(f"{uuid.uuid4()}\n")


def _repo_file(assets, name, release):
    return textwrap.dedent(f"""\
        [nvgpu-{name}]
        name=nvgpu stand-in {name} repository
        baseurl={assets.repo_url(name, release.major)}
        enabled=1
        gpgcheck=1
        gpgkey=file://{assets.os_gpgkey if name == "baseos" else assets.gpgkey}
        """)


def _build_golden(assets, golden, rel):
    """A fresh RHEL install of `rel` with an NVIDIA GPU: nouveau bound, nothing else done."""
    if golden.exists():
        shutil.rmtree(golden)
    for layer in LAYERS:
        (golden / f"{layer}.upper").mkdir(parents=True)
        (golden / f"{layer}.work").mkdir()
    (golden / "tmp").mkdir(mode=0o1777)
    (golden / "tmp").chmod(0o1777)
    (golden / "sys-module" / "nouveau").mkdir(parents=True)
    (golden / "osrelease").write_text(rel.kernel_release + "\n")
    # A UEFI machine with Secure Boot off (the variable as the kernel shows it: 4 bytes of
    # attributes, then the value), no Machine Owner Key enrolled.
    (golden / "efivars").mkdir()
    (golden / "efivars" / SECURE_BOOT_VAR).write_bytes(b"\x06\x00\x00\x00\x00")
    dev = golden / "dev"
    for sub in ("pts", "shm", "mqueue", "net"):
        (dev / sub).mkdir(parents=True, exist_ok=True)
    for name, (major, minor) in DEVICES.items():
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)
    for name, target in {"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                         "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}.items():
        (dev / name).symlink_to(target)

    etc = golden / "etc.upper"
    files = {
        "dnf/dnf.conf": "[main]\ngpgcheck=1\ninstallonly_limit=3\nclean_requirements_on_remove=True\n"
                        f"best=True\nskip_if_unavailable=False\nmodule_platform_id={rel.platform}\n",
        # Debian's rpm keeps its database in ~/.rpmdb; RHEL's is /var/lib/rpm.
        "rpm/macros.dbpath": "%_dbpath /var/lib/rpm\n",
        "yum.repos.d/nvgpu-baseos.repo": _repo_file(assets, "baseos", rel),
        # This machine's kernel: runc (crun refuses its cgroups), rlimits it accepts. A
        # container on a real host sees the host kernel's /sys/module; here that is the node's.
        "containers/containers.conf": textwrap.dedent("""\
            [containers]
            default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
            volumes = ["/sys/module:/sys/module:ro"]
            [engine]
            runtime = "runc"
            cgroup_manager = "cgroupfs"
            events_logger = "file"
            """),
        "containers/storage.conf": '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\n'
                                   'graphroot = "/var/lib/containers/storage"\n',
        # The site's image mirror, as air-gapped GPU sites have.
        "containers/registries.conf.d/50-nvgpu-mirror.conf": '[[registry]]\nlocation = "localhost:5000"\n'
                                                             "insecure = true\n",
        "salt/pillar/top.sls": "base: {}\n",
    }
    for path, text in files.items():
        (etc / path).parent.mkdir(parents=True, exist_ok=True)
        (etc / path).write_text(text)
    # systemd's unit directories start empty: this machine's units are not the node's (the
    # stand-in systemctl would start them), only what the node's packages install.
    for unit_dir in ("usr.upper/lib/systemd/system", "etc.upper/systemd/system"):
        (golden / unit_dir).mkdir(parents=True)
        os.setxattr(golden / unit_dir, "trusted.overlay.opaque", b"y")
    # Hidden from the node until their packages are installed: Podman, and Debian's identity.
    for whiteout in ("usr.upper/bin/podman", "etc.upper/debian_version"):
        (golden / whiteout).parent.mkdir(parents=True, exist_ok=True)
        os.mknod(golden / whiteout, stat.S_IFCHR, os.makedev(0, 0))
    node = Node(golden, assets, rel.major)
    node.run(["dnf", "-y", "-q", f"--releasever={rel.major}", "install", "redhat-release", "bash", "kmod", "dracut",
              "mokutil", "systemd"],
             check=True)
    # The installed kernel's initramfs, as its package's scriptlet builds it: no blacklist yet.
    node.run(["dracut", "-f", "--kver", rel.kernel_release], check=True)
    shutil.rmtree(golden / "tmp")
    (golden / "tmp").mkdir(mode=0o1777)
    (golden / "tmp").chmod(0o1777)
    (golden / ".complete").write_text("ok\n")
