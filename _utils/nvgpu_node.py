"""
What every part of nvgpu knows about a GPU node, written down once: where things are,
the words for the ways a container gets the GPU (and the one rule for ``auto``), the
readers and parsers of the node's files and tools' output, and the one way a failed
command becomes an error.

Execution modules, states, grains and the runner import this module by name: Salt puts
its ``utils`` directories on ``sys.path`` while it loads them (``file_roots`` +
``saltutil.sync_all``, or the ``saltext.nvgpu.utils`` package of ``pip install .``).
Nothing here calls ``__salt__``: a command runner is passed in where one is needed.
"""

import contextlib
import glob
import hashlib
import os
import re
import shutil
import tempfile

from salt.exceptions import CommandExecutionError, SaltInvocationError

# ---------------------------------------------------------------------------
# Paths on the node
# ---------------------------------------------------------------------------

# NVIDIA's OCI hook for Podman, as the toolkit RPMs shipped it up to v1.14 and as
# `nvidia-ctk runtime configure --config-mode=oci-hook` still writes it.
OCI_HOOK_PATH = "/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json"
OCI_HOOK_BINARY = "/usr/bin/nvidia-container-runtime-hook"
OCI_HOOK_ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# CDI: the spec nvgpu writes, and every directory Podman reads specs from (a spec in
# /var/run/cdi wins over one in /etc/cdi for the same kind).
CDI_SPEC_PATH = "/etc/cdi/nvidia.yaml"
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
CDI_SPEC_SUFFIXES = (".yaml", ".json")
# The directories Podman (containers-common) reads OCI hooks from, *.json only; the
# files directly in them, not in subdirectories.
OCI_HOOK_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")
OCI_HOOK_SUFFIX = ".json"
# Where modprobe reads the administrator's configuration (*.conf directly in it).
MODPROBE_DIRS = ("/etc/modprobe.d",)
MODPROBE_SUFFIX = ".conf"
CDI_KIND = "nvidia.com/gpu"
# nvidia-container-toolkit 1.18+ ships nvidia-cdi-refresh: a path unit watching the running
# kernel's modules.dep (a driver install or removal changes it) that starts a oneshot
# service running `nvidia-ctk cdi generate` into this spec (deployments/systemd in
# NVIDIA/nvidia-container-toolkit). Unit files where packages and administrators put them.
CDI_REFRESH_PATH_UNIT = "nvidia-cdi-refresh.path"
CDI_REFRESH_SERVICE = "nvidia-cdi-refresh.service"
CDI_REFRESH_SPEC = "/var/run/cdi/nvidia.yaml"
SYSTEMD_UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system")
TOOLKIT_CONFIG = "/etc/nvidia-container-runtime/config.toml"
NO_CGROUPS_KEY = "nvidia-container-cli.no-cgroups"
DNF_MODULES_D = "/etc/dnf/modules.d"
SUBID_FILES = {"subuid": "/etc/subuid", "subgid": "/etc/subgid"}

