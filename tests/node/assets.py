"""What every simulated node is made from, built once and cached under NVGPU_NODE_HOME.

- a GPG key, and stand-in RPMs built with rpmbuild and signed with it, so that
  dnf really checks signatures (gpgcheck=1);
- three local repos like a RHEL GPU node sees: `baseos` (OS packages and, on RHEL 8,
  the container-tools module), `cuda` (the nvidia-driver module streams and cuda) and
  `toolkit` (nvidia-container-toolkit), each with createrepo_c metadata and,
  where there are streams, a modules.yaml; `baseos` and `cuda` once per RHEL release
  (RELEASES), `toolkit` once (NVIDIA's toolkit repo serves every release);
- the stand-in cuda-vector-add image, pushed to a real image registry on
  127.0.0.1:5000 (docker-registry).
"""

import hashlib
import os
import shutil
import socket
import subprocess
import tarfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOME = Path(os.environ.get("NVGPU_NODE_HOME", "/srv/nvgpu"))


@dataclass(frozen=True)
class Release:
    """What a simulated node of one RHEL release is made of."""

    major: str
    version: str                   # VERSION_ID in /etc/os-release
    codename: str
    kernel: str                    # the kernel package's version-release (uname -r without the arch)
    podman: tuple                  # (version, release)
    container_selinux: tuple       # (version, release)
    # The SELinux booleans its container-selinux defines: (name, default, description),
    # as `semanage boolean -l` shows them (container-selinux's container.te).
    booleans: tuple
    container_tools: str = None    # the container-tools module stream (RHEL 8 only)
    # A newer kernel in the OS repo, not installed on a fresh node: `dnf install kernel-core`
    # installs it for the next boot, the way `dnf update` brings one.
    next_kernel: str = None
    # NVIDIA's CUDA repo has nvidia-driver module streams (RHEL 8, 9), or (RHEL 10, which
    # has no modular content) one nvidia-open package per driver version, pinned to a
    # branch with dnf versionlock.
    streams: bool = True

    @property
    def dist(self):
        return f"el{self.major}"

    @property
    def platform(self):
        return f"platform:el{self.major}"

    @property
    def kernel_release(self):
        return f"{self.kernel}.x86_64"


