"""
Property-based tests (hypothesis): generated pillars through the pillar check
(_utils/nvgpu_pillar.py) and generated tool output through the parsers of
_utils/nvgpu_node.py, _modules/nvgpu.py and _modules/nvgpu_toolkit.py.

- A valid pillar is accepted; a pillar with one bad value is rejected naming that key;
  any value of any type anywhere is accepted or reported, never raised.
- A parser given what its tool prints gives the value back; given anything else it
  answers (None, [], a result dict) and never raises an unexplained exception.

Examples are few per property (the unit suite runs in seconds) and derandomized, so a
run is repeatable; set ``NVGPU_HYPOTHESIS_EXAMPLES`` (e.g. 2000) to search harder, with
random examples.
"""

import json
import os
import string
import tempfile

import nvgpu_node
import nvgpu_pillar
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from salt.exceptions import CommandExecutionError

from tests.unit.loader import load
from tests.unit.utils.test_nvgpu_pillar import merged

EXAMPLES = os.environ.get("NVGPU_HYPOTHESIS_EXAMPLES")
settings.register_profile(
    "nvgpu", max_examples=int(EXAMPLES or 60), deadline=None, derandomize=not EXAMPLES, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("nvgpu")

NVGPU = load("_modules/nvgpu.py")
TOOLKIT = load("_modules/nvgpu_toolkit.py")

# ---------------------------------------------------------------------------- building blocks

ALNUM = string.ascii_letters + string.digits
LOWER = string.ascii_lowercase + string.digits


def ident(first=ALNUM + "_", rest=ALNUM + "_.+-", max_size=16):
    return st.builds(lambda a, b: a + b, st.sampled_from(first), st.text(rest, max_size=max_size))


def flag_case(word):
    """``https`` in any letter case: URL schemes are case-insensitive."""
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(word, upper))
    )


component = ident(first=ALNUM + "_", rest=ALNUM + "_.+-@%,=~")
host = st.lists(st.text(LOWER, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)
url_path = st.lists(st.text(ALNUM + "-._~$", min_size=1, max_size=8), max_size=3).map(lambda parts: "/".join(parts))


def url(schemes):
    return st.builds(lambda scheme, h, p: f"{scheme}://{h}/{p}", st.sampled_from(schemes).flatmap(flag_case), host,
                     url_path)


def file_in(directories, suffixes):
    return st.builds(lambda d, name, suffix: f"{d}/{name}{suffix}", st.sampled_from(directories), component,
                     st.sampled_from(suffixes))


absolute_path = st.lists(component, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
path_part = st.builds(lambda a, seps: a + "".join(s + b for s, b in seps), st.text(LOWER, min_size=1, max_size=6),
                      st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--"]),
                                         st.text(LOWER, min_size=1, max_size=6)), max_size=2))
image = st.builds(
    lambda registry, port, parts, tag, digest: (
        f"{registry}{port}/{'/'.join(parts)}{(':' + tag) if tag else ''}{('@sha256:' + digest) if digest else ''}"
    ),
    st.one_of(host.map(lambda h: h + ".io"), st.just("localhost")),
    st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")),
    st.lists(path_part, min_size=1, max_size=3),
    st.one_of(st.none(), ident(first=ALNUM + "_", rest=ALNUM + "_.-", max_size=20)),
    st.one_of(st.none(), st.text("0123456789abcdef", min_size=64, max_size=64)),
)
flags = st.sampled_from([0, 1, True, False])
on = st.sampled_from([1, True])


