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


@pytest.mark.parametrize("release", ["8", "9", "10"])
def test_defaults_with_pillar_example_are_good(release):
    assert nvgpu_pillar.check(merged(release=release)) == []


@pytest.mark.parametrize("release, digest", [
    ("8", "74646211455c5bc11cff08961e62e7b68d5a84037d1ea7e837c2d50e36cb4ebf"),
    ("9", "d131ebd51b74e5aae881ae88ae9670426e584036347aa5f346bf8448fe0256c7"),
])
def test_defaults_alone_verify_nvidias_https_policy_by_its_published_hash(release, digest):
    # No pillar at all: the policy module comes from NVIDIA's https URL with the sha256
    # NVIDIA publishes for that release's .pp, so the download is verified.
    gpu = merged(example=False, release=release)
    assert nvgpu_pillar.check(gpu) == []
    assert gpu["selinux"]["policy_source"].endswith(f"/bin/RHEL{release}/nvidia-container.pp")
    assert gpu["selinux"]["policy_hash"] == f"sha256={digest}"
    assert gpu["selinux"]["method"] == "auto"
    # A remote source of the site's own still needs its hash.
    assert keys(nvgpu_pillar.check(merged(at("selinux", {"policy_source": "https://m/x.pp", "policy_hash": ""}),
                                          example=False))) == ["gpu:selinux:policy_hash"]


@pytest.mark.parametrize(
    "pillar",
    [
        at("driver:stream", "550-dkms"),
        at("driver:stream", 550),  # YAML `stream: 550`
        at("driver:stream", "550-open"),
        at("driver:stream", "open-dkms"),
        at("driver:stream", "latest"),
        at("driver:profile", "fm"),
        at("driver:branch", "580"),
        at("toolkit:cdi_owner", "refresh"),
        at("toolkit:cdi_owner", "formula"),
        at("driver:branch", 580),  # YAML `branch: 580`
        at("driver:branch", "latest"),
        at("driver:package", "nvidia-driver-cuda"),
        at("driver:fabricmanager", True),
        at("driver:fabricmanager", False),
        at("driver:persistenced", False),
        at("driver:reload", "never"),
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
        # Only the module needs a policy package (auto: where the boolean is missing).
        at("selinux", {"method": "boolean", "policy_source": "", "policy_hash": ""}),
        at("selinux", {"method": "auto", "policy_source": None, "policy_hash": ""}),
        at("selinux:method", "module"),
        at("runtime", {"container_tools": True, "container_tools_stream": 4.0}),  # YAML `4.0`
        at("runtime:container_tools", True),  # RHEL 8: stream rhel8
        at("repos:toolkit", {"legacy": True, "legacy_repos": {"mine": {"baseurl": "https://m/x",
                                                                         "gpgkey": "https://m/key"}}}),
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
    *[_simple("driver:fabricmanager", value) for value in ("yes", "true", "Auto", None, 1, 0, ["auto"])],
    *[_simple("driver:persistenced", value) for value in ("true", None, 1)],
    *[_simple("driver:reload", value) for value in ("always", "Never", True, False, None, ["auto"])],
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
      ("nvidia-container.pp", "salt://gpu/files/x.pp\n", ["salt://x.pp"], {"salt": "x"})],
    *[pytest.param(at("selinux", {"method": "module", "policy_source": value}), "gpu:selinux:policy_source", value,
                   id=f"module without policy_source {value!r}") for value in ("", None)],
    *[_simple("selinux:method", value) for value in ("on", "", None, True, "Boolean", ["boolean"])],
    *[_simple("driver:branch", value) for value in ("580-open", "58", 58, "", None, True, "*nvidia*", "latest-dkms")],
    *[_simple("driver:package", value) for value in ("", "nvidia open", None)],
    *[_simple("toolkit:cdi_owner", value) for value in ("systemd", "", None, True, "Refresh")],
    *[_simple("driver:streams", value) for value in ("yes", 1, None)],
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
                 "gpu:repos:toolkit:legacy_repos:mine:gpgkey", None, id="legacy repo without gpgkey"),
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
    errors = nvgpu_pillar.check(merged(at("selinux", {"method": "module", "policy_source": "",
                                                     "policy_hash": ["sha256=00"]})))
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