_CONTAINER_BOOLEANS = (
    ("container_manage_cgroup", "off", "Allow containers to manage cgroups"),
    ("container_use_devices", "off", "Allow containers to use any device volume mounted into container"),
)
RELEASES = {
    # RHEL 8.9: container-selinux 2.221 (8.10's 2.229 too) has no container_use_xserver_devices.
    "8": Release("8", "8.9", "Ootpa", "4.18.0-513.24.1.el8_9", ("4.3.1", "1.module+el8.9.0"),
                 ("2.221.0", "1.module+el8.9.0"), _CONTAINER_BOOLEANS, container_tools="rhel8",
                 next_kernel="4.18.0-553.el8_10"),
    # RHEL 9.6: container-selinux 2.237.0, which has the boolean since 2.232.0
    # (containers/container-selinux#306); Podman as a plain package, no container-tools module.
    "9": Release("9", "9.6", "Plow", "5.14.0-570.12.1.el9_6", ("5.4.0", "1.el9"), ("2.237.0", "1.el9_6"),
                 _CONTAINER_BOOLEANS + (("container_use_xserver_devices", "off",
                                         "Allow containers to use any xserver device"),),
                 next_kernel="5.14.0-611.5.1.el9_7"),
    # RHEL 10.0: no module streams at all ("Considerations in adopting RHEL 10").
    "10": Release("10", "10.0", "Coughlan", "6.12.0-55.9.1.el10_0", ("5.4.0", "9.el10"), ("2.235.0", "2.el10"),
                  _CONTAINER_BOOLEANS + (("container_use_xserver_devices", "off",
                                          "Allow containers to use any xserver device"),),
                  next_kernel="6.12.0-124.8.1.el10_1", streams=False),
}
DEFAULT_RELEASE = "8"
KERNEL = RELEASES[DEFAULT_RELEASE].kernel
KERNEL_RELEASE = RELEASES[DEFAULT_RELEASE].kernel_release
NEXT_KERNEL_RELEASE = f"{RELEASES[DEFAULT_RELEASE].next_kernel}.x86_64"
# Driver version of each nvidia-driver stream, and the kmod package that builds it.
STREAMS = {
    "latest-dkms": ("580.105.08", "kmod-nvidia-latest-dkms"),
    "open-dkms": ("580.105.08", "kmod-nvidia-open-dkms"),
    "550-dkms": ("550.127.08", "kmod-nvidia-latest-dkms"),
    "535-dkms": ("535.216.01", "kmod-nvidia-latest-dkms"),
}
DEFAULT_STREAM = "latest-dkms"
# RHEL 10: driver version per branch in NVIDIA's rhel10 repo (nvidia-open and its packages).
BRANCHES = {"575": "575.57.08", "580": "580.105.08"}
# The real versionlock plugin (vendor/README.md), where the node's dnf (this machine's)
# loads plugins; RHEL 10's python3-dnf-plugin-versionlock carries it.
DNF_PYTHON = "/usr/lib/python3/dist-packages"
VERSIONLOCK_LIST = "/etc/dnf/plugins/versionlock.list"
CUDA_VERSION = "12.4.1"
TOOLKIT_VERSION = "1.17.8"
# A site mirror that reached toolkit 1.18 (repo `toolkit-1.18`): its base package ships
# nvidia-cdi-refresh, NVIDIA's units as in deployments/systemd of
# NVIDIA/nvidia-container-toolkit (Apache-2.0), unchanged but for the license header.
REFRESH_TOOLKIT_VERSION = "1.18.0"
CDI_REFRESH_UNITS = {
    "/usr/lib/systemd/system/nvidia-cdi-refresh.path": textwrap.dedent("""\
        [Unit]
        Description=Trigger CDI refresh on NVIDIA driver install / uninstall events

        [Path]
        PathChanged=/lib/modules/%v/modules.dep
        PathChanged=/lib/modules/%v/modules.dep.bin

        [Install]
        WantedBy=multi-user.target
        """),
    "/usr/lib/systemd/system/nvidia-cdi-refresh.service": textwrap.dedent("""\
        [Unit]
        Description=Refresh NVIDIA CDI specification file
        ConditionPathExists=|/usr/bin/nvidia-smi
        ConditionPathExists=|/usr/sbin/nvidia-smi
        ConditionPathExists=/usr/bin/nvidia-ctk
        After=multi-user.target

        [Service]
        Type=oneshot
        # Values from Environment will be replaced if defined in EnvironmentFile
        Environment=NVIDIA_CTK_CDI_OUTPUT_FILE_PATH=/var/run/cdi/nvidia.yaml
        EnvironmentFile=-/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env
        ExecCondition=/usr/bin/grep -qE '/(nvidia|nvidia-current)\\.ko' /lib/modules/%v/modules.dep
        ExecStart=/usr/bin/nvidia-ctk cdi generate
        CapabilityBoundingSet=CAP_SYS_MODULE CAP_SYS_ADMIN CAP_MKNOD
        RemainAfterExit=yes

        [Install]
        WantedBy=multi-user.target
        """),
    "/usr/lib/systemd/system-preset/90-nvidia-container-toolkit.preset":
        "enable nvidia-cdi-refresh.path\nenable nvidia-cdi-refresh.service\n",
}
PODMAN_VERSION = RELEASES[DEFAULT_RELEASE].podman[0]
REGISTRY = "127.0.0.1:5000"
IMAGE = "localhost:5000/nvgpu/cuda-vector-add:v0.1"
# Two signers, as on a real node: the OS vendor's key signs baseos, NVIDIA's key signs the
# cuda and toolkit repos (the formula configures those, so a wrong key there is a real fault).
GPG_NAME = "nvgpu test repositories <repo@nvgpu.invalid>"
OS_GPG_NAME = "nvgpu test OS repositories <os@nvgpu.invalid>"
# One script for every stand-in tool: the name a package installs it under picks the tool.
STANDIN = HERE / "standins" / "nvstandin"


class Assets:
    """Paths of a built asset tree."""

    def __init__(self, root):
        self.root = Path(root)
        self.repos = self.root / "repos"
        self.gpgkey = self.root / "RPM-GPG-KEY-nvgpu-test"
        self.os_gpgkey = self.root / "RPM-GPG-KEY-nvgpu-test-os"
        self.registry = HOME / "registry"
        self.image = IMAGE
        # The same image under a tag of these sources: checkouts testing side by side share
        # the registry, and the last to build pushes its own IMAGE.
        self.image_pinned = f"{IMAGE}-{self.root.name.removeprefix('assets-')}"
        self.policy = self.root / "nvidia-container.pp"

    def repo_url(self, name, release=DEFAULT_RELEASE):
        """The repo of one release; RHEL 8's are at the top (`toolkit` serves every release)."""
        if release == DEFAULT_RELEASE or name.startswith("toolkit"):
            return f"file://{self.repos / name}"
        return f"file://{self.repos / RELEASES[release].dist / name}"