# /sys/module/<name> exists for every loaded or built-in module, also on kernels
# without loadable-module support, where /proc/modules is absent.
SYS_MODULE = "/sys/module"
PROC_MODULES = "/proc/modules"
LIB_MODULES = "/lib/modules"
OSRELEASE = "/proc/sys/kernel/osrelease"
# A random id the kernel makes at every boot: what a reboot changes whatever else stays.
BOOT_ID = "/proc/sys/kernel/random/boot_id"
DEV = "/dev"
SYS_DRIVER_VERSION = "/sys/module/nvidia/version"
PROC_DRIVER_VERSION = "/proc/driver/nvidia/version"
# The versioned libcuda the driver package installs: the installed driver's version.
DRIVER_LIB_GLOB = "/usr/lib64/libcuda.so.*.*"
# The driver's other libraries and its programs (nvidia-smi, nvidia-persistenced, ...):
# with libcuda, the files the toolkit puts into containers.
DRIVER_LIBS_GLOB = "/usr/lib64/libnvidia-*.so.*"
DRIVER_BIN_GLOB = "/usr/bin/nvidia-*"
# dnf's versionlock plugin keeps its locks here (python3-dnf-plugin-versionlock's default).
VERSIONLOCK_LIST = "/etc/dnf/plugins/versionlock.list"
# The initramfs of a kernel release, where dracut writes it on RHEL.
INITRAMFS_IMAGE = "/boot/initramfs-{}.img"
# PCI devices as sysfs shows them (each a directory with `vendor` and `device` files,
# "0x10de"), and the device ids of NVIDIA's NVSwitch chips: their systems (HGX/DGX
# A100, H100, H200) need nvidia-fabricmanager running before CUDA initialises.
SYS_PCI_DEVICES = "/sys/bus/pci/devices"
NVIDIA_PCI_VENDOR = "0x10de"
NVSWITCH_DEVICE_IDS = ("0x1af1", "0x22a3")
FABRIC_MANAGER_SERVICE = "nvidia-fabricmanager"
# Its package in NVIDIA's CUDA repository (the nvidia-driver streams' `fm` profile), whose
# version must be exactly the driver's; and the GPUs' NVLink fabric state once it trained it.
FABRIC_MANAGER_PACKAGE = "nvidia-fabric-manager"
FABRIC_COMPLETED = "Completed"
# nvidia-smi's fabric.state where a GPU has no fabric registration to report.
FABRIC_NOT_REPORTED = ("Not Supported", "N/A", "[N/A]")
# The driver's persistence daemon (package nvidia-persistenced of the driver stream).
PERSISTENCED_SERVICE = "nvidia-persistenced"
# The daemons that keep /dev/nvidia* open: stopped before the driver is reloaded.
DRIVER_SERVICES = (FABRIC_MANAGER_SERVICE, PERSISTENCED_SERVICE)
# An installed kernel's image, as RHEL 8+'s kernel-core package places it (kernel-install
# copies it to /boot): /lib/modules/<release>/vmlinuz.
KERNEL_IMAGE = "vmlinuz"
# Where kernel-devel puts a kernel's build tree (DKMS builds against it).
KERNEL_SOURCES = "/usr/src/kernels"
# A rootless user's runtime directory (systemd-logind makes it for a session, or at boot for
# a user with lingering on: a file named after the user in LINGER_DIR), and the directory
# that exists only while systemd is the init system.
USER_RUNTIME_DIR = "/run/user"
LINGER_DIR = "/var/lib/systemd/linger"
SYSTEMD_RUN_DIR = "/run/systemd/system"
# The keys the kernel holds (its built-in, secondary, platform and machine keyrings, as
# root sees them): a module signed by one of them loads under Secure Boot.
PROC_KEYS = "/proc/keys"
# PCI class codes of GPUs (display controllers): VGA 0x0300xx, 3D controller 0x0302xx (the
# data-centre GPUs). NVSwitches (0x0680xx) and the GPUs' audio functions (0x0403xx) are not GPUs.
GPU_PCI_CLASSES = ("0x0300", "0x0302")
# The kernel's log since boot (what dmesg reads), one record per read: "PRIO,SEQ,USEC,FLAGS;TEXT".
KMSG = "/dev/kmsg"

DEFAULT_IMAGE = "docker.io/mirrorgooglecontainers/cuda-vector-add:v0.1"
# Podman's --pull policies.
PULL_POLICIES = ("always", "missing", "never", "newer")
# When the validation state runs its container: when what the result depends on
# changed since the last pass (or it failed), or every time.
VALIDATE_WHEN = ("changed", "always")

# ---------------------------------------------------------------------------
# How a container gets the GPU
# ---------------------------------------------------------------------------

# hook: NVIDIA's OCI prestart hook (the guide's way); cdi: a CDI spec and
# --device nvidia.com/gpu=all; auto: decided by resolve_mode.
MODES = ("auto", "hook", "cdi")
# Podman reads CDI specs from 4.1 on; NVIDIA recommends CDI over the hook there.
CDI_MIN_PODMAN = (4, 1)


def version_tuple(text):
    """``"4.9.4-rhel"`` -> ``(4, 9, 4)``; the first three numbers of a version string."""
    return tuple(int(part) for part in re.findall(r"\d+", str(text))[:3])


# Who writes the CDI spec for nvidia.com/gpu: the formula (nvidia-ctk cdi generate into
# gpu:toolkit:cdi_path), or the toolkit's nvidia-cdi-refresh; auto: resolve_cdi_owner.
CDI_OWNERS = ("auto", "formula", "refresh")