# ---------------------------------------------------------------------------- issue 9: every key a rule

GOOD = [
    at("driver:nouveau_blacklist_file", "/etc/modprobe.d/nvgpu-nouveau.conf"),
    at("toolkit:cdi_path", "/var/run/cdi/nvidia.json"),
    at("toolkit:cdi_path", "/etc/cdi/nvidia-gpu.yaml"),
    at("toolkit:cdi_path", None),
    at("toolkit:hook_path", "/etc/containers/oci/hooks.d/nvidia.json"),
    at("toolkit:hook_path", None),
    at("toolkit:hook_binary", "/opt/nvidia/bin/nvidia-container-runtime-hook"),
    at("toolkit:hook_binary", None),
    at("driver:module", "nvidia-driver"),
    at("cuda", {"package": "cuda-toolkit-12-4", "version": "12.4.1-1"}),
    at("cuda:version", ">=12.4"),
    at("cuda:version", 12),
    at("cuda:version", None),
    at("repos:cuda", {"baseurl": "HTTP://mirror.example/cuda/$basearch", "gpgkey": "FILE:///etc/pki/cuda.pub"}),
    at("repos:cuda", {"baseurl": "ftp://mirror.example/cuda", "gpgkey": "https://mirror.example/cuda.pub"}),
    at("repos:cuda:repo_gpgcheck", 1),
    at("repos:cuda:gpgcheck", True),
    at("repos", {"allow_unsigned": True, "cuda": {"gpgcheck": 0}, "toolkit": {"gpgcheck": 0, "repo_gpgcheck": 0}}),
    at("repos", {"allow_unsigned": True, "cuda": {"gpgcheck": 0, "repo_gpgcheck": 0, "gpgkey": ""}}),
    at("selinux:policy_hash", "sha512=" + "a" * 128),
    at("selinux:policy_hash", "sha256=" + "AB" * 32),  # Salt compares digests in any case
    at("validate:image", "localhost:5000/nvgpu/cuda-vector-add:v0.1"),
    at("validate:image", "registry.example:443/a/b__c/d-e.f@sha256:" + "0" * 64),
    at("validate:image", "quay.io/org/img:tag@sha256:" + "f" * 64),
    at("validate:image", "docker.io/library/ubuntu"),
    at("validate:image", None),
    at("validate:timeout", 0.5),
    at("validate:timeout", 86400),
    *[at("validate:pull", pull) for pull in ("always", "missing", "never", "newer")],
    at("validate:gpus", "all"),
    at("validate:gpus", "each"),
    *[at("validate:when", when) for when in ("changed", "always")],
    {"rootless_users": [{"name": "a", "uid": 1000, "gid": 1000, "subuid_start": 100000, "subuid_count": 65536},
                        {"name": "b", "uid": "2147483647", "subuid_start": 165536, "subuid_count": 1},
                        {"name": "c", "subuid_start": 4294967295 - 65536}]},
    {"rootless_users": [{"name": "a", "subuid_start": 100000, "subuid_count": 2**31}]},
]


@pytest.mark.parametrize("pillar", GOOD, ids=repr)
def test_good_values_of_the_new_rules_pass(pillar):
    assert nvgpu_pillar.check(merged(pillar)) == []