def _source_digest():
    digest = hashlib.sha256()
    for path in sorted(HERE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(HERE).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_assets():
    """Build (or reuse) the assets for the current sources and start the registry."""
    root = HOME / f"assets-{_source_digest()}"
    assets = Assets(root)
    if not (root / ".complete").exists():
        # Trees of older sources that no run has used for a day (each use touches its
        # tree's `.used`): several checkouts (worktrees) may test side by side.
        for stale in HOME.glob("assets-*"):
            used = stale / ".used"
            if time.time() - (used if used.exists() else stale).stat().st_mtime > 86400:
                shutil.rmtree(stale, ignore_errors=True)
        root.mkdir(parents=True)
        gnupg = _make_gpg_key(assets)
        _build_repos(assets, gnupg)
        _build_image(assets)
        _build_policy(assets)
        (root / ".complete").write_text("ok\n")
    (root / ".used").touch()
    ensure_registry(assets)
    _push_image(assets)
    return assets


def run(argv, **kwargs):
    kwargs.setdefault("check", True)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    try:
        return subprocess.run(argv, **kwargs)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"{argv} failed ({err.returncode}):\n{err.stdout}\n{err.stderr}") from err


# --------------------------------------------------------------------------- GPG


def _make_gpg_key(assets):
    gnupg = assets.root / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(gnupg))
    for name, path in ((GPG_NAME, assets.gpgkey), (OS_GPG_NAME, assets.os_gpgkey)):
        run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
             name, "rsa2048", "sign", "never"], env=env)
        path.write_text(run(["gpg", "--armor", "--export", name], env=env).stdout)
    return gnupg


# --------------------------------------------------------------------------- RPMs


class Package:
    """One stand-in RPM: files are {path: text} or {path: ("symlink", target)}."""

    def __init__(self, name, version, release="1.el8", *, epoch=None, arch="x86_64", files=None,
                 requires=(), provides=(), posttrans=None, preun=None, summary=None):
        self.name, self.version, self.release, self.epoch, self.arch = name, version, release, epoch, arch
        self.files = files or {}
        self.requires, self.provides = list(requires), list(provides)
        self.posttrans, self.preun = posttrans, preun
        self.summary = summary or f"Stand-in for {name}"

    @property
    def nevra(self):
        return f"{self.name}-{self.epoch or 0}:{self.version}-{self.release}.{self.arch}"

    def spec(self, stage):
        lines = [
            f"Name: {self.name}", f"Version: {self.version}", f"Release: {self.release}",
            f"Summary: {self.summary}", "License: Proprietary", f"BuildArch: {self.arch}",
            "AutoReqProv: no",
            "%define debug_package %{nil}", "%define __os_install_post %{nil}",
            "%define _build_id_links none",
        ]
        if self.epoch:
            lines.append(f"Epoch: {self.epoch}")
        lines += [f"Requires: {r}" for r in self.requires] + [f"Provides: {p}" for p in self.provides]
        lines += ["%description", self.summary, "%install", f"cp -a {stage}/. %{{buildroot}}/", "%files"]
        lines += sorted(self.files) or []
        if self.posttrans:
            lines += ["%posttrans", self.posttrans]
        if self.preun:
            lines += ["%preun", self.preun]
        return "\n".join(lines) + "\n"

    def build(self, workdir, outdir):
        stage = workdir / f"stage-{self.name}-{self.version}-{self.release}-{self.arch}"
        stage.mkdir(parents=True)
        for path, content in self.files.items():
            target = stage / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, tuple):
                target.symlink_to(content[1])
            elif isinstance(content, Path):
                shutil.copy(content, target)
                target.chmod(0o755)
            else:
                target.write_text(content)
                target.chmod(0o755 if "/bin/" in path or "/sbin/" in path else 0o644)
        spec = workdir / f"{self.name}-{self.version}-{self.release}.spec"
        spec.write_text(self.spec(stage))
        run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {workdir / 'rpmbuild'}",
             "--define", f"_rpmdir {outdir}", "--define", "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
             str(spec)])


