"""
The one check of the gpu formula's pillar. salt/gpu/map.jinja merges defaults.yaml, the
values of the OS release (osmajorreleasemap.yaml) and the pillar ``gpu`` into one dict,
hands it to ``check`` (through the execution function ``nvgpu.check_pillar``) and, on any
message, renders one failing state instead of the formula (salt/gpu/rejected.jinja), so
that nothing has changed the node when the run stops.

Every key the formula reads has a rule here (``KEYS`` lists them; a key it does not
know is a typo and reported as one). Each message names one key as the pillar spells
it (``gpu:driver:stream``, ``gpu:rootless_users[1]:uid``), the bad value (repr,
shortened) and what is allowed. ``check`` never raises: a value of any type is either
accepted or reported.

The formula renders most values into its SLS files as plain YAML, so every string rule
below is a full match of a small ASCII alphabet: no whitespace, no control characters,
no YAML or shell syntax, no trailing newline.

Plain Python: the execution module imports it by name (Salt puts its ``utils``
directories on ``sys.path``) and the unit tests call it directly.
"""

import math
import posixpath
import re
from collections.abc import Mapping

import nvgpu_node

# ---------------------------------------------------------------------------
# The shape of the formula's `gpu` dict
# ---------------------------------------------------------------------------

# The keys the SLS files and map.jinja read as mappings, parents first. One replaced by
# anything else (a YAML key left with nothing under it is null) is reported once, and
# the keys under it are not checked.
SECTIONS = ("driver", "cuda", "repos", "repos:cuda", "repos:toolkit", "runtime", "toolkit", "selinux", "validate")

# Every key the formula reads, by section ("" is `gpu` itself). Anything else in the
# merged dict came from pillar and is a typo (`strem: 550` would otherwise be ignored).
KEYS = {
    "": ("driver", "cuda", "repos", "runtime", "toolkit", "selinux", "rootless_users", "validate"),
    "driver": ("module", "stream", "profile", "platform", "streams", "package", "branch", "uvm", "nouveau_blacklist_file",
               "initramfs_cmd", "fabricmanager", "persistenced", "reload"),
    "cuda": ("package", "version"),
    "repos": ("cuda", "toolkit", "allow_unsigned"),
    "repos:cuda": ("name", "baseurl", "gpgkey", "gpgcheck", "repo_gpgcheck"),
    "repos:toolkit": ("legacy", "baseurl", "gpgkey", "gpgcheck", "repo_gpgcheck", "legacy_repos"),
    "runtime": ("container_tools", "container_tools_stream", "container_tools_profile", "package"),
    "toolkit": ("package", "mode", "cdi_owner", "rootless", "hook_path", "hook_binary", "cdi_path"),
    "selinux": ("enabled", "method", "policy_source", "policy_hash", "module_name", "relabel"),
    "validate": ("enabled", "image", "mode", "timeout", "pull", "gpus", "when"),
}
USER_KEYS = ("name", "uid", "gid", "subuid_start", "subuid_count")
LEGACY_REPO_KEYS = ("baseurl", "gpgkey")

# ---------------------------------------------------------------------------
# Alphabets (ASCII only: `\d` and `\w` would take any Unicode digit or letter)
# ---------------------------------------------------------------------------