BAD_PATHS = [
    *[_simple("driver:nouveau_blacklist_file", value) for value in (
        "/etc/passwd", "/etc/modprobe.d/../passwd", "etc/modprobe.d/x.conf", "/etc/modprobe.d/x.txt",
        "/etc/modprobe.d/sub/x.conf", "/etc/modprobe.d/.conf", "/etc/modprobe.d/.hidden.conf",
        "/etc/modprobe.d//x.conf", "/etc/modprobe.d/x.conf\n", "/etc/modprobe.d/a b.conf",
        "/etc/modprobe.d/x;rm.conf", "/etc/modprobe.d/\u00e9.conf", "/lib/modprobe.d/x.conf", "", None, 1,
        ["/etc/modprobe.d/x.conf"])],
    *[_simple("toolkit:cdi_path", value) for value in (
        "/etc/passwd", "nvidia.yaml", "/etc/cdi/../passwd", "/etc/cdi/nvidia.yml", "/etc/cdi/x/nvidia.yaml",
        "/run/cdi/nvidia.yaml", "/etc/cdi/nvidia.yaml\x00", "", 5)],
    *[_simple("toolkit:hook_path", value) for value in (
        "/etc/passwd", "/usr/share/containers/oci/hooks.d/x.yaml", "/etc/containers/oci/hooks.d/../x.json",
        "hooks.d/x.json", "/usr/share/containers/oci/hooks.d/$(id).json", "")],
    *[_simple("toolkit:hook_binary", value) for value in (
        "nvidia-container-runtime-hook", "/usr/bin/../bin/hook", "/usr/bin/hook --debug", "/usr/bin/", "", 0)],
]

BAD_REPOS = [
    *[_simple("repos:cuda:baseurl", value) for value in (
        "", "mirror.example/cuda", "gopher://mirror/cuda", "https://mirror example/cuda", "https://m/x\n",
        "javascript://x", None, ["https://m"])],
    *[_simple("repos:cuda:gpgkey", value) for value in (
        "", "http://mirror/key", "HTTP://mirror/key", "key.pub", "https://m/k https://m/k2", None)],
    *[_simple("repos:toolkit:baseurl", value) for value in ("", "//m/x", 1)],
    *[_simple("repos:toolkit:gpgkey", value) for value in ("ftp://m/key", "")],
    *[_simple("repos:cuda:name", value) for value in ("", "cuda repo", "-cuda", "cuda\n", "cuda/x", 8)],
    _simple("repos:cuda:name", "nvidia-container-toolkit"),
    *[_simple("repos:cuda:gpgcheck", value) for value in (0, False, "1", 2, -1, 1.0, None, "yes")],
    *[_simple("repos:toolkit:gpgcheck", value) for value in (0, False)],
    *[_simple("repos:toolkit:repo_gpgcheck", value) for value in (0, False, "0", 3)],
    *[_simple("repos:cuda:repo_gpgcheck", value) for value in ("0", 2, None)],
    *[_simple("repos:allow_unsigned", value) for value in ("true", 1, None, "yes")],
    pytest.param(at("repos:toolkit:legacy_repos", {"bad name": {"baseurl": "https://m/x", "gpgkey": "https://m/k"}}),
                 "gpu:repos:toolkit:legacy_repos:bad name", "bad name", id="legacy repo id with a space"),
    pytest.param(at("repos:toolkit:legacy_repos", {"nvidia-container-toolkit": {"baseurl": "https://m/x",
                                                                                "gpgkey": "https://m/k"}}),
                 "gpu:repos:toolkit:legacy_repos:nvidia-container-toolkit", "nvidia-container-toolkit",
                 id="legacy repo named as the current repo"),
    pytest.param(at("repos:toolkit:legacy_repos", {"mine": {"baseurl": "https://m/x", "gpgkey": "http://m/k"}}),
                 "gpu:repos:toolkit:legacy_repos:mine:gpgkey", "http://m/k", id="legacy repo key over http"),
    pytest.param(at("repos:toolkit:legacy_repos", {"mine": {"baseurl": "https://m/x", "gpgkey": "https://m/k",
                                                            "gpgcheck": 0}}),
                 "gpu:repos:toolkit:legacy_repos:mine:gpgcheck", 0, id="legacy repo with its own gpgcheck"),
]