def _driver_packages(stream, version, kmod, dist="el8"):
    epoch = "3"
    same = f"= {epoch}:{version}-1.{dist}"
    lib = f"nvgpu-standin driver library {{}} version={version}\n"
    libs = {f"/usr/lib64/libcuda.so.{version}": lib.format("libcuda"),
            "/usr/lib64/libcuda.so.1": ("symlink", f"libcuda.so.{version}"),
            f"/usr/lib64/libnvidia-ptxjitcompiler.so.{version}": lib.format("libnvidia-ptxjitcompiler"),
            f"/usr/lib/libcuda.so.{version}": lib.format("libcuda (32-bit)")}
    nvml = {f"/usr/lib64/libnvidia-ml.so.{version}": lib.format("libnvidia-ml"),
            "/usr/lib64/libnvidia-ml.so.1": ("symlink", f"libnvidia-ml.so.{version}")}
    firmware = {f"/usr/lib/firmware/nvidia/{version}/gsp_ga10x.bin": f"gsp firmware {version}\n",
                f"/usr/lib/firmware/nvidia/{version}/gsp_tu10x.bin": f"gsp firmware {version}\n"}
    dkms_src = {f"/usr/src/nvidia-{version}/dkms.conf": f'PACKAGE_NAME="nvidia"\nPACKAGE_VERSION="{version}"\n'}
    common = dict(epoch=epoch, release=f"1.{dist}")
    # The services' unit files as NVIDIA's packages ship them (Fabric Manager User Guide;
    # the nvidia-persistenced RPM of the CUDA repo).
    persistenced_unit = textwrap.dedent("""\
        [Unit]
        Description=NVIDIA Persistence Daemon
        Wants=syslog.target

        [Service]
        Type=forking
        ExecStart=/usr/bin/nvidia-persistenced --verbose
        ExecStopPost=/bin/rm -rf /var/run/nvidia-persistenced

        [Install]
        WantedBy=multi-user.target
        """)
    fabricmanager_unit = textwrap.dedent("""\
        [Unit]
        Description=NVIDIA fabric manager service
        After=network-online.target
        Requires=network-online.target

        [Service]
        User=root
        PrivateTmp=false
        Type=forking
        ExecStart=/usr/bin/nv-fabricmanager -c /usr/share/nvidia/nvswitch/fabricmanager.cfg
        LimitCORE=infinity

        [Install]
        WantedBy=multi-user.target
        """)
    return [
        Package("nvidia-driver", version, files=firmware, requires=[f"nvidia-driver-cuda-libs {same}"], **common),
        Package("nvidia-driver-cuda-libs", version, files=libs, **common),
        Package("nvidia-driver-NVML", version, files=nvml, **common),
        Package("nvidia-driver-cuda", version, files={"/usr/bin/nvidia-smi": STANDIN,
                                                       "/usr/bin/nvidia-debugdump": STANDIN},
                requires=[f"nvidia-driver-NVML {same}", f"nvidia-driver-cuda-libs {same}"], **common),
        Package("nvidia-modprobe", version, files={"/usr/bin/nvidia-modprobe": STANDIN}, **common),
        Package("nvidia-persistenced", version, files={
            "/usr/bin/nvidia-persistenced": STANDIN,
            "/usr/lib/systemd/system/nvidia-persistenced.service": persistenced_unit}, **common),
        # Not in the default profile: the stream's `fm` profile adds it (NVSwitch systems).
        Package("nvidia-fabric-manager", version, f"1.{dist}", files={
            "/usr/bin/nv-fabricmanager": STANDIN,
            "/usr/share/nvidia/nvswitch/fabricmanager.cfg": "LOG_LEVEL=4\nFABRIC_MODE=0\n",
            "/usr/lib/systemd/system/nvidia-fabricmanager.service": fabricmanager_unit}),
        Package(kmod, version, files=dkms_src, requires=["dkms", f"nvidia-driver {same}"],
                # Like the real kmod package: DKMS builds the module for the running kernel.
                posttrans="/usr/sbin/dkms autoinstall || :", preun="/usr/sbin/dkms-remove || :", **common),
    ]


def _modulemd(name, stream, version, profiles, packages, summary):
    artifacts = "".join(f"      - {p.nevra}\n" for p in packages)
    profile_text = "".join(
        f"    {profile}:\n      rpms:\n" + "".join(f"        - {r}\n" for r in rpms) for profile, rpms in profiles.items())
    return (
        "---\ndocument: modulemd\nversion: 2\ndata:\n"
        f"  name: {name}\n  stream: \"{stream}\"\n  version: {version}\n  context: \"00000000\"\n  arch: x86_64\n"
        f"  summary: {summary}\n  description: {summary}\n  license:\n    module:\n      - MIT\n"
        f"  profiles:\n{profile_text}  artifacts:\n    rpms:\n{artifacts}...\n"
    )


def _defaults(name, stream, profile):
    return (f"---\ndocument: modulemd-defaults\nversion: 1\ndata:\n  module: {name}\n  stream: \"{stream}\"\n"
            f"  profiles:\n    {stream}: [{profile}]\n...\n")


