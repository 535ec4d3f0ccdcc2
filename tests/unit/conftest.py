"""
Fixtures of the unit tests: a node's files in a temporary tree (``nvgpu_node``'s path
constants pointed into it), the one fake command runner, and the fake ``which``.
"""

import pathlib

import nvgpu_node
import pytest
import salt.utils.path

from tests.unit.fakes import FakeRunAll, FakeWhich

KERNEL = "4.18.0-513.24.1.el8_9.x86_64"

# nvgpu_node's absolute paths; the host fixture moves each under its temporary root.
_PATHS = (
    "OCI_HOOK_PATH",
    "CDI_SPEC_PATH",
    "TOOLKIT_CONFIG",
    "DNF_MODULES_D",
    "VERSIONLOCK_LIST",
    "SYS_MODULE",
    "PROC_MODULES",
    "LIB_MODULES",
    "OSRELEASE",
    "BOOT_ID",
    "DEV",
    "SYS_DRIVER_VERSION",
    "PROC_DRIVER_VERSION",
    "DRIVER_LIB_GLOB",
    "INITRAMFS_IMAGE",
    "SYS_PCI_DEVICES",
    "CDI_REFRESH_SPEC",
    "KERNEL_SOURCES",
    "DRIVER_LIBS_GLOB",
    "DRIVER_BIN_GLOB",
    "USER_RUNTIME_DIR",
    "LINGER_DIR",
    "SYSTEMD_RUN_DIR",
    "PROC_KEYS",
    "KMSG",
)


class Host:
    """A node's files under ``root``: ``host.path("/etc/subuid")`` is where nvgpu reads /etc/subuid."""

    def __init__(self, root):
        self.root = root

    def path(self, absolute):
        return pathlib.Path(f"{self.root}{absolute}")

    def write(self, absolute, text):
        path = self.path(absolute)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def touch(self, *absolutes):
        for absolute in absolutes:
            self.write(absolute, "")

    def load(self, *modules):
        """Kernel modules loaded as /sys/module shows them (initstate live)."""
        for name in modules:
            self.write(f"/sys/module/{name}/initstate", "live\n")


@pytest.fixture
def host(tmp_path, monkeypatch):
    """
    An empty node: /sys/module, /dev, /lib/modules and /etc/dnf/modules.d exist, the running
    kernel is KERNEL, nothing loaded, nothing installed, no /proc/modules.
    """
    node = Host(tmp_path)
    for name in _PATHS:
        monkeypatch.setattr(nvgpu_node, name, str(node.path(getattr(nvgpu_node, name))))
    monkeypatch.setattr(nvgpu_node, "CDI_DIRS", tuple(str(node.path(d)) for d in nvgpu_node.CDI_DIRS))
    monkeypatch.setattr(nvgpu_node, "OCI_HOOK_DIRS", tuple(str(node.path(d)) for d in nvgpu_node.OCI_HOOK_DIRS))
    monkeypatch.setattr(nvgpu_node, "SUBID_FILES", {k: str(node.path(v)) for k, v in nvgpu_node.SUBID_FILES.items()})
    for directory in ("/sys/module", "/dev", "/lib/modules", "/etc/dnf/modules.d"):
        node.path(directory).mkdir(parents=True)
    node.write("/proc/sys/kernel/osrelease", KERNEL + "\n")
    return node


@pytest.fixture
def run_all():
    """The one fake ``cmd.run_all``; answer commands with ``run_all.on(*argv_prefix, ...)``."""
    return FakeRunAll()


@pytest.fixture
def which(monkeypatch):
    """``salt.utils.path.which`` finding the node's tools in /usr/bin; discard one to uninstall it."""
    fake = FakeWhich({"nvidia-modprobe", "nvidia-container-cli", "podman", "getenforce", "dnf"})
    monkeypatch.setattr(salt.utils.path, "which", fake)
    return fake