# RHEL 10's driver branches (dnf versionlock '*nvidia*580*'), or latest: no lock.
DRIVER_BRANCH = re.compile(r"latest|[0-9]{3,6}")
DRIVER_STREAM = re.compile(r"latest|latest-dkms|latest-open|open-dkms|[0-9]+|[0-9]+-dkms|[0-9]+-open")
# dnf module names, streams and profiles.
MODULE_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,99}")
PLATFORM = re.compile(r"platform:el[0-9]{1,3}")
# RPM package names as dnf takes them: no leading '-' (an option), no glob.
PACKAGE = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,199}")
# [epoch:]version[-release], optionally after a comparison (pkg.installed takes ">=12.4").
PACKAGE_VERSION = re.compile(r"(?:[<>]=?|==?)?[0-9A-Za-z][0-9A-Za-z._+~^:-]{0,99}")
# dnf repo ids: ASCII letters, digits, - _ . :
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
# A URL: a scheme, then RFC 3986 characters ($ for dnf's $basearch) less the ones no
# mirror needs and a shell would read (! ' ( ) * ;); no space, no quote.
URL_CHARS = r"[A-Za-z0-9._~:/?#\[\]@$&+,=%-]{1,2000}"
URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,15})://" + URL_CHARS)
REPO_SCHEMES = ("https", "http", "ftp", "file")
# A key fetched over plain http could be swapped in transit, and with it every signature.
GPGKEY_SCHEMES = ("https", "file")
# salt://..., file://..., https://... (a scheme) or an absolute local path.
POLICY_SOURCE = re.compile(r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,15})://|/)" + URL_CHARS)
LOCAL_SCHEMES = ("salt", "file")
# What Salt's file.check_hash takes; md5 and sha1 are too weak for a kernel policy.
POLICY_HASH = re.compile(r"sha256=[0-9a-fA-F]{64}|sha384=[0-9a-fA-F]{96}|sha512=[0-9a-fA-F]{128}")
SELINUX_MODULE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
USER_NAME_WORDS = "lowercase letters, digits, _ . -; a letter or _ first; at most 32; not root"
# One path component: no leading dot (so no '.', '..' or hidden temp files), no space.
PATH_COMPONENT = re.compile(r"[A-Za-z0-9_+@%,=~-][A-Za-z0-9_.+@%,=~-]{0,254}")
# An argument of initramfs_cmd: anything printable but no control character (a NUL
# cannot be passed to a program; a newline has no business in an argument).
ARGUMENT = re.compile(r"[^\x00-\x1f\x7f]{1,4096}")

# OCI / Docker image reference (github.com/distribution/reference): a registry host
# (a '.' or ':' in it, or localhost), a lowercase path, an optional tag, an optional
# digest. Short names are refused: Podman resolves them by registries.conf, which
# differs between hosts and, in enforcing mode, asks interactively.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_PART = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_HOST_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
IMAGE = re.compile(
    rf"(?P<name>(?P<registry>{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]{{1,5}})?)/{_PATH_PART}(?:/{_PATH_PART})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}))?"
)
IMAGE_WORDS = (
    "an image reference REGISTRY/NAME[:TAG][@sha256:DIGEST] with a registry host "
    "(e.g. docker.io/mirrorgooglecontainers/cuda-vector-add:v0.1); lowercase name, no spaces"
)

# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------

# login.defs on RHEL: regular users from UID_MIN 1000. Above 2**31 - 1 many tools read
# a uid as a signed 32-bit number and break.
ID_MIN, ID_LIMIT = 1000, 2**31
# Subordinate ids start above every real uid (SUB_UID_MIN 100000 on RHEL), so that no
# container id maps onto a host account. A range holds at least one id and at most
# 2**31 (rootless Podman needs 65536, the default; whole-range "nested" setups use more,
# never more than half the id space); it must end below 2**32 - 1, which is (uid_t)-1.
SUBID_MIN = 100000
SUBID_COUNT_MAX = 2**31
SUBID_END_LIMIT = 2**32 - 1
SUBID_COUNT_DEFAULT = 65536
# The validation run: a positive number of seconds, at most a day.
TIMEOUT_MAX = 86400
SHOW_MAX = 200


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(value):
    """A non-negative integer from an int or a plain decimal string ("2001"); else None.
    A leading zero is refused: the SLS writes the value back as YAML, which reads
    ``02001`` as an octal number."""
    if _is_int(value):
        return value
    if isinstance(value, str) and re.fullmatch(r"0|[1-9][0-9]{0,18}", value):
        return int(value)
    return None