# Versions of the OS packages that differ per release: {name: {major: (version, release)}}.
_OS_PACKAGES = {
    "dkms": {"8": ("3.0.12", "1.el8"), "9": ("3.1.5", "1.el9"), "10": ("3.2.1", "1.el10")},
    "kmod": {"8": ("25", "20.el8"), "9": ("28", "10.el9"), "10": ("31", "11.el10")},
    "bash": {"8": ("4.4.20", "4.el8_6"), "9": ("5.1.8", "9.el9"), "10": ("5.2.26", "6.el10")},
    "dracut": {"8": ("049", "228.git20230802.el8"), "9": ("057", "87.git20250311.el9_6"),
               "10": ("103", "4.el10")},
    "policycoreutils-python-utils": {"8": ("2.9", "24.el8"), "9": ("3.6", "2.1.el9"), "10": ("3.8", "1.el10")},
    "mokutil": {"8": ("0.3.0", "12.el8"), "9": ("0.6.0", "4.el9"), "10": ("0.7.1", "2.el10")},
    "systemd": {"8": ("239", "78.el8"), "9": ("252", "51.el9"), "10": ("257", "9.el10")},
}
# Where the stand-in SELinux tools read which booleans the installed policy defines
# (a real policy package carries them inside its .pp; see nvstandin's getsebool).
SELINUX_BOOLEANS_DIR = "/usr/share/nvgpu-standin/selinux-booleans"


def _base_packages(rel):
    kernel_dir = f"/usr/src/kernels/{rel.kernel_release}"
    os_release = textwrap.dedent(f"""\
        NAME="Red Hat Enterprise Linux"
        VERSION="{rel.version} ({rel.codename})"
        ID="rhel"
        ID_LIKE="fedora"
        VERSION_ID="{rel.version}"
        PLATFORM_ID="{rel.platform}"
        PRETTY_NAME="Red Hat Enterprise Linux {rel.version} ({rel.codename})"
        """)
    release = f"Red Hat Enterprise Linux release {rel.version} ({rel.codename})\n"
    version, kernel_release = rel.kernel.split("-", 1)

    def os_package(name, **kwargs):
        return Package(name, *_OS_PACKAGES[name][rel.major], **kwargs)

    next_version, next_release = rel.next_kernel.split("-", 1)
    next_kernel_release = f"{rel.next_kernel}.x86_64"
    packages = [
        Package("redhat-release", rel.version, f"0.5.{rel.dist}", files={
            "/etc/os-release": os_release, "/etc/redhat-release": release, "/etc/system-release": release},
            provides=[f"system-release(releasever) = {rel.major}", f"system-release = {rel.version}",
                      f"redhat-release = {rel.version}"]),
        Package("kernel-devel", version, kernel_release,
                files={f"{kernel_dir}/Makefile": f"# kernel {rel.kernel_release}\n"}, provides=["installonlypkg(kernel)"]),
        Package("kernel-headers", version, kernel_release,
                files={"/usr/include/linux/version.h": f"/* {rel.kernel_release} */\n"}),
        os_package("dkms", arch="noarch", files={"/usr/sbin/dkms": STANDIN, "/usr/sbin/dkms-remove": STANDIN}),
        # The next kernel: its image, and (like the real package's kernel-install, which runs
        # DKMS's kernel hook) a DKMS build for it, which fails without its kernel-devel.
        Package("kernel-core", next_version, next_release, files={
            f"/lib/modules/{next_kernel_release}/vmlinuz": f"kernel image {next_kernel_release}\n"},
            provides=["installonlypkg(kernel)"],
            posttrans=f"[ ! -x /usr/sbin/dkms ] || /usr/sbin/dkms autoinstall -k {next_kernel_release} || :"),
        Package("kernel-devel", next_version, next_release, files={
            f"/usr/src/kernels/{next_kernel_release}/Makefile": f"# kernel {next_kernel_release}\n"},
            provides=["installonlypkg(kernel)"]),
        os_package("kmod", files={"/usr/sbin/modprobe": STANDIN, "/usr/sbin/modinfo": STANDIN,
                                  "/usr/sbin/rmmod": STANDIN}),
        # No PID 1 here: systemctl keeps unit state in node files (see nvstandin).
        os_package("systemd", files={"/usr/bin/systemctl": STANDIN, "/usr/bin/systemd-run": STANDIN,
                                     "/usr/bin/loginctl": STANDIN}),
        os_package("mokutil", files={"/usr/bin/mokutil": STANDIN}),
        # The machine's own shell, as RPM knows it (package scriptlets need /bin/sh).
        os_package("bash", provides=["/bin/sh", "/bin/bash"]),
        os_package("dracut", files={"/usr/bin/dracut": STANDIN, "/usr/bin/lsinitrd": STANDIN}),
        # semanage (Salt's selinux module needs it); `boolean -l` is a stand-in (nvstandin).
        os_package("policycoreutils-python-utils", arch="noarch", files={"/usr/sbin/semanage": STANDIN}),
    ]
    if not rel.streams:
        # `dnf versionlock` (NVIDIA's RHEL 10 recipe pins a driver branch with it).
        packages.append(Package("python3-dnf-plugin-versionlock", "4.7.0", "8.el10", arch="noarch", files={
            f"{DNF_PYTHON}/dnf-plugins/versionlock.py": HERE / "vendor/dnf-plugins/versionlock.py",
            f"{DNF_PYTHON}/dnfpluginscore/__init__.py": HERE / "vendor/dnfpluginscore/__init__.py",
            "/etc/dnf/plugins/versionlock.conf": f"[main]\nenabled = 1\nlocklist = {VERSIONLOCK_LIST}\n",
            VERSIONLOCK_LIST: ""}))
    booleans = "".join(f"{name} {default} {text}\n" for name, default, text in rel.booleans)
    container_selinux = Package("container-selinux", *rel.container_selinux, epoch="2", arch="noarch", files={
        f"{SELINUX_BOOLEANS_DIR}/container": booleans})
    podman = Package("podman", rel.podman[0], rel.podman[1], epoch="3", requires=["container-selinux"], files={
        "/usr/bin/podman": "#!/bin/sh\n# The machine's real Podman (see tests/node/enter).\n"
                           "exec /run/nvgpu-host/podman \"$@\"\n"})
    return packages, podman, container_selinux