BAD_OTHER = [
    *[_simple("driver:module", value) for value in ("", "nvidia driver", "-nvidia", "nvidia-driver\n", None, 1)],
    *[_simple("driver:platform", value) for value in ("el8", "platform:el8\n", "platform:rhel8", None)],
    *[_simple("driver:stream", value) for value in ("\u0665\u0665\u0660-dkms", "550-dkms\r", 10**7, 10**50)],
    *[_simple("driver:initramfs_cmd", value) for value in (
        ["-f"], ["dracut", "-f\n"], ["dracut", "a\x00b"], [None])],
    *[_simple("cuda:package", value) for value in ("", "cuda toolkit", "-cuda", "cuda*", "cuda\n", None, ["cuda"])],
    *[_simple("cuda:version", value) for value in (12.1, "12.4 ", "12.4\n", "$(reboot)", True, -1, ["12.4"])],
    *[_simple("runtime:package", value) for value in ("", "podman docker", None)],
    *[_simple("runtime:container_tools_profile", value) for value in ("", "common\n", None, 1)],
    *[_simple("runtime:container_tools_stream", value) for value in ("rhel 8", "rhel8\n", True, ["rhel8"])],
    *[_simple("toolkit:package", value) for value in ("", "nvidia container toolkit", None)],
    *[_simple("selinux:module_name", value) for value in ("", "nvidia container", "x\n", None, 3)],
    *[_simple("selinux:policy_source", value) for value in (
        "/srv/../etc/x.pp", "salt://gpu/files/x.pp ", "salt://gpu/files/a b.pp", "/srv/x.pp\r")],
    *[_simple("selinux:policy_hash", value) for value in (
        "sha256=00", "md5=" + "0" * 32, "sha256=" + "0" * 63 + "g", "sha256=" + "0" * 64 + "\n", 5)],
    *[_simple("validate:image", value) for value in (
        "", "ubuntu", "library/ubuntu:22.04", "-docker.io/x/y:v1", "docker.io/x/y:v1 --privileged",
        "docker.io/X/y:v1", "docker.io/x/y:v1\n", "docker.io/x/y:" + "t" * 129, "docker.io/x/y@sha256:00",
        "docker.io/x/y@md5:" + "0" * 32, "docker.io//y:v1", "docker.io/x/y:v1;id", "docker.io/\u00fc/y:v1",
        "https://docker.io/x/y:v1", 1, ["docker.io/x/y"])],
    *[_simple("validate:timeout", value) for value in (
        0, -1, 86401, float("inf"), float("nan"), "300", True, None, 10**400)],
    *[_simple("validate:pull", value) for value in ("Always", "missing\n", "", None, True, ["always"])],
    *[_simple("validate:gpus", value) for value in ("Each", "0", 0, "", None, True, ["each"], "GPU-1234")],
    *[_simple("validate:when", value) for value in ("Changed", "never", "", None, True, ["always"])],
]


@pytest.mark.parametrize("pillar, key, value", BAD_PATHS + BAD_REPOS + BAD_OTHER)
def test_a_bad_value_of_the_new_rules_is_one_error_naming_its_key_and_value(pillar, key, value):
    errors = nvgpu_pillar.check(merged(pillar))
    assert keys(errors) == [key], errors
    shown = nvgpu_pillar._show(value)
    assert shown.split("...")[0] in errors[0]


def test_the_allowed_directories_are_nvgpu_nodes():
    import nvgpu_node

    [error] = nvgpu_pillar.check(merged(at("toolkit:cdi_path", "/etc/passwd")))
    for directory in nvgpu_node.CDI_DIRS:
        assert directory in error
    [error] = nvgpu_pillar.check(merged(at("toolkit:hook_path", "/etc/passwd")))
    for directory in nvgpu_node.OCI_HOOK_DIRS:
        assert directory in error