@st.composite
def users(draw):
    """Rootless users with unique names, uids and gids and non-overlapping ranges."""
    names = draw(st.lists(ident(first=string.ascii_lowercase + "_", rest=LOWER + "_.-", max_size=10),
                          max_size=4, unique=True))
    assume("root" not in names)
    ids = draw(st.lists(st.integers(1000, 99999), min_size=2 * len(names), max_size=2 * len(names), unique=True))
    cursor = nvgpu_pillar.SUBID_MIN
    result = []
    for index, name in enumerate(names):
        user = {"name": name}
        if draw(st.booleans()):
            user["uid"] = draw(st.sampled_from([ids[2 * index], str(ids[2 * index])]))
        if draw(st.booleans()):
            user["gid"] = ids[2 * index + 1]
        if draw(st.booleans()):
            start = cursor + draw(st.integers(0, 10**6))
            count = draw(st.integers(1, 10**6))
            user["subuid_start"], user["subuid_count"] = start, count
            cursor = start + count
        elif draw(st.booleans()):
            user["subuid_count"] = draw(st.integers(1, nvgpu_pillar.SUBID_COUNT_MAX))
        result.append(user)
    return result


@st.composite
def repos(draw):
    allow = draw(st.booleans())
    checks = flags if allow else on
    legacy_names = draw(st.lists(ident(first=ALNUM, rest=ALNUM + "_.:-").map(lambda n: "l" + n), max_size=3,
                                 unique=True))
    return {
        "allow_unsigned": allow,
        "cuda": {"name": "c" + draw(ident(first=ALNUM, rest=ALNUM + "_.:-")),
                 "baseurl": draw(url(nvgpu_pillar.REPO_SCHEMES)), "gpgkey": draw(url(nvgpu_pillar.GPGKEY_SCHEMES)),
                 "gpgcheck": draw(checks), "repo_gpgcheck": draw(flags)},
        "toolkit": {"legacy": draw(st.booleans()), "baseurl": draw(url(nvgpu_pillar.REPO_SCHEMES)),
                    "gpgkey": draw(url(nvgpu_pillar.GPGKEY_SCHEMES)), "gpgcheck": draw(checks),
                    "repo_gpgcheck": draw(checks),
                    "legacy_repos": {name: {"baseurl": draw(url(nvgpu_pillar.REPO_SCHEMES)),
                                            "gpgkey": draw(url(nvgpu_pillar.GPGKEY_SCHEMES))}
                                     for name in legacy_names}},
    }


policy_hash = st.builds(lambda algo, digits: f"{algo}={digits}", st.just("sha256"),
                        st.text("0123456789abcdefABCDEF", min_size=64, max_size=64))


@st.composite
def selinux(draw):
    remote = draw(st.booleans())
    source = draw(url(("https", "http", "ftp")) if remote else
                  st.one_of(absolute_path, url(("salt", "file"))))
    return {
        "enabled": draw(st.booleans()),
        "policy_source": source,
        "policy_hash": draw(policy_hash) if remote else draw(st.one_of(st.none(), st.just(""), policy_hash)),
        "module_name": draw(ident(first=ALNUM + "_", rest=ALNUM + "_.-")),
        "relabel": draw(st.booleans()),
    }


stream = st.one_of(
    st.sampled_from(["latest", "latest-dkms", "latest-open", "open-dkms"]),
    st.integers(0, 999999).flatmap(lambda n: st.sampled_from([n, str(n), f"{n}-dkms", f"{n}-open"])),
)
initramfs_cmd = st.lists(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12),
                         min_size=1, max_size=4).filter(lambda argv: not argv[0].startswith("-"))