def _show(value):
    """repr, shortened; never raises (a huge int or an odd object is still reported)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a value that cannot be shown is still a bad value
        text = f"<{type(value).__name__}>"
    return text if len(text) <= SHOW_MAX else text[:SHOW_MAX] + f"... ({len(text)} characters)"


def _match(pattern, value):
    return isinstance(value, str) and pattern.fullmatch(value) is not None


# ---------------------------------------------------------------------------
# Rules of one value
# ---------------------------------------------------------------------------


def _bool(value):
    return isinstance(value, bool)


def _driver_stream(value):
    # YAML reads `stream: 550` as a number; the SLS writes it back as "550".
    if _is_int(value):
        return 0 <= value < 10**6
    return _match(DRIVER_STREAM, value)


def _driver_branch(value):
    # YAML reads `branch: 580` as a number; the SLS writes it back as "580".
    if _is_int(value):
        return 100 <= value < 10**6
    return _match(DRIVER_BRANCH, value)


def _profile(value):
    return value is None or value == "" or _match(MODULE_NAME, value)


def _argv(value):
    return (
        isinstance(value, list)
        and bool(value)
        and all(_match(ARGUMENT, arg) for arg in value)
        and not value[0].startswith("-")
    )


def _package_version(value):
    # `version: 12.10` in YAML is the float 12.1: a version is a string (or a whole number).
    if value is None or value == "":
        return True
    if _is_int(value):
        return value >= 0
    return _match(PACKAGE_VERSION, value)


def _url(value, schemes):
    if not isinstance(value, str):
        return False
    match = URL.fullmatch(value)
    return bool(match) and match.group("scheme").lower() in schemes


def _absolute_path(value):
    """An absolute, normal path: no '.', '..' or empty component, no hidden component,
    nothing but letters, digits and _ . + @ % , = ~ -."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 4096:
        return False
    return all(PATH_COMPONENT.fullmatch(part) for part in value[1:].split("/"))


def _file_in(value, directories, suffixes):
    """A file directly in one of ``directories`` (the tool reads no subdirectory) whose
    name ends with one of ``suffixes``."""
    if not _absolute_path(value):
        return False
    name = posixpath.basename(value)
    return (
        posixpath.dirname(value) in directories
        and any(name.endswith(suffix) and len(name) > len(suffix) for suffix in suffixes)
    )


def _nullable(test):
    return lambda value: value is None or test(value)


def _in_dirs_words(directories, suffixes):
    return (
        f"an absolute path of a {' or '.join(suffixes)} file directly in {' or '.join(directories)}, "
        "where the tool reads it (no '..', no spaces)"
    )


def _image(value):
    if not isinstance(value, str) or len(value) > 512:
        return False
    match = IMAGE.fullmatch(value)
    if not match or len(match.group("name")) > 255:
        return False
    registry = match.group("registry")
    return "." in registry or ":" in registry or registry == "localhost"