# ---------------------------------------------------------------------------- signatures


def test_signature_checks_can_be_turned_off_only_by_the_explicit_opt_out():
    off = {"cuda": {"gpgcheck": 0}, "toolkit": {"gpgcheck": 0, "repo_gpgcheck": 0}}
    errors = nvgpu_pillar.check(merged(at("repos", off)))
    assert keys(errors) == ["gpu:repos:cuda:gpgcheck", "gpu:repos:toolkit:gpgcheck", "gpu:repos:toolkit:repo_gpgcheck"]
    assert all("gpu:repos:allow_unsigned" in error for error in errors)
    assert nvgpu_pillar.check(merged(at("repos", {**off, "allow_unsigned": True}))) == []
    # The opt-out must be a real boolean: a string is one more error, not a yes.
    errors = nvgpu_pillar.check(merged(at("repos", {**off, "allow_unsigned": "true"})))
    assert "gpu:repos:allow_unsigned" in keys(errors) and len(errors) == 4


def test_the_cuda_repos_metadata_check_stays_as_nvidia_ships_it():
    # NVIDIA's CUDA repo file has no repo_gpgcheck; the formula's default is 0, and 0 needs no opt-out.
    assert DEFAULTS["repos"]["cuda"]["repo_gpgcheck"] == 0
    assert nvgpu_pillar.check(merged(at("repos:cuda:repo_gpgcheck", 0))) == []


def test_defaults_keep_every_signature_check_on_and_the_opt_out_off():
    assert DEFAULTS["repos"]["allow_unsigned"] is False
    assert EXAMPLE["repos"]["allow_unsigned"] is False
    for gpu in (DEFAULTS, EXAMPLE):
        assert gpu["repos"]["cuda"]["gpgcheck"] == 1
        assert gpu["repos"]["toolkit"]["gpgcheck"] == 1
        assert gpu["repos"]["toolkit"]["repo_gpgcheck"] == 1


# ---------------------------------------------------------------------------- rootless users


@pytest.mark.parametrize(
    "users, key",
    [
        ([{"name": "root"}], "gpu:rootless_users[0]:name"),
        ([{"name": "a", "uid": 999}], "gpu:rootless_users[0]:uid"),
        ([{"name": "a", "uid": 0}], "gpu:rootless_users[0]:uid"),
        ([{"name": "a", "gid": 2**31}], "gpu:rootless_users[0]:gid"),
        ([{"name": "a", "uid": "02001"}], "gpu:rootless_users[0]:uid"),  # YAML would read it as octal
        ([{"name": "a", "uid": 10**30}], "gpu:rootless_users[0]:uid"),
        ([{"name": "a", "subuid_start": 0}], "gpu:rootless_users[0]:subuid_start"),
        ([{"name": "a", "subuid_start": 99999}], "gpu:rootless_users[0]:subuid_start"),
        ([{"name": "a", "subuid_count": 0}], "gpu:rootless_users[0]:subuid_count"),
        ([{"name": "a", "subuid_count": 1000000000000}], "gpu:rootless_users[0]:subuid_count"),
        ([{"name": "a", "subuid_count": 2**31 + 1}], "gpu:rootless_users[0]:subuid_count"),
        ([{"name": "a", "subuid_start": 2**32 - 65536}], "gpu:rootless_users[0]:subuid_start"),
        ([{"name": "a", "subuid_start": 2**31, "subuid_count": 2**31}], "gpu:rootless_users[0]:subuid_count"),
        ([{"name": "a", "subuid_start": 200000}, {"name": "b", "subuid_start": 200000}],
         "gpu:rootless_users[1]:subuid_start"),
        ([{"name": "a", "subuid_start": 200000}, {"name": "b", "subuid_start": 265535}],
         "gpu:rootless_users[1]:subuid_start"),
        ([{"name": "a", "subuid_start": 300000, "subuid_count": 10}, {"name": "b", "subuid_start": 299991}],
         "gpu:rootless_users[1]:subuid_start"),
        ([{"name": "a", "uid": 2001}, {"name": "b", "uid": 2001}], "gpu:rootless_users[1]:uid"),
        ([{"name": "a", "gid": 2001}, {"name": "b", "gid": "2001"}], "gpu:rootless_users[1]:gid"),
        ([{"name": "a", "uid": 200001, "subuid_start": 200000}], "gpu:rootless_users[0]:uid"),
        ([{"name": "a", "subuid_start": 200000}, {"name": "b", "gid": 200100}], "gpu:rootless_users[1]:gid"),
        ([{"name": "a", "subuid_star": 200000}], "gpu:rootless_users[0]:subuid_star"),
        ([{"name": "a", "shell": "/bin/sh"}], "gpu:rootless_users[0]:shell"),
    ],
    ids=repr,
)
def test_rootless_users_are_unique_regular_users_with_own_ranges(users, key):
    errors = nvgpu_pillar.check(merged({"rootless_users": users}))
    assert keys(errors) == [key], errors