SECTION_VALUES = {
    "driver": st.fixed_dictionaries({}, optional={
        "module": ident(), "stream": stream, "profile": st.one_of(st.none(), st.just(""), ident()),
        "platform": st.integers(1, 999).map(lambda n: f"platform:el{n}"), "uvm": st.booleans(),
        "nouveau_blacklist_file": file_in(nvgpu_node.MODPROBE_DIRS, (nvgpu_node.MODPROBE_SUFFIX,)),
        "initramfs_cmd": initramfs_cmd,
    }),
    "cuda": st.fixed_dictionaries({}, optional={
        "package": ident(), "version": st.one_of(st.none(), st.just(""), st.integers(0, 10**6),
                                                 ident(first=ALNUM, rest=ALNUM + "._+~^:-"))}),
    "repos": repos(),
    "runtime": st.fixed_dictionaries({}, optional={
        "container_tools": st.just(False), "package": ident(), "container_tools_profile": ident(),
        "container_tools_stream": st.one_of(st.none(), ident(), st.just(4.0))}),
    "toolkit": st.fixed_dictionaries({}, optional={
        "package": ident(), "mode": st.sampled_from(nvgpu_node.MODES), "rootless": st.one_of(st.none(), st.booleans()),
        "hook_path": st.one_of(st.none(), file_in(nvgpu_node.OCI_HOOK_DIRS, (nvgpu_node.OCI_HOOK_SUFFIX,))),
        "hook_binary": st.one_of(st.none(), absolute_path),
        "cdi_path": st.one_of(st.none(), file_in(nvgpu_node.CDI_DIRS, nvgpu_node.CDI_SPEC_SUFFIXES))}),
    "selinux": selinux(),
    "rootless_users": users(),
    "validate": st.fixed_dictionaries({}, optional={
        "enabled": st.booleans(), "image": st.one_of(st.none(), image),
        "mode": st.one_of(st.none(), st.sampled_from(nvgpu_node.MODES)),
        "timeout": st.one_of(st.integers(1, 86400), st.floats(0.001, 86400)),
        "pull": st.sampled_from(nvgpu_node.PULL_POLICIES),
        "when": st.sampled_from(nvgpu_node.VALIDATE_WHEN)}),
}
valid_pillar = st.fixed_dictionaries({}, optional=SECTION_VALUES)
release = st.sampled_from(["8", "9"])

# ---------------------------------------------------------------------------- pillar: valid


@given(valid_pillar, release)
def test_a_generated_valid_pillar_is_accepted(pillar, rel):
    assert nvgpu_pillar.check(merged(pillar, release=rel)) == []


# ---------------------------------------------------------------------------- pillar: one bad value

# Values no rule accepts at these keys, each with what makes it bad: a control or
# space character, a leading '-', the wrong type.
BAD_SUFFIX = st.sampled_from(["\n", "\r", " ", "\t", "\x00", " x", "\u2028", "\u00e9", ";id", "$(id)"])


def broken(valid):
    return st.builds(lambda v, s: v + s, valid, BAD_SUFFIX)