def resolve_cdi_owner(owner, refresh_shipped):
    """
    The one meaning of ``auto`` for the CDI spec's owner: ``refresh`` where the toolkit
    ships nvidia-cdi-refresh (1.18+) and systemd can run it (``refresh_shipped``), else
    ``formula``. ``formula`` and ``refresh`` stand for themselves.
    """
    if owner not in CDI_OWNERS:
        raise ValueError(f"cdi_owner must be one of {', '.join(CDI_OWNERS)}, not {owner!r}")
    if owner != "auto":
        return owner
    return "refresh" if refresh_shipped else "formula"


def resolve_mode(mode, podman_version):
    """
    The one meaning of ``auto``, for configuring the node (the container_toolkit state)
    and for validating it (run_vector_add): ``cdi`` where Podman reads CDI specs (4.1
    or newer), else ``hook``. ``hook`` and ``cdi`` stand for themselves. Returns None
    for ``auto`` when Podman's version is not known (not installed yet).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "auto":
        return mode
    if not podman_version:
        return None
    return "cdi" if version_tuple(podman_version) >= CDI_MIN_PODMAN else "hook"


# ---------------------------------------------------------------------------
# How SELinux lets a container use the GPU
# ---------------------------------------------------------------------------

# module: NVIDIA's dgx-selinux policy module, whose nvidia_container_t may use the GPU
# device nodes (xserver_misc_device_t); boolean: container-selinux's own boolean (2.232.0
# and later, containers/container-selinux#306: EL 9.5+, RHEL 10), which lets container_t
# use them; auto: decided by resolve_selinux_method.
SELINUX_METHODS = ("auto", "boolean", "module")
SELINUX_BOOLEAN = "container_use_xserver_devices"
# The package whose policy defines that boolean on the nodes that have it.
SELINUX_BOOLEAN_PACKAGE = "container-selinux"
# The SELinux type a rootless container runs as (--security-opt label=type:...), per method.
SELINUX_CONTAINER_TYPES = {"boolean": "container_t", "module": "nvidia_container_t"}


def resolve_selinux_method(method, boolean_defined):
    """
    The one meaning of ``auto``, for configuring SELinux (the selinux_ready state) and for
    validating rootless containers (run_vector_add's label): ``boolean`` where the node's
    policy defines container_use_xserver_devices (``boolean_defined``), else ``module``.
    ``boolean`` and ``module`` stand for themselves.
    """
    if method not in SELINUX_METHODS:
        raise ValueError(f"SELinux method must be one of {', '.join(SELINUX_METHODS)}, not {method!r}")
    if method != "auto":
        return method
    return "boolean" if boolean_defined else "module"


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def read_file(path):
    """The text of ``path``, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


# The prefix of the temporary files (and directories) nvgpu writes beside a target
# before renaming them into place.
TEMP_PREFIX = ".nvgpu-"


def file_sha256(path):
    """The sha256 hex digest of the file at ``path``, or None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def require_absolute(path, what="path"):
    """
    ``path`` when it is absolute, else SaltInvocationError: a relative path would be
    resolved against the minion's working directory (root's home, or /), never the
    directory the tool reads, and leave files there.
    """
    if not isinstance(path, str) or not os.path.isabs(path):
        err = SaltInvocationError(f"{what} must be an absolute path, not {path!r}")
        err.path = path
        raise err
    return path


def os_error(action, path, err):
    """
    CommandExecutionError of one line for an OSError met while ``action`` (write,
    remove, ...) ``path``: "cannot write /etc/cdi/nvidia.yaml: Read-only file system".
    The file the OS named is added when it is another one than ``path`` (a parent
    directory that could not be created), never a temporary file's name. The error's
    ``path`` attribute is ``path``, for a state to name the setting it came from.
    """
    where = str(err.filename) if err.filename else ""
    detail = ""
    if where and where != path and f"/{TEMP_PREFIX}" not in where:
        detail = f" (at {where})"
    error = CommandExecutionError(f"cannot {action} {path}: {err.strerror or err}{detail}")
    error.path = path
    return error


def atomic_write(path, data, mode=0o644):
    """
    Write ``data`` to the absolute ``path`` through a temporary file in the same
    directory, so a reader sees the old file or the new one, never half of one; the
    temporary file is gone whatever happens. An OS error (read-only file system, disk
    full, ...) is a CommandExecutionError of one line naming ``path``.
    """
    require_absolute(path)
    directory = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise os_error("write", path, err) from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# ---------------------------------------------------------------------------
# Commands: the one way a failed command becomes an error
# ---------------------------------------------------------------------------


def command_error(what, argv, ret, fix=None, diagnosis=None):
    """
    CommandExecutionError for a command that failed: what was being done, the command
    and its exit code, the tool's own words, then the likely cause and the fix.
    ``info`` carries the command, its exit code and output, and the diagnosis.
    """
    said = (ret.get("stderr") or "").strip() or (ret.get("stdout") or "").strip() or "no output"
    message = f"{what} failed (`{' '.join(str(a) for a in argv)}` exited {ret.get('retcode')}): {said}"
    if diagnosis:
        message += f"\nLikely cause: {diagnosis['cause']}\nFix: {diagnosis['fix']}"
    elif fix:
        message += f"\nFix: {fix}"
    err = CommandExecutionError(message)
    # Not through the constructor: Salt then appends a dump of ``info`` to the error's
    # text, which states show as their comment. As an attribute the text stays the message.
    err.info = {"command": list(argv), "retcode": ret.get("retcode"), "stdout": ret.get("stdout", ""),
                "stderr": ret.get("stderr", ""), "diagnosis": diagnosis}
    return err


def run_checked(run_all, argv, what, fix=None, diagnosis=None):
    """
    Run ``argv`` (a list, no shell) with ``run_all`` (``__salt__["cmd.run_all"]``) and
    return its result; raise ``command_error`` when it exits non-zero. ``diagnosis``
    may be a function of the failed result, called only on failure.
    """
    ret = run_all(argv, python_shell=False, ignore_retcode=True)
    if ret["retcode"] != 0:
        raise command_error(what, argv, ret, fix, diagnosis(ret) if callable(diagnosis) else diagnosis)
    return ret


# What a command run as a rootless user gets for PATH: the system's directories only,
# never root's or the minion's (a PATH through a user-writable directory would let that
# user choose what root's Salt starts as newuidmap or conmon).
USER_PATH = "/usr/local/bin:/usr/bin:/usr/local/sbin:/usr/sbin"


def as_user(argv, name, info):
    """
    ``(argv, cmd.run_all options)`` that run ``argv`` as user ``name`` (``info``: its
    ``user.info``) the way rootless Podman needs: ``setpriv`` (util-linux) takes the
    user's uid, gid and groups and execs ``argv`` in place, in the user's home, with
    only HOME, USER, LOGNAME, a clean PATH and, where it exists, the user's runtime
    dir (root's XDG_RUNTIME_DIR and friends would point rootless Podman at root's
    storage).

    Not Salt's ``runas``: that starts ``su -`` (a login shell through PAM) and a Python
    interpreter to read the user's login environment before every command, about
    0.1 s each time, and rootless Podman needs none of that environment.
    """
    uid, gid = info.get("uid"), info.get("gid")
    if uid is None or gid is None:
        raise SaltInvocationError(f"no uid/gid known for user {name!r}")
    home = info.get("home") or "/"
    env = {"HOME": home, "USER": name, "LOGNAME": name, "PATH": USER_PATH}
    runtime_dir = f"/run/user/{uid}"
    if os.path.isdir(runtime_dir):
        env["XDG_RUNTIME_DIR"] = runtime_dir
    setpriv = shutil.which("setpriv", path=USER_PATH)
    if not setpriv:
        raise CommandExecutionError(f"setpriv not found in {USER_PATH}: install util-linux (it runs commands "
                                    f"as {name})")
    kwargs = {"env": env, "clean_env": True, "cwd": home if os.path.isdir(home) else "/"}
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *argv], kwargs


# ---------------------------------------------------------------------------
# Kernel modules and the driver
# ---------------------------------------------------------------------------


def module_loaded(name):
    """The one reading of "is this kernel module loaded" (/sys/module, else /proc/modules)."""
    name = name.replace("-", "_")
    if os.path.isdir(SYS_MODULE):
        path = os.path.join(SYS_MODULE, name)
        # A module being removed keeps its directory until it is gone; initstate says
        # so. Built-in modules have no initstate.
        state = read_file(os.path.join(path, "initstate"))
        return os.path.isdir(path) and (state is None or state.strip() == "live")
    text = read_file(PROC_MODULES) or ""
    return name in {line.split()[0] for line in text.splitlines() if line.strip()}


def kernel_release():
    """The running kernel's release (its own answer; uname gives the same on a normal host)."""
    text = read_file(OSRELEASE)
    return text.strip() if text and text.strip() else os.uname().release