def test_adjacent_ranges_do_not_overlap():
    users = [{"name": "a", "subuid_start": 200000}, {"name": "b", "subuid_start": 265536},
             {"name": "c", "subuid_start": 100000, "subuid_count": 100000}]
    assert nvgpu_pillar.check(merged({"rootless_users": users})) == []


def test_an_overlap_names_both_users_and_both_ranges():
    users = [{"name": "a", "subuid_start": 200000}, {"name": "b", "subuid_start": 200000}]
    [error] = nvgpu_pillar.check(merged({"rootless_users": users}))
    assert "200000-265535" in error and "gpu:rootless_users[0]" in error


# ---------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    "pillar, key",
    [
        ({"drvier": {"stream": "550"}}, "gpu:drvier"),
        (at("driver:strem", "550-dkms"), "gpu:driver:strem"),
        (at("toolkit:cdi_dir", "/etc/cdi"), "gpu:toolkit:cdi_dir"),
        (at("repos:cuda:sslverify", 0), "gpu:repos:cuda:sslverify"),
        (at("driver:kernel_version", "6.0"), "gpu:driver:kernel_version"),  # map.jinja derives it
        (at("repos:toolkit:present", []), "gpu:repos:toolkit:present"),
        (at("repos:unsigned_notice", ""), "gpu:repos:unsigned_notice"),
        ({"validate": {1: 2}}, "gpu:validate:1"),
    ],
    ids=repr,
)
def test_a_key_the_formula_does_not_read_is_a_typo(pillar, key):
    errors = nvgpu_pillar.check(merged(pillar))
    assert keys(errors) == [key], errors
    assert "is not a key of the formula" in errors[0]


# ---------------------------------------------------------------------------- the rules cover the formula


def _formula_keys():
    """Every gpu.<key>[.<key>[.<key>]] salt/gpu/*.sls and map.jinja read, as "a:b:c"."""
    import re

    found = set()
    for path in sorted((REPO / "salt/gpu").glob("*")):
        if path.suffix not in (".sls", ".jinja"):
            continue
        for line in path.read_text().splitlines():
            if re.match(r"\s*-\s+gpu\.[a-z_]+$", line):
                continue  # an include of another SLS (gpu.users)
            for match in re.finditer(r"\bgpu((?:\.[a-z_]+)+)", line):
                found.add(match.group(1)[1:].replace(".", ":").removesuffix(":update"))
    return found


# Values map.jinja derives after the check (never from pillar).
DERIVED = {"driver:kernel_version", "driver:state_id", "driver:fabricmanager_enabled", "repos:toolkit:present",
           "repos:toolkit:absent",
           "repos:unsigned_notice"}


def _known():
    known = set()
    for section, names in nvgpu_pillar.KEYS.items():
        known.update(f"{section}:{name}" if section else name for name in names)
    return known