def not_string():
    return st.one_of(st.booleans(), st.floats(allow_nan=True), st.lists(st.text(max_size=3), max_size=2),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


STRINGS = {
    "driver:module": ident(), "driver:platform": st.just("platform:el8"),
    "driver:nouveau_blacklist_file": file_in(nvgpu_node.MODPROBE_DIRS, (nvgpu_node.MODPROBE_SUFFIX,)),
    "cuda:package": ident(), "repos:cuda:name": ident(first=ALNUM, rest=ALNUM + "_.:-"),
    "repos:cuda:baseurl": url(nvgpu_pillar.REPO_SCHEMES), "repos:cuda:gpgkey": url(nvgpu_pillar.GPGKEY_SCHEMES),
    "repos:toolkit:baseurl": url(nvgpu_pillar.REPO_SCHEMES),
    "repos:toolkit:gpgkey": url(nvgpu_pillar.GPGKEY_SCHEMES), "runtime:package": ident(),
    "runtime:container_tools_profile": ident(), "toolkit:package": ident(),
    "toolkit:hook_path": file_in(nvgpu_node.OCI_HOOK_DIRS, (nvgpu_node.OCI_HOOK_SUFFIX,)),
    "toolkit:hook_binary": absolute_path,
    "toolkit:cdi_path": file_in(nvgpu_node.CDI_DIRS, nvgpu_node.CDI_SPEC_SUFFIXES),
    "selinux:module_name": ident(first=ALNUM + "_", rest=ALNUM + "_.-"), "selinux:policy_source": absolute_path,
    "validate:image": image,
}
INVALID = {
    **{path: st.one_of(broken(valid), valid.map(lambda v: "-" + v), not_string()) for path, valid in STRINGS.items()},
    "driver:stream": st.one_of(broken(stream.map(str)), st.integers(max_value=-1), not_string()),
    "driver:profile": st.one_of(broken(ident()), not_string()),
    "driver:initramfs_cmd": st.one_of(st.just([]), initramfs_cmd.map(lambda argv: ["-" + argv[0], *argv[1:]]),
                                      initramfs_cmd.map(lambda argv: [*argv, "a\nb"]), st.text(), st.none()),
    "cuda:version": st.one_of(broken(ident(first=ALNUM, rest=ALNUM + ".")), st.floats(), st.booleans()),
    **{path: st.one_of(st.sampled_from(["true", "false", "yes", 0, 1, None]), st.text(max_size=3))
       for path in ("driver:uvm", "repos:allow_unsigned", "repos:toolkit:legacy", "runtime:container_tools",
                    "selinux:enabled", "selinux:relabel", "validate:enabled")},
    "repos:cuda:gpgcheck": st.one_of(st.integers(2, 10**6), st.text(max_size=3), st.just(0), st.none()),
    "repos:toolkit:repo_gpgcheck": st.one_of(st.integers(min_value=2), st.just(False), st.floats()),
    "toolkit:mode": st.one_of(st.text(max_size=6).filter(lambda m: m not in nvgpu_node.MODES), st.none()),
    "toolkit:rootless": st.one_of(st.text(max_size=3), st.integers()),
    "selinux:policy_hash": st.one_of(st.text("0123456789abcdef=sh", min_size=1, max_size=20), st.integers(),
                                     st.lists(st.text())),
    "validate:timeout": st.one_of(st.integers(max_value=0), st.integers(86401), st.floats(86400.01),
                                  st.just(float("nan")), st.text(max_size=4), st.booleans()),
    "validate:pull": st.one_of(st.text(max_size=8).filter(lambda p: p not in nvgpu_node.PULL_POLICIES), st.none()),
    "validate:when": st.one_of(st.text(max_size=8).filter(lambda w: w not in nvgpu_node.VALIDATE_WHEN), st.none()),
    "rootless_users": st.one_of(st.text(), st.integers(), st.dictionaries(st.text(), st.text(), max_size=2)),
}


@given(st.data())
def test_one_generated_bad_value_is_rejected_naming_its_key(data):
    path = data.draw(st.sampled_from(sorted(INVALID)), label="key")
    value = data.draw(INVALID[path], label="value")
    pillar = data.draw(valid_pillar, label="pillar")
    if path.startswith("selinux:policy_"):
        pillar["selinux"] = {"enabled": True, "policy_source": "/srv/x.pp", "policy_hash": ""}
    if path.endswith("gpgcheck"):
        pillar.setdefault("repos", {})["allow_unsigned"] = False  # 0 is bad only without the opt-out
    node = pillar
    for key in path.split(":")[:-1]:
        node = node.setdefault(key, {})
    node[path.split(":")[-1]] = value
    errors = nvgpu_pillar.check(merged(pillar))
    assert any(error.startswith(f"gpu:{path}") for error in errors), (path, value, errors)
    assert all(error.startswith("gpu:") for error in errors)


# ---------------------------------------------------------------------------- pillar: anything, anywhere

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=4))
anything = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.none()), children,
                                               max_size=3)),
    max_leaves=8,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


BASE = merged({"rootless_users": [{"name": "alice", "uid": 2001, "subuid_start": 200000}]})
ALL_PATHS = list(_paths(BASE))


@given(st.sampled_from(ALL_PATHS), anything)
def test_any_value_anywhere_is_accepted_or_reported_never_raised(path, value):
    gpu = json.loads(json.dumps(BASE))
    if path:
        parent = gpu
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    else:
        gpu = value
    errors = nvgpu_pillar.check(gpu)
    assert isinstance(errors, list) and all(isinstance(error, str) and error.startswith("gpu") for error in errors)
    assert len(set(errors)) == len(errors)
    assert all(len(error) < 2000 for error in errors)


@given(anything)
def test_any_pillar_is_accepted_or_reported_never_raised(pillar):
    errors = nvgpu_pillar.check(merged(pillar if isinstance(pillar, dict) else {"gpu_value": pillar}))
    assert isinstance(errors, list) and all(isinstance(error, str) for error in errors)


# ---------------------------------------------------------------------------- the node's tools