def nvidia_ko_present(release):
    """True when an nvidia.ko[.xz|.zst|.gz] exists for ``release`` (extra/, updates/dkms/,
    weak-updates/, ... wherever DKMS or a kmod package put it)."""
    pattern = re.compile(r"nvidia\.ko(\.(xz|zst|gz))?")
    for _root, _dirs, files in os.walk(os.path.join(LIB_MODULES, release)):
        if any(pattern.fullmatch(name) for name in files):
            return True
    return False


def release_key(release):
    """
    A sort key for kernel releases in rpm's order (rpmvercmp: runs of digits compare as
    numbers and beat runs of letters): 4.18.0-553.el8_10 sorts after 4.18.0-513.24.1.el8_9.
    """
    return [(1, int(part), "") if part.isdigit() else (0, 0, part)
            for part in re.findall(r"[0-9]+|[A-Za-z]+", str(release))]


def installed_kernels():
    """The kernel releases installed on the node (those with /lib/modules/<release>/vmlinuz), sorted."""
    try:
        names = os.listdir(LIB_MODULES)
    except OSError:
        return []
    found = [name for name in names if os.path.isfile(os.path.join(LIB_MODULES, name, KERNEL_IMAGE))]
    return sorted(found, key=release_key)


def next_boot_kernel(running):
    """The kernel the next boot starts by default: the newest installed one, in rpm's order
    (``running`` counts as installed)."""
    return max(installed_kernels() + [running], key=release_key)