def _toolkit_packages(v=TOOLKIT_VERSION, units=None):
    config = textwrap.dedent("""\
        #accept-nvidia-visible-devices-as-volume-mounts = false
        #accept-nvidia-visible-devices-envvar-when-unprivileged = true
        disable-require = false
        supported-driver-capabilities = "compat32,compute,display,graphics,ngx,utility,video"

        [nvidia-container-cli]
        environment = []
        ldconfig = "@/sbin/ldconfig"
        load-kmods = true
        #no-cgroups = false

        [nvidia-container-runtime]
        log-level = "info"
        mode = "auto"
        runtimes = ["docker-runc", "runc", "crun"]

        [nvidia-container-runtime-hook]
        path = "nvidia-container-runtime-hook"
        skip-mode-detection = false
        """)
    same = f"= {v}-1"
    return [
        Package("libnvidia-container1", v, "1", files={f"/usr/lib64/libnvidia-container.so.{v}": "stand-in\n"}),
        Package("libnvidia-container-tools", v, "1",
                files={"/usr/bin/nvidia-container-cli": STANDIN},
                requires=[f"libnvidia-container1 {same}"]),
        Package("nvidia-container-toolkit-base", v, "1", files={
            "/usr/bin/nvidia-ctk": STANDIN,
            "/etc/nvidia-container-runtime/config.toml": config, **(units or {})}),
        Package("nvidia-container-toolkit", v, "1", files={
            "/usr/bin/nvidia-container-runtime-hook": STANDIN},
            requires=[f"nvidia-container-toolkit-base {same}", f"libnvidia-container-tools {same}"]),
    ]


def _build_repos(assets, gnupg):
    work = assets.root / "build"
    repos, modules = {"toolkit": _toolkit_packages(),
                      "toolkit-1.18": _toolkit_packages(REFRESH_TOOLKIT_VERSION, CDI_REFRESH_UNITS)}, {}
    for major, rel in RELEASES.items():
        prefix = "" if major == DEFAULT_RELEASE else f"{rel.dist}/"
        base, podman, container_selinux = _base_packages(rel)
        repos[prefix + "baseos"] = base + [podman, container_selinux]
        if rel.container_tools:
            modules[prefix + "baseos"] = (
                _modulemd("container-tools", rel.container_tools, 8090020231201000000,
                          {"common": ["podman", "container-selinux"]}, [podman, container_selinux],
                          "Most recent (rolling) versions of podman")
                + _defaults("container-tools", rel.container_tools, "common"))
        repos[prefix + "cuda"], modules[prefix + "cuda"] = _cuda_repo(rel)
    for name, packages in repos.items():
        outdir = assets.repos / name
        outdir.mkdir(parents=True)
        for package in packages:
            package.build(work / name, outdir)
        rpms = sorted(str(p) for p in outdir.rglob("*.rpm"))
        signer = OS_GPG_NAME if name.endswith("baseos") else GPG_NAME
        run(["rpmsign", "--addsign", "--define", "__gpg /usr/bin/gpg", "--define", f"_gpg_name {signer}",
             "--define", "_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback --passphrase ''", *rpms],
            env=dict(os.environ, GNUPGHOME=str(gnupg)))
        run(["createrepo_c", "--quiet", str(outdir)])
        if modules.get(name):
            modules_file = work / f"{name.replace('/', '-')}-modules.yaml"
            modules_file.write_text(modules[name])
            run(["modifyrepo_c", "--mdtype=modules", str(modules_file), str(outdir / "repodata")])
        # Signed metadata too, so that repo_gpgcheck=1 (NVIDIA's repos use it) is checked for real.
        run(["gpg", "--batch", "--yes", "--detach-sign", "--armor", "--local-user", signer,
             str(outdir / "repodata" / "repomd.xml")], env=dict(os.environ, GNUPGHOME=str(gnupg)))
    shutil.rmtree(work)