version = st.lists(st.integers(0, 999), min_size=2, max_size=3).map(lambda parts: ".".join(map(str, parts)))


@given(st.text())
def test_proc_driver_version_of_any_text_is_none_or_a_version_in_it(text):
    found = nvgpu_node.parse_proc_driver_version(text)
    assert found is None or (found in text and nvgpu_node.version_tuple(found))


PROC_LINES = [
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  {}  Wed Oct 30 00:00:00 UTC 2024",
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {}  Release Build  (dvs-builder@U16)  Thu Oct 24 2024",
    "NVRM version: NVIDIA UNIX aarch64 Kernel Module  {}  Sun Sep  1 00:00:00 UTC 2024",
]


@given(version, st.sampled_from(PROC_LINES))
def test_proc_driver_version_of_the_drivers_line(ver, line):
    text = line.format(ver) + "\nGCC version:  gcc version 8.5.0 20210514 (Red Hat 8.5.0-20) (GCC)\n"
    assert nvgpu_node.parse_proc_driver_version(text) == ver


@given(st.text())
def test_podman_version_of_any_text_is_none_or_one_word(text):
    found = nvgpu_node.parse_podman_version(text)
    assert found is None or (found and not any(c.isspace() for c in found) and found in text)


@given(st.text(st.characters(blacklist_categories=("Zs", "Cc", "Zl", "Zp")), min_size=1, max_size=20))
def test_podman_version_of_its_output(ver):
    assume(not any(c.isspace() for c in ver))
    assert nvgpu_node.parse_podman_version(f"podman version {ver}\n") == ver


# A CDI spec as the schema has it (cdiVersion, kind, devices with containerEdits, and
# spec-wide containerEdits); mounts are where the driver's libcuda shows.
mount = st.builds(lambda host_path, options: {"hostPath": host_path, "containerPath": host_path,
                                              "options": options},
                  st.one_of(absolute_path, version.map(lambda v: f"/usr/lib64/libcuda.so.{v}")),
                  st.lists(st.sampled_from(["ro", "nosuid", "nodev", "bind"]), max_size=3))
edits = st.fixed_dictionaries({}, optional={
    "mounts": st.lists(mount, max_size=3),
    "deviceNodes": st.lists(st.fixed_dictionaries({"path": absolute_path}), max_size=2),
    "env": st.lists(st.text(max_size=10), max_size=2),
    "hooks": st.lists(st.fixed_dictionaries({"hookName": st.just("createContainer"), "path": absolute_path}),
                      max_size=1),
})
cdi_spec = st.fixed_dictionaries(
    {"cdiVersion": st.sampled_from(["0.3.0", "0.5.0", "0.6.0"]), "kind": st.just(nvgpu_node.CDI_KIND)},
    optional={"devices": st.lists(st.fixed_dictionaries({"name": st.text(LOWER, min_size=1, max_size=4)},
                                                        optional={"containerEdits": edits}), max_size=3),
              "containerEdits": edits},
)


def _first_libcuda(spec):
    found = [spec.get("containerEdits") or {}] + [d.get("containerEdits") or {} for d in spec.get("devices") or []]
    for edit in found:
        for entry in edit.get("mounts") or []:
            if entry["hostPath"].startswith("/usr/lib64/libcuda.so."):
                return entry["hostPath"].rpartition("libcuda.so.")[2]
    return None


@given(cdi_spec)
def test_cdi_spec_driver_version_is_the_first_libcuda_it_mounts(spec):
    assert nvgpu_node.cdi_spec_driver_version(spec) == _first_libcuda(spec)