def _timeout(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and 0 < value <= TIMEOUT_MAX
    except OverflowError:  # an int too large for a float
        return False


def _rules():
    """(key path under gpu, test, what is allowed): "gpu:<path>: <value> is not <allowed>".
    Built when checked, so that the directories are nvgpu_node's at that moment."""
    bool_words = "true or false (a YAML boolean, not a string or a number)"
    modes = ", ".join(nvgpu_node.MODES)
    return (
        ("driver:module", lambda value: _match(MODULE_NAME, value), "a dnf module name (e.g. nvidia-driver)"),
        ("driver:stream", _driver_stream,
         "an nvidia-driver module stream (latest, latest-dkms, latest-open, open-dkms, NNN, NNN-dkms, NNN-open; "
         "e.g. 550-dkms)"),
        ("driver:profile", _profile, "a module profile (e.g. default, fm, src), or empty for the stream's default"),
        ("driver:platform", lambda value: _match(PLATFORM, value), "a module platform id (platform:el8, platform:el9)"),
        ("driver:streams", _bool, bool_words + " (true where the release has nvidia-driver module streams)"),
        ("driver:package", lambda value: _match(PACKAGE, value), "a package name (e.g. nvidia-open)"),
        ("driver:branch", _driver_branch, "latest, or a driver branch of three or more digits (e.g. 580)"),
        ("driver:uvm", _bool, bool_words),
        ("driver:fabricmanager", lambda value: value == "auto" or _bool(value),
         "auto (where NVSwitches are on the PCI bus), true or false"),
        ("driver:persistenced", _bool, bool_words),
        ("driver:reload", lambda value: isinstance(value, str) and value in ("auto", "never"),
         "auto (reload the driver after an upgrade when no process holds the GPU, else reboot required) "
         "or never (always wait for a reboot)"),
        ("driver:nouveau_blacklist_file",
         lambda value: _file_in(value, nvgpu_node.MODPROBE_DIRS, (nvgpu_node.MODPROBE_SUFFIX,)),
         _in_dirs_words(nvgpu_node.MODPROBE_DIRS, (nvgpu_node.MODPROBE_SUFFIX,))
         + " (e.g. /etc/modprobe.d/blacklist-nouveau.conf)"),
        ("driver:initramfs_cmd", _argv,
         "a non-empty list of arguments (e.g. [dracut, -f, --kver]), none empty or with control characters, "
         "the first not an option; run without a shell with the kernel release appended"),
        ("cuda:package", lambda value: _match(PACKAGE, value), "a package name (e.g. cuda, cuda-toolkit-12-4)"),
        ("cuda:version", _package_version,
         "a package version as a string (e.g. '12.4.1-1'; quoted, since YAML reads 12.10 as 12.1), or empty"),
        ("repos:allow_unsigned", _bool, bool_words),
        ("repos:cuda:name", lambda value: _match(REPO_ID, value),
         "a repo id (ASCII letters, digits, - _ . :; e.g. cuda-rhel8-x86_64)"),
        ("repos:toolkit:legacy", _bool, bool_words),
        ("runtime:container_tools", _bool, bool_words),
        ("runtime:container_tools_profile", lambda value: _match(MODULE_NAME, value),
         "a module profile (e.g. common)"),
        ("runtime:package", lambda value: _match(PACKAGE, value), "a package name (e.g. podman)"),
        ("toolkit:package", lambda value: _match(PACKAGE, value), "a package name (e.g. nvidia-container-toolkit)"),
        ("toolkit:mode", lambda value: value in nvgpu_node.MODES, f"one of {modes}"),
        ("toolkit:cdi_owner", lambda value: value in nvgpu_node.CDI_OWNERS,
         "one of auto (refresh where the toolkit ships nvidia-cdi-refresh, else formula), formula, refresh"),
        ("toolkit:rootless", _nullable(_bool),
         "true, false or null (null: true exactly when gpu:rootless_users is not empty)"),
        ("toolkit:hook_path",
         _nullable(lambda value: _file_in(value, nvgpu_node.OCI_HOOK_DIRS, (nvgpu_node.OCI_HOOK_SUFFIX,))),
         _in_dirs_words(nvgpu_node.OCI_HOOK_DIRS, (nvgpu_node.OCI_HOOK_SUFFIX,))
         + f", or null for {nvgpu_node.OCI_HOOK_PATH}"),
        ("toolkit:hook_binary", _nullable(_absolute_path),
         f"an absolute path (no '..', no spaces), or null for {nvgpu_node.OCI_HOOK_BINARY}"),
        ("toolkit:cdi_path",
         _nullable(lambda value: _file_in(value, nvgpu_node.CDI_DIRS, nvgpu_node.CDI_SPEC_SUFFIXES)),
         _in_dirs_words(nvgpu_node.CDI_DIRS, nvgpu_node.CDI_SPEC_SUFFIXES)
         + f", or null for {nvgpu_node.CDI_SPEC_PATH}"),
        ("selinux:enabled", _bool, bool_words),
        ("selinux:method", lambda value: value in nvgpu_node.SELINUX_METHODS,
         "one of auto (the boolean container_use_xserver_devices where the node's container-selinux "
         "defines it, else the policy module), boolean, module"),
        ("selinux:module_name", lambda value: _match(SELINUX_MODULE, value),
         "an SELinux module name as semodule -l shows it (e.g. nvidia-container)"),
        ("selinux:relabel", _bool, bool_words),
        ("validate:enabled", _bool, bool_words),
        ("validate:image", _nullable(_image), IMAGE_WORDS + f", or null for {nvgpu_node.DEFAULT_IMAGE}"),
        ("validate:mode", lambda value: value is None or value in nvgpu_node.MODES,
         f"one of {modes}, or null (the same as gpu:toolkit:mode)"),
        ("validate:timeout", _timeout, f"a number of seconds above 0 and at most {TIMEOUT_MAX}"),
        ("validate:pull", lambda value: value in nvgpu_node.PULL_POLICIES,
         f"one of {', '.join(nvgpu_node.PULL_POLICIES)} (Podman's --pull)"),
        ("validate:gpus", lambda value: value in ("all", "each"),
         "all (one check that sees every GPU) or each (one check per GPU)"),
        ("validate:when", lambda value: value in nvgpu_node.VALIDATE_WHEN,
         f"one of {', '.join(nvgpu_node.VALIDATE_WHEN)} (changed: only when what the result depends on changed)"),
    )


# ---------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------


def check(gpu, osmajorrelease=None):
    """
    Every problem of the merged ``gpu`` pillar dict, one message per bad key; ``[]`` when
    it is good. ``osmajorrelease`` only words a message; without it the release is read
    from ``gpu:driver:platform`` (``platform:el8``).
    """
    if not isinstance(gpu, Mapping):
        return [f"gpu: {_show(gpu)} is not a mapping of the formula's keys (pillar.example shows them)"]
    errors = []
    bad = set()
    for path in SECTIONS:
        if path.rpartition(":")[0] in bad:
            bad.add(path)
            continue
        value = _get(gpu, path)
        if not isinstance(value, Mapping):
            bad.add(path)
            hint = " (a key with nothing under it is null: give it keys or remove it)" if value is None else ""
            errors.append(f"gpu:{path}: {_show(value)} is not a mapping{hint}")
    for section, known in KEYS.items():
        if section not in bad:
            errors += _unknown(f"gpu:{section}" if section else "gpu", _get(gpu, section) if section else gpu, known)
    for path, test, allowed in _rules():
        if path.rpartition(":")[0] not in bad:
            value = _get(gpu, path)
            if not test(value):
                errors.append(f"gpu:{path}: {_show(value)} is not {allowed}")
    errors += _rootless_users(gpu.get("rootless_users"))
    if "repos" not in bad:
        errors += _repos(gpu["repos"], bad)
    if "selinux" not in bad:
        errors += _selinux(gpu["selinux"])
    if "runtime" not in bad:
        errors += _container_tools(gpu, osmajorrelease)
    return errors


def _get(gpu, path):
    value = gpu
    for key in path.split(":"):
        value = value.get(key)
    return value


def _key(value):
    return value if isinstance(value, str) else _show(value)


def _unknown(where, mapping, known):
    return [
        f"{where}:{_key(key)}: {_show(value)} is not a key of the formula ({where} has: {', '.join(known)})"
        for key, value in mapping.items()
        if key not in known
    ]


# ---------------------------------------------------------------------------
# Repositories and their signatures
# ---------------------------------------------------------------------------

# The repos whose metadata the formula checks by default (NVIDIA signs the toolkit
# repo's repomd.xml; its CUDA repo file does not turn repo_gpgcheck on).
SIGNED_METADATA = ("toolkit",)
OPT_OUT = "gpu:repos:allow_unsigned"


def _flag(value):
    """0 or 1 from 0, 1, false or true; else None."""
    if isinstance(value, bool):
        return int(value)
    if _is_int(value) and value in (0, 1):
        return value
    return None


def _repos(repos, bad):
    errors = []
    allow_unsigned = repos.get("allow_unsigned") is True
    toolkit_names = []
    for repo in ("cuda", "toolkit"):
        if f"repos:{repo}" in bad:
            continue
        settings = repos[repo]
        key = f"gpu:repos:{repo}"
        checks = {}
        for field in ("gpgcheck", "repo_gpgcheck"):
            value = settings.get(field)
            flag = _flag(value)
            checks[field] = flag
            if flag is None:
                errors.append(f"{key}:{field}: {_show(value)} is not 1 or 0")
            elif flag == 0 and not allow_unsigned and (field == "gpgcheck" or repo in SIGNED_METADATA):
                what = "packages" if field == "gpgcheck" else "repository metadata"
                errors.append(
                    f"{key}:{field}: {_show(value)} turns off the signature check of {what}; it stays 1 unless "
                    f"{OPT_OUT} is true (then every run says that it is off)"
                )
        for field in ("baseurl", "gpgkey"):
            errors += _repo_url(f"{key}:{field}", settings.get(field), field, checks)
        if repo == "toolkit":
            toolkit_names.append("nvidia-container-toolkit")
            errors += _legacy_repos(settings.get("legacy_repos"), checks, toolkit_names)
    if "repos:cuda" not in bad and "repos:toolkit" not in bad:
        name = repos["cuda"].get("name")
        if isinstance(name, str) and name in toolkit_names:
            errors.append(
                f"gpu:repos:cuda:name: {_show(name)} is already a toolkit repo's name; every repo needs its own"
            )
    return errors


def _repo_url(key, value, field, checks):
    if field == "baseurl":
        if not _url(value, REPO_SCHEMES):
            return [f"{key}: {_show(value)} is not a repository URL ({', '.join(REPO_SCHEMES)}; no spaces)"]
        return []
    if not any(checks.values()) and value in ("", None):
        return []  # nothing is checked, so no key is needed
    if not _url(value, GPGKEY_SCHEMES):
        return [
            f"{key}: {_show(value)} is not the URL of the repo's signing key (https:// or file://: a key "
            "fetched over plain http could be swapped in transit)"
        ]
    return []


def _legacy_repos(repos, checks, names):
    key = "gpu:repos:toolkit:legacy_repos"
    if not isinstance(repos, Mapping):
        return [f"{key}: {_show(repos)} is not a mapping of repo name to {{baseurl: ..., gpgkey: ...}}"]
    errors = []
    for name, repo in repos.items():
        where = f"{key}:{_key(name)}"
        if not _match(REPO_ID, name) or name == "nvidia-container-toolkit":
            errors.append(
                f"{where}: {_show(name)} is not a repo id for a legacy repo (ASCII letters, digits, - _ . :; "
                "not nvidia-container-toolkit, the current repo's id)"
            )
            continue
        names.append(name)
        if not isinstance(repo, Mapping):
            errors.append(f"{where}: {_show(repo)} is not a {{baseurl: ..., gpgkey: ...}} mapping under a repo name")
            continue
        errors += _unknown(where, repo, LEGACY_REPO_KEYS)
        for field in LEGACY_REPO_KEYS:
            errors += _repo_url(f"{where}:{field}", repo.get(field), field, checks)
    return errors


# ---------------------------------------------------------------------------
# Rootless users
# ---------------------------------------------------------------------------


def _rootless_users(users):
    if not isinstance(users, list):
        return [f"gpu:rootless_users: {_show(users)} is not a list of users ({{name: ..., uid: ...}} entries)"]
    errors = []
    seen = {"name": {}, "uid": {}, "gid": {}}
    ranges = []  # (start, end, index) of the users with a subuid_start
    ids = []  # (field, value, index) of every uid and gid, against the ranges
    for index, user in enumerate(users):
        key = f"gpu:rootless_users[{index}]"
        if not isinstance(user, Mapping) or not user.get("name"):
            errors.append(f"{key}: {_show(user)} has no name; every rootless user is a mapping {{name: ..., uid: ...}}")
            continue
        errors += _unknown(key, user, USER_KEYS)
        name = user["name"]
        if not _match(USER_NAME, name) or name == "root":
            errors.append(f"{key}:name: {_show(name)} is not a user name ({USER_NAME_WORDS})")
        elif name in seen["name"]:
            errors.append(f"{key}:name: {_show(name)} is already gpu:rootless_users[{seen['name'][name]}]")
        else:
            seen["name"][name] = index
        numbers = {}
        for field in USER_KEYS[1:]:
            value = user.get(field)
            if value is None:
                continue
            number = _as_int(value)
            problem = _user_number(field, number)
            if problem:
                errors.append(f"{key}:{field}: {_show(value)} is not {problem}")
                continue
            numbers[field] = number
            if field in ("uid", "gid"):
                if number in seen[field]:
                    errors.append(f"{key}:{field}: {_show(value)} is already gpu:rootless_users[{seen[field][number]}]'s")
                else:
                    seen[field][number] = index
                    ids.append((field, number, index))
        if "subuid_start" in numbers:
            start = numbers["subuid_start"]
            count = numbers.get("subuid_count", SUBID_COUNT_DEFAULT)
            if start + count > SUBID_END_LIMIT:
                field = "subuid_count" if "subuid_count" in numbers else "subuid_start"
                errors.append(
                    f"{key}:{field}: {_show(user[field])} is not possible: ids {start}-{start + count - 1} end "
                    f"past {SUBID_END_LIMIT - 1}, the last id there is"
                )
                continue
            for other_start, other_end, other in ranges:
                if start < other_end and other_start < start + count:
                    errors.append(
                        f"{key}:subuid_start: {start} (ids {start}-{start + count - 1}) overlaps "
                        f"gpu:rootless_users[{other}]'s ids {other_start}-{other_end - 1}; each user needs its own range"
                    )
                    break
            else:
                ranges.append((start, start + count, index))
    for field, number, index in ids:
        for start, end, owner in ranges:
            if start <= number < end:
                errors.append(
                    f"gpu:rootless_users[{index}]:{field}: {number} lies in gpu:rootless_users[{owner}]'s "
                    f"subordinate ids {start}-{end - 1}; a container id would be that account"
                )
    return errors


def _user_number(field, number):
    """What ``field`` must be when ``number`` (an int, or None for a non-number) is not it."""
    if field in ("uid", "gid"):
        if number is None or not ID_MIN <= number < ID_LIMIT:
            return f"a {field} of a regular user (a whole number from {ID_MIN} to {ID_LIMIT - 1})"
    elif field == "subuid_start":
        if number is None or not SUBID_MIN <= number < SUBID_END_LIMIT:
            return f"a subordinate id start (a whole number from {SUBID_MIN}, above the system's uids)"
    elif number is None or not 1 <= number <= SUBID_COUNT_MAX:
        return f"a subordinate id count (a whole number from 1 to {SUBID_COUNT_MAX}; rootless Podman needs 65536)"
    return None


# ---------------------------------------------------------------------------
# SELinux and the container runtime
# ---------------------------------------------------------------------------


def _selinux(selinux):
    if selinux.get("enabled") is not True:
        return []
    source = selinux.get("policy_source")
    policy_hash = selinux.get("policy_hash")
    match = POLICY_SOURCE.fullmatch(source) if isinstance(source, str) else None
    scheme = match.group("scheme") if match else None
    remote = bool(scheme) and scheme.lower() not in LOCAL_SCHEMES
    # Only the module needs a policy package: the boolean none, auto only on a node whose
    # policy lacks the boolean (the state then says so). Empty is no error for those two.
    optional = source in (None, "") and selinux.get("method") in ("auto", "boolean")
    errors = []
    if not optional and (not match or (scheme is None and not _absolute_path(source))):
        errors.append(
            f"gpu:selinux:policy_source: {_show(source)} is not where the policy package is: salt://..., an "
            "absolute local path, or https://... with gpu:selinux:policy_hash (required while "
            "gpu:selinux:enabled is true and gpu:selinux:method is module)"
        )
    if policy_hash not in (None, "") and not _match(POLICY_HASH, policy_hash):
        errors.append(
            f"gpu:selinux:policy_hash: {_show(policy_hash)} is not a hash of the .pp "
            "(sha256=<64 hex digits>, or sha384= / sha512=)"
        )
    elif remote and not policy_hash:
        errors.append(
            f"gpu:selinux:policy_hash: {_show(policy_hash)} is not a hash, which is required because "
            f"gpu:selinux:policy_source is remote ({source}); give sha256=<hex> of the .pp, or serve it "
            "from salt:// or a local path"
        )
    return errors


def _container_tools(gpu, osmajorrelease):
    runtime = gpu["runtime"]
    stream = runtime.get("container_tools_stream")
    # YAML reads `container_tools_stream: 4.0` as a number; the SLS writes it back as "4.0".
    if stream not in (None, "") and not (
        (isinstance(stream, str) or (isinstance(stream, (int, float)) and not isinstance(stream, bool)))
        and _match(MODULE_NAME, _text(stream))
    ):
        return [f"gpu:runtime:container_tools_stream: {_show(stream)} is not a module stream (e.g. rhel8, 4.0)"]
    if runtime.get("container_tools") is not True or stream:
        return []
    release = osmajorrelease
    if release is None and isinstance(gpu.get("driver"), Mapping):
        found = re.fullmatch(r"platform:el([0-9]+)", _text(gpu["driver"].get("platform")))
        release = found.group(1) if found else None
    rhel = f"RHEL {release}" if release is not None else "this RHEL release"
    package = runtime.get("package")
    return [
        f"gpu:runtime:container_tools: True, but {rhel} has no container-tools module stream "
        f"(gpu:runtime:container_tools_stream is unset); set it false to install "
        f"{package if _match(PACKAGE, package) else 'the runtime package'}"
    ]


def _text(value):
    try:
        return str(value)
    except (ValueError, OverflowError):  # an int past Python's digit limit
        return ""