def linger_file(name):
    """The file whose existence means systemd keeps user ``name``'s manager (lingering)."""
    return os.path.join(LINGER_DIR, name)


def _nvidia_pci_devices(attribute, matches):
    """The addresses of the NVIDIA devices on the PCI bus (sysfs) whose ``attribute`` file
    (``device``, ``class``; lowercased) satisfies ``matches``; [] where sysfs has no bus."""
    try:
        addresses = os.listdir(SYS_PCI_DEVICES)
    except OSError:
        return []
    found = []
    for address in addresses:
        path = os.path.join(SYS_PCI_DEVICES, address)
        vendor = (read_file(os.path.join(path, "vendor")) or "").strip().lower()
        value = (read_file(os.path.join(path, attribute)) or "").strip().lower()
        if vendor == NVIDIA_PCI_VENDOR and matches(value):
            found.append(address)
    return found


def nvswitches():
    """The PCI addresses of the NVSwitch chips on the node (sysfs), sorted; [] where none."""
    return sorted(_nvidia_pci_devices("device", lambda device: device in NVSWITCH_DEVICE_IDS))


def pci_gpus():
    """The PCI addresses of the NVIDIA GPUs on the bus (sysfs), sorted, e.g. ["0000:3b:00.0"]."""
    return sorted(address.lower() for address in
                  _nvidia_pci_devices("class", lambda klass: klass.startswith(GPU_PCI_CLASSES)))


def pci_address(bus_id):
    """
    One spelling of a GPU's PCI address, "0000:3b:00.0", from nvidia-smi's
    "00000000:3B:00.0" (8-digit domain), sysfs' "0000:3b:00.0" or an Xid's "PCI:0000:3b:00"
    (no function: .0 assumed). None when ``bus_id`` is no PCI address.
    """
    match = re.fullmatch(r"(?:PCI:)?([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})(?:\.([0-7]))?",
                         str(bus_id or "").strip())
    if not match:
        return None
    domain, bus, device, function = match.groups()
    return f"{int(domain, 16):04x}:{bus.lower()}:{device.lower()}.{function or 0}"


