"""
The one check of the gpu formula's pillar. salt/gpu/map.jinja merges defaults.yaml, the
values of the OS release (osmajorreleasemap.yaml) and the pillar ``gpu`` into one dict,
hands it to ``check`` (through the execution function ``nvgpu.check_pillar``) and stops
the render with every message at once, before any state has changed the node.

Each message names one key as the pillar spells it (``gpu:driver:stream``,
``gpu:rootless_users[1]:uid``), the bad value (repr) and what is allowed. ``check``
never raises: a value of any type is either accepted or reported.

Plain Python: the execution module imports it by name (Salt puts its ``utils``
directories on ``sys.path``) and the unit tests call it directly.
"""

import re
from collections.abc import Mapping

import nvgpu_node

# The keys the SLS files and map.jinja read as mappings, parents first. One replaced by
# anything else (a YAML key left with nothing under it is null) is reported once, and
# the keys under it are not checked.
SECTIONS = ("driver", "cuda", "repos", "repos:cuda", "repos:toolkit", "runtime", "toolkit", "selinux", "validate")

DRIVER_STREAM = re.compile(r"latest|latest-dkms|latest-open|open-dkms|[0-9]+|[0-9]+-dkms|[0-9]+-open")
# dnf module stream and profile names.
MODULE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
USER_NAME_WORDS = "lowercase letters, digits, _ . -; a letter or _ first; at most 32"
USER_NUMBERS = ("uid", "gid", "subuid_start", "subuid_count")
# salt://..., file://..., https://... (a scheme) or an absolute local path.
POLICY_SOURCE = re.compile(r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://|/).+")
LOCAL_SCHEMES = ("salt", "file")
MODE_WORDS = ", ".join(nvgpu_node.MODES)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _driver_stream(value):
    # YAML reads `stream: 550` as a number; the SLS writes it back as "550".
    return (isinstance(value, str) or _is_int(value)) and DRIVER_STREAM.fullmatch(str(value))


def _profile(value):
    return value is None or value == "" or (isinstance(value, str) and MODULE_NAME.fullmatch(value))


def _argv(value):
    return isinstance(value, list) and value and all(isinstance(arg, str) and arg for arg in value)


def _number(value):
    return (_is_int(value) and value >= 0) or (isinstance(value, str) and re.fullmatch("[0-9]+", value))


def _bool(value):
    return isinstance(value, bool)


# (key path under gpu, test, what is allowed): "gpu:<path>: <value!r> is not <allowed>".
RULES = (
    ("driver:stream", _driver_stream,
     "an nvidia-driver module stream (latest, latest-dkms, latest-open, open-dkms, NNN, NNN-dkms, NNN-open; "
     "e.g. 550-dkms)"),
    ("driver:profile", _profile, "a module profile (e.g. default, fm, src), or empty for the stream's default"),
    ("driver:initramfs_cmd", _argv,
     "a non-empty list of arguments (e.g. [dracut, -f, --kver]), run without a shell with the kernel release appended"),
    ("driver:uvm", _bool, "true or false"),
    ("repos:toolkit:legacy", _bool, "true or false"),
    ("runtime:container_tools", _bool, "true or false"),
    ("toolkit:mode", lambda value: value in nvgpu_node.MODES, f"one of {MODE_WORDS}"),
    ("toolkit:rootless", lambda value: value is None or _bool(value),
     "true, false or null (null: true exactly when gpu:rootless_users is not empty)"),
    ("selinux:enabled", _bool, "true or false"),
    ("selinux:relabel", _bool, "true or false"),
    ("validate:enabled", _bool, "true or false"),
    ("validate:mode", lambda value: value is None or value in nvgpu_node.MODES,
     f"one of {MODE_WORDS}, or null (the same as gpu:toolkit:mode)"),
)


def check(gpu, osmajorrelease=None):
    """
    Every problem of the merged ``gpu`` pillar dict, one message per bad key; ``[]`` when
    it is good. ``osmajorrelease`` only words a message; without it the release is read
    from ``gpu:driver:platform`` (``platform:el8``).
    """
    if not isinstance(gpu, Mapping):
        return [f"gpu: {gpu!r} is not a mapping of the formula's keys (pillar.example shows them)"]
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
            errors.append(f"gpu:{path}: {value!r} is not a mapping{hint}")
    for path, test, allowed in RULES:
        if path.rpartition(":")[0] not in bad:
            value = _get(gpu, path)
            if not test(value):
                errors.append(f"gpu:{path}: {value!r} is not {allowed}")
    errors += _rootless_users(gpu.get("rootless_users"))
    if "repos:toolkit" not in bad:
        errors += _legacy_repos(gpu["repos"]["toolkit"].get("legacy_repos"))
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


def _rootless_users(users):
    if not isinstance(users, list):
        return [f"gpu:rootless_users: {users!r} is not a list of users ({{name: ..., uid: ...}} entries)"]
    errors = []
    seen = {}
    for index, user in enumerate(users):
        key = f"gpu:rootless_users[{index}]"
        if not isinstance(user, Mapping) or not user.get("name"):
            errors.append(f"{key}: {user!r} has no name; every rootless user is a mapping {{name: ..., uid: ...}}")
            continue
        name = user["name"]
        if not (isinstance(name, str) and USER_NAME.fullmatch(name)):
            errors.append(f"{key}:name: {name!r} is not a user name ({USER_NAME_WORDS})")
        elif name in seen:
            errors.append(f"{key}:name: {name!r} is already gpu:rootless_users[{seen[name]}]")
        else:
            seen[name] = index
        for field in USER_NUMBERS:
            if user.get(field) is not None and not _number(user[field]):
                errors.append(f"{key}:{field}: {user[field]!r} is not a number")
    return errors


def _legacy_repos(repos):
    key = "gpu:repos:toolkit:legacy_repos"
    if not isinstance(repos, Mapping):
        return [f"{key}: {repos!r} is not a mapping of repo name to {{baseurl: ..., gpgkey: ...}}"]
    return [
        f"{key}:{name}: {repo!r} is not a {{baseurl: ..., gpgkey: ...}} mapping under a repo name"
        for name, repo in repos.items()
        if not (
            isinstance(name, str)
            and isinstance(repo, Mapping)
            and isinstance(repo.get("baseurl"), str)
            and isinstance(repo.get("gpgkey"), str)
        )
    ]


def _selinux(selinux):
    if selinux.get("enabled") is not True:
        return []
    source = selinux.get("policy_source")
    policy_hash = selinux.get("policy_hash")
    match = POLICY_SOURCE.fullmatch(source) if isinstance(source, str) else None
    scheme = match.group("scheme") if match else None
    remote = bool(scheme) and scheme.lower() not in LOCAL_SCHEMES
    errors = []
    if not match:
        errors.append(
            f"gpu:selinux:policy_source: {source!r} is not where the policy package is: salt://..., a local path, "
            "or https://... with gpu:selinux:policy_hash (required while gpu:selinux:enabled is true)"
        )
    if policy_hash is not None and not isinstance(policy_hash, str):
        errors.append(f"gpu:selinux:policy_hash: {policy_hash!r} is not a string (sha256=<hex> of the .pp)")
    elif remote and not policy_hash:
        errors.append(
            f"gpu:selinux:policy_hash: {policy_hash!r} is not a hash, which is required because "
            f"gpu:selinux:policy_source is remote ({source}); give sha256=<hex> of the .pp, or serve it "
            "from salt:// or a local path"
        )
    return errors


def _container_tools(gpu, osmajorrelease):
    runtime = gpu["runtime"]
    if runtime.get("container_tools") is not True:
        return []
    stream = runtime.get("container_tools_stream")
    if not stream:
        release = osmajorrelease
        if release is None and isinstance(gpu.get("driver"), Mapping):
            found = re.fullmatch(r"platform:el([0-9]+)", str(gpu["driver"].get("platform")))
            release = found.group(1) if found else None
        rhel = f"RHEL {release}" if release is not None else "this RHEL release"
        return [
            f"gpu:runtime:container_tools: True, but {rhel} has no container-tools module stream "
            f"(gpu:runtime:container_tools_stream is unset); set it false to install {runtime.get('package')}"
        ]
    # YAML reads `container_tools_stream: 4.0` as a number; the SLS writes it back as "4.0".
    if isinstance(stream, bool) or not isinstance(stream, (str, int, float)) or not MODULE_NAME.fullmatch(str(stream)):
        return [f"gpu:runtime:container_tools_stream: {stream!r} is not a module stream (e.g. rhel8, 4.0)"]
    return []