def _cuda_repo(rel):
    """NVIDIA's CUDA repo of one release: the nvidia-driver streams (RHEL 8 and 9 alike) and
    cuda; on RHEL 10 (no streams) each branch's packages and its nvidia-open, no modules.yaml."""
    cuda = Package("cuda", CUDA_VERSION, "1", files={
        "/usr/local/cuda-12.4/version.json": f'{{"cuda": {{"version": "{CUDA_VERSION}"}}}}\n',
        "/usr/local/cuda": ("symlink", "cuda-12.4")})
    if not rel.streams:
        packages = []
        for version in BRANCHES.values():
            branch_packages = _driver_packages(None, version, "kmod-nvidia-open-dkms", rel.dist)
            same = f"= 3:{version}-1.{rel.dist}"
            # NVIDIA's meta package: the open kernel modules and the whole driver of one version.
            # (not the fabric manager: NVSwitch systems install it on their own)
            packages += branch_packages + [Package("nvidia-open", version, f"1.{rel.dist}", epoch="3", requires=[
                f"{p.name} {same}" for p in branch_packages if p.name != "nvidia-fabric-manager"])]
        return packages + [cuda], None
    packages, module_docs, seen = [], [], set()
    for stream, (version, kmod) in STREAMS.items():
        stream_packages = _driver_packages(stream, version, kmod, rel.dist)
        module_docs.append(_modulemd(
            "nvidia-driver", stream, int(rel.major) * 1000000000000000000 + 20240101000000 + len(module_docs), {
                "default": [p.name for p in stream_packages if p.name != "nvidia-fabric-manager"],
                "fm": [p.name for p in stream_packages]}, stream_packages, f"Nvidia driver for {stream} branch"))
        for package in stream_packages:
            if package.nevra not in seen:
                seen.add(package.nevra)
                packages.append(package)
    packages.append(cuda)
    return packages, "".join(module_docs) + _defaults("nvidia-driver", DEFAULT_STREAM, "default")


def _build_policy(assets):
    """The SELinux policy module package, built with the real checkmodule/semodule_package."""
    work = assets.root / "policy"
    work.mkdir()
    run(["checkmodule", "-M", "-m", "-o", str(work / "nvidia-container.mod"),
         str(HERE / "selinux" / "nvidia-container.te")])
    run(["semodule_package", "-o", str(assets.policy), "-m", str(work / "nvidia-container.mod")])
    shutil.rmtree(work)


def site_pillar(assets, release=DEFAULT_RELEASE, **gpu):
    """The `gpu` pillar of a site whose mirrors are this machine's: local signed repos
    (those of RHEL `release`), the image registry on 127.0.0.1:5000, the policy module
    as a local file."""
    pillar = {
        "repos": {
            "cuda": {"baseurl": assets.repo_url("cuda", release), "gpgkey": f"file://{assets.gpgkey}"},
            "toolkit": {"baseurl": assets.repo_url("toolkit"), "gpgkey": f"file://{assets.gpgkey}"},
        },
        "selinux": {"policy_source": str(assets.policy),
                    "policy_hash": "sha256=" + hashlib.sha256(assets.policy.read_bytes()).hexdigest()},
        "validate": {"image": assets.image},
    }
    return {"gpu": merge_stages(pillar, gpu)}


def merge_stages(gpu, overrides):
    """`gpu` pillar with `overrides` laid over it, one level deep (per stage key)."""
    merged = dict(gpu)
    for key, value in overrides.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


# --------------------------------------------------------------------------- image and registry