@given(cdi_spec)
def test_cdi_spec_of_a_generated_spec_file(spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nvidia.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(yaml.safe_dump(spec))
        described = TOOLKIT.cdi_spec(path)
    assert described["exists"] and described["kind"] == nvgpu_node.CDI_KIND
    assert described["driver_version"] == _first_libcuda(spec)
    assert described["devices"] == [d["name"] for d in spec.get("devices") or []]


# Any YAML file at the spec's path: a well-formed mapping or not, the answer is a
# description (driver_version None where none is found), never an exception. Shapes a
# spec never has (a device that is a string, mounts that are not mappings) are the
# known bug below, kept out here so that this property guards everything else.
def _truthy_is(value, kind):
    return not value or isinstance(value, kind)


def _cdi_shaped(spec):
    if not isinstance(spec, dict):
        return True
    devices = spec.get("devices")
    if not _truthy_is(devices, list) or not all(_truthy_is(d, dict) for d in devices or []):
        return False
    for edit in [spec.get("containerEdits")] + [(d or {}).get("containerEdits") for d in devices or []]:
        mounts = (edit or {}).get("mounts") if _truthy_is(edit, dict) else None
        if not _truthy_is(edit, dict) or not _truthy_is(mounts, list):
            return False
        if not all(_truthy_is(m, dict) for m in mounts or []):
            return False
    return True


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.sampled_from(["devices", "containerEdits", "mounts", "hostPath",
                                                                "kind", "name", "x"]), children, max_size=3)),
    max_leaves=10,
)


@given(st.one_of(yaml_values.map(yaml.safe_dump), st.text(max_size=40)))
def test_cdi_spec_of_any_yaml_file_never_raises(text):
    try:
        assume(_cdi_shaped(yaml.safe_load(text)))
    except yaml.YAMLError:
        pass  # cdi_spec answers for a file that is not YAML too
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nvidia.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        described = TOOLKIT.cdi_spec(path)
    assert described["exists"] is True
    assert described["driver_version"] is None or isinstance(described["driver_version"], str)


@pytest.mark.parametrize("spec", [{"devices": ["gpu0"]}, {"containerEdits": ["x"]},
                                  {"containerEdits": {"mounts": ["/usr/lib64/libcuda.so.550.1"]}}], ids=repr)
def test_cdi_spec_of_an_odd_shape_names_no_driver(spec):
    assert nvgpu_node.cdi_spec_driver_version(spec) is None


# The OCI hook file and the toolkit's config.toml: any text is an answer or the one
# documented error, never a traceback.
@given(st.one_of(st.text(max_size=60), yaml_values.map(json.dumps)))
def test_oci_hook_of_any_file_is_its_json_or_none(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "oci-nvidia-hook.json")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        parsed = TOOLKIT.oci_hook(path)
    try:
        expected = json.loads(text)
    except ValueError:
        expected = None
    assert parsed == expected or (parsed != parsed and expected != expected)  # NaN is not equal to itself


toml_key = st.text(LOWER + "-_", min_size=1, max_size=8)
toml_value = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(string.printable.strip("\r\x0b\x0c"),
                                                                                 max_size=10))


def _toml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


@given(st.dictionaries(toml_key, st.dictionaries(toml_key, toml_value, max_size=3), max_size=3))
def test_toolkit_config_of_a_generated_toml_file(tables):
    text = "".join(f"[{table}]\n" + "".join(f"{key} = {_toml(v)}\n" for key, v in values.items()) + "\n"
                   for table, values in tables.items())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.toml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        assert TOOLKIT.config(path) == tables
        for table, values in tables.items():
            for key, value in values.items():
                assert TOOLKIT.config_value(f"{table}.{key}", path) == value


@given(st.text(max_size=80))
def test_toolkit_config_of_any_file_is_a_dict_or_one_clear_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.toml")
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        try:
            assert isinstance(TOOLKIT.config(path), dict)
        except CommandExecutionError as err:
            assert str(err).startswith(f"{path} is not valid TOML")


relabel_line = st.builds(
    lambda verb, path, old, new: ((f"{verb} {path} from {old} to {new}" if verb != "restorecon reset"
                                   else f"restorecon reset {path} context {old}->{new}"), path),
    st.sampled_from(["Would relabel", "Relabeled", "restorecon reset"]), absolute_path,
    st.just("system_u:object_r:lib_t:s0"), st.just("system_u:object_r:textrel_shlib_t:s0"),
)