def test_every_key_the_formula_reads_has_a_rule():
    read = _formula_keys() - DERIVED
    assert read, "no gpu.<key> found in salt/gpu"
    # gpu.repos.toolkit.legacy_repos' own keys (repo.baseurl) are read from a loop variable.
    assert read <= _known(), sorted(read - _known())


def _leaves(value, prefix=""):
    for key, item in value.items():
        path = f"{prefix}:{key}" if prefix else key
        if isinstance(item, dict) and path in nvgpu_pillar.SECTIONS + ("",):
            yield from _leaves(item, path)
        else:
            yield path


@pytest.mark.parametrize("source", ["defaults", "8", "9", "10", "example"])
def test_every_documented_key_is_known(source):
    gpu = {"defaults": DEFAULTS, "example": EXAMPLE}.get(source) or RELEASES[source]
    assert set(_leaves(gpu)) <= _known(), sorted(set(_leaves(gpu)) - _known())


@pytest.mark.parametrize("path", sorted(_known() - set(nvgpu_pillar.SECTIONS)))
def test_every_known_key_rejects_a_value_of_the_wrong_type(path):
    errors = nvgpu_pillar.check(merged(at(path, {"x": object()})))
    assert errors and all(error.startswith(f"gpu:{path}") for error in errors), errors


def test_every_sls_that_reads_the_map_renders_the_rejection_first():
    for path in sorted((REPO / "salt/gpu").glob("*.sls")):
        lines = path.read_text().splitlines()
        imports = [i for i, line in enumerate(lines) if "gpu/map.jinja" in line]
        if path.name == "init.sls":
            assert imports, "init.sls must check pillar before its includes render the stages"
        for index in imports:
            assert 'import gpu, rejected with context' in lines[index], path
            assert lines[index + 1] == '{%- if rejected %}{% extends "gpu/rejected.jinja" %}{% endif %}', path


# ---------------------------------------------------------------------------- messages


def test_a_long_value_is_shortened_and_a_huge_number_still_reported():
    [error] = nvgpu_pillar.check(merged(at("driver:module", "x" * 10000)))
    assert len(error) < 600 and "(10002 characters)" in error
    [error] = nvgpu_pillar.check(merged(at("validate:timeout", 10**5000)))
    assert error.startswith("gpu:validate:timeout: ")


def test_one_call_names_every_bad_key_of_a_hostile_pillar():
    pillar = {
        "driver": {"nouveau_blacklist_file": "/etc/passwd", "stream": "550-dkms\n"},
        "toolkit": {"cdi_path": "/etc/shadow", "hook_path": "../x.json"},
        "repos": {"cuda": {"gpgcheck": 0, "baseurl": "HTTP://m/x", "gpgkey": "http://m/k"}},
        "selinux": {"policy_source": "HTTP://example.com/x.pp", "policy_hash": ""},
        "rootless_users": [{"name": "root"}, {"name": "alice\n"}, {"name": "bob", "subuid_start": 0},
                           {"name": "carol", "subuid_count": 1000000000000}],
        "validate": {"image": "img; rm -rf /", "timeout": -5, "pull": "sometimes"},
    }
    assert keys(nvgpu_pillar.check(merged(pillar))) == [
        "gpu:driver:stream",
        "gpu:driver:nouveau_blacklist_file",
        "gpu:toolkit:hook_path",
        "gpu:toolkit:cdi_path",
        "gpu:validate:image",
        "gpu:validate:timeout",
        "gpu:validate:pull",
        "gpu:rootless_users[0]:name",
        "gpu:rootless_users[1]:name",
        "gpu:rootless_users[2]:subuid_start",
        "gpu:rootless_users[3]:subuid_count",
        "gpu:repos:cuda:gpgcheck",
        "gpu:repos:cuda:gpgkey",
        "gpu:selinux:policy_hash",
    ]