def read_kmsg(path=None):
    """
    The kernel log's messages since boot (as far as the ring buffer reaches), oldest first:
    what ``dmesg`` prints. Read without blocking, as dmesg does: /dev/kmsg gives one record
    per read and EAGAIN at the end. Raises OSError where it cannot be read (not root,
    kernel.dmesg_restrict, no /dev/kmsg).
    """
    import errno  # pylint: disable=import-outside-toplevel

    chunks = []
    fd = os.open(path or KMSG, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                chunk = os.read(fd, 8192)
            except OSError as err:
                if err.errno == errno.EAGAIN:
                    break
                if err.errno == errno.EPIPE:  # records overwritten while reading: read on
                    continue
                raise
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    messages = []
    for line in b"".join(chunks).decode("utf-8", errors="replace").splitlines():
        # Continuation lines (" SUBSYSTEM=pci") carry a record's key/value dictionary.
        if line.startswith(" ") or ";" not in line:
            continue
        messages.append(line.split(";", 1)[1])
    return messages


# NVRM: Xid (PCI:0000:3b:00): 48, pid=4123, name=vectorAdd, An uncorrectable double bit error ...
_XID_RE = re.compile(r"NVRM: Xid \((PCI:[0-9a-fA-F:.]+)\): (\d+),\s*(.*)")


def parse_xids(messages):
    """The Xid errors in kernel log messages: [{"pci": "0000:3b:00.0", "xid": 48, "text": line}]."""
    found = []
    for message in messages:
        match = _XID_RE.search(message)
        if match:
            found.append({"pci": pci_address(match.group(1)), "xid": int(match.group(2)),
                          "text": match.group(0).strip()})
    return found


# The GPU facts nvidia-smi --query-gpu gives per GPU, in this order (`nvidia-smi
# --help-query-gpu` names them; [N/A] where a GPU has no such feature, e.g. page retirement
# on the H100/H200, which remap rows instead).
SMI_GPU_FIELDS = ("index", "uuid", "name", "pci.bus_id")
SMI_HEALTH_FIELDS = SMI_GPU_FIELDS + (
    "ecc.mode.current", "ecc.errors.uncorrected.volatile.total", "retired_pages.pending",
    "remapped_rows.pending", "remapped_rows.failure", "remapped_rows.uncorrectable",
)


def parse_smi_csv(text, fields):
    """
    ``nvidia-smi --query-gpu=FIELDS --format=csv,noheader,nounits`` -> one dict per GPU,
    keyed by field; "index" an int, "pci.bus_id" as :py:func:`pci_address` spells it,
    "[N/A]" / "[Not Supported]" / "N/A" as None. Lines with another number of fields
    (nvidia-smi's own messages, e.g. for a GPU it cannot reach) are skipped.
    """
    rows = []
    for line in (text or "").splitlines():
        values = [value.strip() for value in line.split(",")]
        if len(values) != len(fields) or not values[0].isdigit():
            continue
        row = {}
        for field, value in zip(fields, values):
            if value in ("[N/A]", "N/A", "[Not Supported]", "Not Supported", "[Unknown Error]"):
                value = None
            elif field == "index":
                value = int(value)
            elif field == "pci.bus_id":
                value = pci_address(value) or value
            row[field] = value
        rows.append(row)
    return rows


def _files_in(directories, suffixes):
    """The files named *suffixes directly in ``directories``, in their order, each sorted."""
    files = []
    for directory in directories:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        files.extend(os.path.join(directory, name) for name in names
                     if name.endswith(suffixes) and os.path.isfile(os.path.join(directory, name)))
    return files


def cdi_spec_files():
    """Every CDI spec file Podman reads (*.yaml, *.json directly in CDI_DIRS), in CDI_DIRS' order."""
    return _files_in(CDI_DIRS, CDI_SPEC_SUFFIXES)


def oci_hook_files():
    """Every OCI hook file Podman reads (*.json directly in OCI_HOOK_DIRS), in OCI_HOOK_DIRS' order."""
    return _files_in(OCI_HOOK_DIRS, OCI_HOOK_SUFFIX)


def device_nodes():
    """The GPU device nodes: /dev/nvidia* and the MIG capability nodes."""
    nodes = [path for path in glob.glob(os.path.join(DEV, "nvidia*")) if not os.path.isdir(path)]
    nodes.extend(glob.glob(os.path.join(DEV, "nvidia-caps", "*")))
    return sorted(nodes)


_PROC_VERSION_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)*)")
# The driver version in a versioned libcuda's name: libcuda.so.550.127.08.
_LIBCUDA_VERSION_RE = re.compile(r"/libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$")