noise_line = st.text(max_size=30).filter(
    lambda t: not any(c in t for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
    and not t.strip().startswith(("Would relabel ", "Relabeled ", "restorecon reset "))
)


@given(st.lists(st.one_of(relabel_line, noise_line.map(lambda t: (t, None))), max_size=6))
def test_restorecon_output_gives_the_relabelled_paths_in_order(lines):
    found = nvgpu_node.parse_restorecon("\n".join(line for line, _path in lines))
    assert found == list(dict.fromkeys(path for _line, path in lines if path))


@given(st.text())
def test_restorecon_output_of_any_text_never_raises(text):
    found = nvgpu_node.parse_restorecon(text)
    assert isinstance(found, list) and all(isinstance(path, str) and path in text for path in found)


subid_line = st.tuples(ident(first=string.ascii_lowercase, rest=LOWER + "_-"), st.integers(0, 2**32),
                       st.integers(0, 2**32))


@given(st.lists(subid_line, max_size=5), st.lists(st.text(max_size=20), max_size=3))
def test_subids_file_gives_its_entries_and_skips_other_lines(entries, noise):
    noise = [line for line in noise if "\n" not in line and "\r" not in line and line.count(":") != 2]
    text = "\n".join([f"{u}:{s}:{c}" for u, s, c in entries] + noise) + "\n"
    assert nvgpu_node.parse_subids(text) == [(u, s, c) for u, s, c in entries]


@given(st.text(st.characters(blacklist_characters="\u00b2\u00b3\u00b9", blacklist_categories=("No",))))
def test_subids_of_any_text_never_raises(text):
    for user, start, count in nvgpu_node.parse_subids(text):
        assert isinstance(user, str) and start >= 0 and count >= 0


def test_subids_with_a_superscript_digit_are_skipped():
    assert nvgpu_node.parse_subids("alice:\u00b2:65536\n") == []


# ---------------------------------------------------------------------------- _modules/nvgpu.py

container_path = st.one_of(
    absolute_path,
    st.sampled_from(["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-caps/nvidia-cap1", "/usr/bin/nvidia-smi",
                     "/usr/lib64/libcuda.so.550.127.08", "/usr/lib/libcuda.so.1", "/run/nvidia-persistenced/socket",
                     "/lib/firmware/nvidia/550.127.08/gsp_ga10x.bin", "/proc/driver/nvidia/gpus/0000:01:00.0"]),
)


@given(st.lists(st.one_of(container_path, st.text(max_size=20)), max_size=12))
def test_container_files_land_in_exactly_one_list_in_order(lines):
    text = "\n".join(lines)
    files = NVGPU._categorise(text)
    assert set(files) == set(NVGPU.CONTAINER_FILE_KINDS)
    every = [path for kind in NVGPU.CONTAINER_FILE_KINDS for path in files[kind]]
    expected = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip().startswith("/")))
    assert sorted(every) == sorted(expected)
    for kind in NVGPU.CONTAINER_FILE_KINDS:
        assert files[kind] == [path for path in expected if path in files[kind]]


@given(st.text(), st.text())
def test_vector_add_output_of_any_text_is_a_result(stdout, stderr):
    parsed = NVGPU._parse_vector_add(stdout, stderr)
    assert set(parsed) == {"passed_text", "elements", "blocks", "threads"}
    assert isinstance(parsed["passed_text"], bool)
    assert all(parsed[key] is None or (isinstance(parsed[key], int) and parsed[key] >= 0)
               for key in ("elements", "blocks", "threads"))


@given(st.integers(0, 10**9), st.integers(1, 10**6), st.integers(1, 1024), st.booleans(),
       st.sampled_from(["\n", "\r\n", "\r"]))
def test_vector_add_output_of_the_sample(elements, blocks, threads, passed, newline):
    lines = [f"[Vector addition of {elements} elements]", "Copy input data from the host memory to the CUDA device",
             f"CUDA kernel launch with {blocks} blocks of {threads} threads",
             "Test PASSED" if passed else "Result verification failed at element 0!", "Done"]
    parsed = NVGPU._parse_vector_add(newline.join(lines))
    assert parsed == {"passed_text": passed, "elements": elements, "blocks": blocks, "threads": threads}