VECTOR_ADD = r"""#!/bin/sh
# Stand-in for NVIDIA's vectorAdd sample: it passes only when the OCI hook or a CDI
# spec really put the driver library and the GPU device nodes into this container.
echo "[Vector addition of 50000 elements]"
lib=""
for candidate in /usr/lib64/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1; do
    if [ -z "$lib" ] && grep -q "nvgpu-standin driver library libcuda" "$candidate" 2>/dev/null; then
        lib=$candidate
    fi
done
if [ -z "$lib" ]; then
    echo "Failed to allocate device vector A (error code CUDA driver version is insufficient for CUDA runtime version)!" >&2
    exit 1
fi
# CUDA's device 0: the first GPU device node the container was given.
gpu=""
for dev in /dev/nvidia[0-9]*; do
    if [ -z "$gpu" ] && [ -c "$dev" ]; then
        gpu=${dev#/dev/nvidia}
    fi
done
for dev in /dev/nvidiactl /dev/nvidia-uvm "/dev/nvidia$gpu"; do
    if [ -z "$gpu" ] || [ ! -c "$dev" ]; then
        echo "Failed to allocate device vector A (error code no CUDA-capable device is detected)!" >&2
        exit 1
    fi
done
# A faulty GPU fails the sample's first CUDA call with the runtime's text for its error
# (cudaGetErrorString), e.g. "uncorrectable ECC error encountered".
state=/run/nvgpu-standin/gpu$gpu
if [ -f "$state" ] && [ "$(cat "$state")" != ok ]; then
    echo "Failed to allocate device vector A (error code $(cat "$state"))!" >&2
    exit 1
fi
# NVSwitch systems: until the fabric manager has trained the NVLink fabric, CUDA fails with
# cudaErrorSystemNotReady (802), whose text is "system not yet initialized" (dstack#2348).
fabric=$(cat /sys/module/nvidia/fabric_state 2>/dev/null)
if [ -n "$fabric" ] && [ "$fabric" != "Completed" ]; then
    echo "Failed to allocate device vector A (error code system not yet initialized)!" >&2
    exit 1
fi
echo "Copy input data from the host memory to the CUDA device"
echo "CUDA kernel launch with 196 blocks of 256 threads"
echo "Copy output data from the CUDA device to the host memory"
echo "Test PASSED"
echo "Done"
"""
APPLETS = ("sh", "cat", "echo", "grep", "ls", "id", "env", "head", "test", "[")
WORKDIR = "/usr/local/cuda/samples/0_Simple/vectorAdd"


def _build_image(assets):
    rootfs = assets.root / "image-rootfs"
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "usr/lib64", WORKDIR.lstrip("/")):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/usr/bin/busybox", rootfs / "bin/busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    program = rootfs / WORKDIR.lstrip("/") / "vectorAdd"
    program.write_text(VECTOR_ADD)
    program.chmod(0o755)
    with tarfile.open(assets.root / "image.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    shutil.rmtree(rootfs)


def _podman(assets, *args):
    storage = assets.root / "podman"
    return run(["podman", "--root", str(storage / "root"), "--runroot", str(storage / "run"),
                "--storage-driver", "vfs", *args])


def _push_image(assets):
    stamp = assets.root / ".pushed"
    if stamp.exists():
        return
    _podman(assets, "import", "--change", f"WORKDIR {WORKDIR}", "--change", 'CMD ["./vectorAdd"]',
            "--change", "ENV NVIDIA_VISIBLE_DEVICES=all",
            "--change", "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            str(assets.root / "image.tar"), IMAGE)
    _podman(assets, "push", "--tls-verify=false", IMAGE)
    _podman(assets, "tag", IMAGE, assets.image_pinned)
    _podman(assets, "push", "--tls-verify=false", assets.image_pinned)
    stamp.write_text(IMAGE + "\n")


def _registry_up():
    host, port = REGISTRY.split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def ensure_registry(assets):
    """Start docker-registry on 127.0.0.1:5000 with this tree's storage, if not running."""
    assets.registry.mkdir(exist_ok=True)
    config = assets.registry / "config.yml"
    config.write_text(textwrap.dedent(f"""\
        version: 0.1
        log:
          level: warn
        storage:
          filesystem:
            rootdirectory: {assets.registry / 'data'}
        http:
          addr: {REGISTRY}
        """))
    pidfile = assets.registry / "pid"
    if _registry_up():
        return
    log = open(assets.registry / "registry.log", "a")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    pidfile.write_text(f"{proc.pid}\n")
    for _ in range(100):
        if _registry_up():
            return
        time.sleep(0.1)
    raise RuntimeError(f"docker-registry did not start; see {assets.registry / 'registry.log'}")