def parse_proc_driver_version(text):
    """
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.08  ..." -> "550.127.08"
    (also the open modules' "... Open Kernel Module for x86_64  550.127.05 ...").
    """
    match = _PROC_VERSION_RE.search(text or "")
    return match.group(1) if match else None


def loaded_driver_version():
    """The loaded kernel driver's version, or None when it is not loaded."""
    text = read_file(SYS_DRIVER_VERSION)
    if text and text.strip():
        return text.strip()
    return parse_proc_driver_version(read_file(PROC_DRIVER_VERSION))


def libcuda_version(path):
    """"/usr/lib64/libcuda.so.550.127.08" -> "550.127.08"; None for other paths."""
    match = _LIBCUDA_VERSION_RE.search(str(path))
    return match.group(1) if match else None


def installed_driver_version():
    """The installed user-space driver's version (its versioned libcuda), or None."""
    versions = [v for v in (libcuda_version(p) for p in glob.glob(DRIVER_LIB_GLOB)) if v]
    return max(versions, key=version_tuple) if versions else None


def cuda_processes():
    """How many open handles CUDA programs hold on /dev/nvidia-uvm (nvidia_uvm's reference
    count; the driver's daemons do not open it): while > 0 the driver cannot be unloaded."""
    text = read_file(os.path.join(SYS_MODULE, "nvidia_uvm", "refcnt"))
    try:
        return int(text.strip()) if text else 0
    except ValueError:
        return 0


def reboot_required():
    """Why the node needs a reboot (or a driver reload) to run its installed driver, or None:
    the loaded nvidia module is of another version than the installed driver (an upgrade
    or stream switch while a process held the GPU). Reads two files; no driver call."""
    loaded, installed = loaded_driver_version(), installed_driver_version()
    if loaded and installed and loaded != installed:
        return f"the loaded NVIDIA driver is {loaded}, the installed one {installed}"
    return None


def cuda_version_string(version):
    """cuDriverGetVersion's / NVML's integer (12040) -> "12.4"."""
    return f"{version // 1000}.{version % 1000 // 10}"


# ---------------------------------------------------------------------------
# Other tools' output
# ---------------------------------------------------------------------------

_PODMAN_VERSION_RE = re.compile(r"version\s+(\S+)")


def parse_podman_version(text):
    """"podman version 4.9.4-rhel" -> "4.9.4-rhel"."""
    match = _PODMAN_VERSION_RE.search(text or "")
    return match.group(1) if match else None


def cdi_spec_driver_version(spec):
    """The driver a CDI spec was generated for: the versioned libcuda it mounts."""
    # A hand-edited spec may have any shape: what is not a mapping or a list holds nothing.
    def mapping(value):
        return value if isinstance(value, dict) else {}

    def items(value):
        return value if isinstance(value, list) else []

    edits = [mapping(spec.get("containerEdits"))]
    edits += [mapping(mapping(device).get("containerEdits")) for device in items(spec.get("devices"))]
    for edit in edits:
        for mount in items(edit.get("mounts")):
            version = libcuda_version(mapping(mount).get("hostPath", ""))
            if version:
                return version
    return None


# libselinux >= 2.7 prints "Would relabel|Relabeled PATH from OLD to NEW"; RHEL 7's
# restorecon printed "restorecon reset PATH context OLD->NEW".
_RESTORECON_RE = re.compile(r"(?:Would relabel|Relabeled|restorecon reset) (\S+) (?:from|context) ")


def parse_restorecon(output):
    """The paths ``restorecon -v`` says it relabelled (or, with -n, would relabel)."""
    found = []
    for line in output.splitlines():
        match = _RESTORECON_RE.match(line.strip())
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return found


def parse_subids(text):
    """/etc/subuid or /etc/subgid -> [(user, start, count)], malformed lines skipped."""
    entries = []
    for line in (text or "").splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and re.fullmatch("[0-9]+", parts[1]) and re.fullmatch("[0-9]+", parts[2]):
            entries.append((parts[0], int(parts[1]), int(parts[2])))
    return entries
