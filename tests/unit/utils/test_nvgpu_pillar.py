"""
The gpu formula's pillar check (_utils/nvgpu_pillar.py) on the `gpu` dict as
salt/gpu/map.jinja merges it: defaults.yaml, the RHEL release's row of
osmajorreleasemap.yaml, then the pillar. Every bad value is reported once, naming its
key; nothing makes the check raise. The render itself is in tests/functional/.
"""

import copy
import pathlib

import nvgpu_pillar
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[3]
DEFAULTS = yaml.safe_load((REPO / "salt/gpu/defaults.yaml").read_text())["gpu"]
RELEASES = yaml.safe_load((REPO / "salt/gpu/osmajorreleasemap.yaml").read_text())
EXAMPLE = yaml.safe_load((REPO / "pillar.example").read_text())["gpu"]

HASH = "sha256=" + "0" * 64


def merge(base, over):
    """Salt's slsutil.merge: mappings merge key by key, any other value replaces."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return copy.deepcopy(over)
    merged = copy.deepcopy(base)
    for key, value in over.items():
        merged[key] = merge(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def merged(pillar=None, release="8", example=True):
    """The `gpu` dict map.jinja checks: defaults, release row, pillar.example, `pillar`."""
    gpu = merge(DEFAULTS, RELEASES[release])
    if example:
        gpu = merge(gpu, EXAMPLE)
    return merge(gpu, pillar or {})


def at(path, value):
    """``at("driver:stream", "x")`` -> ``{"driver": {"stream": "x"}}``."""
    for key in reversed(path.split(":")):
        value = {key: value}
    return value


def keys(errors):
    """The key each message names: the text before its first ': '."""
    return [error.split(": ", 1)[0] for error in errors]


# ---------------------------------------------------------------------------- good pillar


@pytest.mark.parametrize("release", ["8", "9"])
def test_defaults_with_pillar_example_are_good(release):
    assert nvgpu_pillar.check(merged(release=release)) == []


def test_defaults_alone_need_a_hash_for_nvidias_https_policy():
    # No pillar at all: the policy module comes from NVIDIA's https URL, so a hash is required.
    assert keys(nvgpu_pillar.check(merged(example=False))) == ["gpu:selinux:policy_hash"]
    assert nvgpu_pillar.check(merged(at("selinux:policy_hash", HASH), example=False)) == []


@pytest.mark.parametrize(
    "pillar",
    [
        at("driver:stream", "550-dkms"),
        at("driver:stream", 550),  # YAML `stream: 550`
        at("driver:stream", "550-open"),
        at("driver:stream", "open-dkms"),
        at("driver:stream", "latest"),
        at("driver:profile", "fm"),
        at("driver:profile", ""),
        at("driver:profile", None),
        at("driver:initramfs_cmd", ["dracut", "-f", "--regenerate-all", "--kver"]),
        at("toolkit:mode", "cdi"),
        at("toolkit:rootless", True),
        at("validate:mode", "hook"),
        {"rootless_users": [{"name": "gpuuser", "uid": 2001, "gid": "2001", "subuid_start": 200000,
                             "subuid_count": 65536}, {"name": "_ci.bot-2"}]},
        {"rootless_users": [{"name": "alice", "uid": None}]},
        at("selinux", {"policy_source": "/srv/nvidia-container.pp", "policy_hash": ""}),
        at("selinux", {"policy_source": "file:///srv/nvidia-container.pp", "policy_hash": None}),
        at("selinux", {"policy_source": "https://example.com/nvidia-container.pp", "policy_hash": HASH}),
        at("selinux", {"enabled": False, "policy_source": ""}),
        at("runtime", {"container_tools": True, "container_tools_stream": 4.0}),  # YAML `4.0`
        at("runtime:container_tools", True),  # RHEL 8: stream rhel8
        at("repos:toolkit", {"legacy": True, "legacy_repos": {"mine": {"baseurl": "https://m/x", "gpgkey": "k"}}}),
    ],
    ids=repr,
)
def test_good_values_pass(pillar):
    assert nvgpu_pillar.check(merged(pillar)) == []


# ---------------------------------------------------------------------------- one bad key


def _simple(path, value):
    return pytest.param(at(path, value), "gpu:" + path, value, id=f"{path}={value!r}")


def _users(users, key, value):
    return pytest.param({"rootless_users": users}, key, value, id=f"{key}={value!r}")


BAD = [
    *[_simple("driver:stream", value) for value in
      ("latest:dkms", "550-dkms\n", "550 -dkms", "", "dkms", None, True, 550.0, -550, ["550"], {"550": "dkms"})],
    *[_simple("driver:profile", value) for value in ("fm; rm", "default\n", True, 7, ["default"], {"a": 1})],
    *[_simple("driver:initramfs_cmd", value) for value in
      ("dracut -f; rm -rf /boot", {"cmd": "dracut"}, [], ["dracut", 1], ["dracut", ""], None, ("dracut",))],
    *[_simple("toolkit:mode", value) for value in ("oci", "cdi\n", "CDI", None, ["cdi"], {"cdi": 1})],
    *[_simple("validate:mode", value) for value in ("oci", "hook\n", "", ["hook"], {"mode": "cdi"})],
    *[_simple("toolkit:rootless", value) for value in ("false", 1, [])],
    *[_simple(path, value)
      for path in ("driver:uvm", "repos:toolkit:legacy", "runtime:container_tools", "selinux:enabled",
                   "selinux:relabel", "validate:enabled")
      for value in ("false", None, 1)],
    *[_simple(path, value)
      for path in ("driver", "cuda", "repos", "repos:cuda", "repos:toolkit", "runtime", "toolkit", "selinux",
                   "validate")
      for value in ("x", None, ["x"])],
    _simple("rootless_users", "alice"),
    _simple("rootless_users", {"name": "alice"}),
    _simple("rootless_users", None),
    _users([{"uid": 2001}], "gpu:rootless_users[0]", {"uid": 2001}),
    _users(["alice"], "gpu:rootless_users[0]", "alice"),
    _users([{"name": ""}], "gpu:rootless_users[0]", {"name": ""}),
    _users([{"name": "alice"}, None], "gpu:rootless_users[1]", None),
    *[_users([{"name": name}], "gpu:rootless_users[0]:name", name)
      for name in ("alice\n", "Alice", "9lives", "a" * 33, "al ice", 42, True, ["alice"])],
    _users([{"name": "alice"}, {"name": "alice"}], "gpu:rootless_users[1]:name", "alice"),
    *[_users([{"name": "alice"}, {"name": "bob", field: value}], f"gpu:rootless_users[1]:{field}", value)
      for field, value in (("uid", "20x1"), ("uid", "2001\n"), ("uid", -1), ("uid", True), ("gid", 1.5),
                           ("gid", ""), ("subuid_start", "x"), ("subuid_count", []))],
    *[_simple("selinux:policy_source", value) for value in
      ("", None, "nvidia-container.pp", "salt://gpu/files/x.pp\n", ["salt://x.pp"], {"salt": "x"})],
    *[pytest.param(at("selinux", {"policy_source": source, "policy_hash": ""}), "gpu:selinux:policy_hash", "",
                   id=f"policy_hash for {source}")
      for source in ("https://example.com/x.pp", "HTTPS://example.com/x.pp", "ftp://example.com/x.pp",
                     "s3://bucket/x.pp")],
    _simple("selinux:policy_hash", ["sha256=00"]),
    pytest.param(at("runtime", {"container_tools": True, "container_tools_stream": None}),
                 "gpu:runtime:container_tools", True, id="container_tools without a stream"),
    *[pytest.param(at("runtime", {"container_tools": True, "container_tools_stream": value}),
                   "gpu:runtime:container_tools_stream", value, id=f"container_tools_stream={value!r}")
      for value in ("rhel8\n", ["rhel8"], True, "rhel 8")],
    _simple("repos:toolkit:legacy_repos", ["libnvidia-container"]),
    _simple("repos:toolkit:legacy_repos", "libnvidia-container"),
    pytest.param(at("repos:toolkit:legacy_repos", {"mine": {"baseurl": "https://m/x"}}),
                 "gpu:repos:toolkit:legacy_repos:mine", {"baseurl": "https://m/x"}, id="legacy repo without gpgkey"),
    pytest.param(at("repos:toolkit:legacy_repos", {"mine": "https://m/x"}),
                 "gpu:repos:toolkit:legacy_repos:mine", "https://m/x", id="legacy repo as a string"),
]


@pytest.mark.parametrize("pillar, key, value", BAD)
def test_a_bad_value_is_one_error_naming_its_key_and_value(pillar, key, value):
    errors = nvgpu_pillar.check(merged(pillar))
    assert keys(errors) == [key], errors
    assert repr(value) in errors[0]


@pytest.mark.parametrize("gpu", ["x", None, [], ["driver"], 5, True], ids=repr)
def test_a_pillar_gpu_that_is_not_a_mapping_is_one_error(gpu):
    errors = nvgpu_pillar.check(gpu)
    assert keys(errors) == ["gpu"]
    assert repr(gpu) in errors[0]


def test_messages_say_what_is_allowed():
    [stream] = nvgpu_pillar.check(merged(at("driver:stream", "550-dkms\n")))
    assert stream == (
        "gpu:driver:stream: '550-dkms\\n' is not an nvidia-driver module stream (latest, latest-dkms, "
        "latest-open, open-dkms, NNN, NNN-dkms, NNN-open; e.g. 550-dkms)"
    )
    [mode] = nvgpu_pillar.check(merged(at("toolkit:mode", "oci")))
    assert mode == "gpu:toolkit:mode: 'oci' is not one of auto, hook, cdi"
    [section] = nvgpu_pillar.check(merged(at("driver", None)))
    assert "null" in section


def test_container_tools_names_the_release_and_the_package():
    [error] = nvgpu_pillar.check(merged(at("runtime:container_tools", True), release="9"))
    assert error.startswith("gpu:runtime:container_tools: True, but RHEL 9 has no container-tools module stream")
    assert error.endswith("set it false to install podman")
    [error] = nvgpu_pillar.check(merged(at("runtime:container_tools", True), release="9"), osmajorrelease=10)
    assert "RHEL 10" in error


# ---------------------------------------------------------------------------- several bad keys


def test_several_bad_keys_are_all_reported():
    pillar = {
        "driver": {"stream": "latest:dkms", "initramfs_cmd": {"cmd": "dracut"}},
        "toolkit": {"mode": "oci"},
        "validate": "x",
        "rootless_users": [{"name": "alice"}, {"name": "bob", "uid": "x", "gid": "y"}, {"uid": 1}],
        "selinux": {"policy_source": "https://example.com/x.pp", "policy_hash": ""},
    }
    assert sorted(keys(nvgpu_pillar.check(merged(pillar)))) == sorted([
        "gpu:driver:stream",
        "gpu:driver:initramfs_cmd",
        "gpu:toolkit:mode",
        "gpu:validate",
        "gpu:rootless_users[1]:uid",
        "gpu:rootless_users[1]:gid",
        "gpu:rootless_users[2]",
        "gpu:selinux:policy_hash",
    ])


def test_a_bad_policy_source_and_a_bad_hash_are_both_reported():
    errors = nvgpu_pillar.check(merged(at("selinux", {"policy_source": "", "policy_hash": ["sha256=00"]})))
    assert keys(errors) == ["gpu:selinux:policy_source", "gpu:selinux:policy_hash"]


# ---------------------------------------------------------------------------- never raises


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))


ODD = [None, "", "x", "x\n", 0, -1, 1.5, True, [], ["x"], [None], [{}], {}, {"a": 1}, {1: 2}, ("x",), object()]


@pytest.mark.parametrize("odd", ODD, ids=repr)
def test_any_value_at_any_key_is_accepted_or_reported_never_raised(odd):
    base = merged({"rootless_users": [{"name": "alice", "uid": 1}]})
    for path in _paths(base):
        gpu = copy.deepcopy(base)
        if path:
            parent = gpu
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = odd
        else:
            gpu = odd
        errors = nvgpu_pillar.check(gpu)
        assert isinstance(errors, list) and all(isinstance(error, str) for error in errors), path
        assert len(set(errors)) == len(errors), path
    for user in ODD:
        nvgpu_pillar.check(merged({"rootless_users": [user, {"name": "bob", "uid": odd}]}))


def test_the_check_changes_nothing():
    gpu = merged({"rootless_users": [{"name": "alice"}], "driver": {"stream": None}})
    before = copy.deepcopy(gpu)
    nvgpu_pillar.check(gpu)
    assert gpu == before
