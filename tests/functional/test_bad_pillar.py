"""
Bad pillar against a converged simulated node, through real `salt-call --local
state.apply`: every input is rejected before any state runs. For each one:

- the run fails (non-zero exit) with one state, gpu-rejected-<sls>, whose comment names
  the bad key (and every other bad key of the same pillar);
- nothing changed on the node (its snapshot is identical but for Salt's bookkeeping);
- no Python traceback in stdout or stderr, at the default log level with Salt's own
  output and at --log-level=quiet with JSON.

One node is converged once for the whole module; the inputs take about a second each.
"""

import json

import pytest

from tests.functional.test_formula import BOOKKEEPING
from tests.node import SALT_CALL, Node, site_pillar

pytestmark = pytest.mark.node

# The stage SLS files an operator applies; every input uses one, in turn.
SLS = ("gpu", "gpu.driver", "gpu.toolkit", "gpu.users", "gpu.validate", "gpu.selinux", "gpu.runtime")


def user(**fields):
    return {"rootless_users": [{"name": "alice", **fields}]}


def users(*entries):
    return {"rootless_users": list(entries)}


# (id, the `gpu` overrides laid over the site's pillar, the keys the message must name).
# A value of None for "gpu" below stands for the pillar `gpu` itself.
CASES = [
    # ----------------------------------------------------------------- types
    ("gpu is a string", "x", ["gpu"]),
    ("gpu is a list", ["driver"], ["gpu"]),
    ("driver is a string", {"driver": "550"}, ["gpu:driver"]),
    ("uvm is the string false", {"driver": {"uvm": "false"}}, ["gpu:driver:uvm"]),
    ("legacy is the string false", {"repos": {"toolkit": {"legacy": "false"}}}, ["gpu:repos:toolkit:legacy"]),
    ("initramfs_cmd is a mapping", {"driver": {"initramfs_cmd": {"cmd": "dracut"}}}, ["gpu:driver:initramfs_cmd"]),
    ("rootless_users is a mapping", {"rootless_users": {"name": "alice"}}, ["gpu:rootless_users"]),
    ("toolkit rootless is yes", {"toolkit": {"rootless": "yes"}}, ["gpu:toolkit:rootless"]),
    ("timeout is a string", {"validate": {"timeout": "300"}}, ["gpu:validate:timeout"]),
    ("selinux enabled is 1", {"selinux": {"enabled": 1}}, ["gpu:selinux:enabled"]),
    ("pull is a list", {"validate": {"pull": ["always"]}}, ["gpu:validate:pull"]),
    ("cuda version is a float", {"cuda": {"version": 12.1}}, ["gpu:cuda:version"]),
    # ----------------------------------------------------------------- nulls
    ("driver is null", {"driver": None}, ["gpu:driver"]),
    ("stream is null", {"driver": {"stream": None}}, ["gpu:driver:stream"]),
    ("mode is null", {"toolkit": {"mode": None}}, ["gpu:toolkit:mode"]),
    ("blacklist file is null", {"driver": {"nouveau_blacklist_file": None}}, ["gpu:driver:nouveau_blacklist_file"]),
    ("a user is null", {"rootless_users": [None]}, ["gpu:rootless_users[0]"]),
    ("timeout is null", {"validate": {"timeout": None}}, ["gpu:validate:timeout"]),
    # ----------------------------------------------------------------- paths
    ("blacklist file is /etc/passwd", {"driver": {"nouveau_blacklist_file": "/etc/passwd"}},
     ["gpu:driver:nouveau_blacklist_file"]),
    ("blacklist file in a subdirectory", {"driver": {"nouveau_blacklist_file": "/etc/modprobe.d/x/y.conf"}},
     ["gpu:driver:nouveau_blacklist_file"]),
    ("cdi_path is /etc/passwd", {"toolkit": {"cdi_path": "/etc/passwd"}}, ["gpu:toolkit:cdi_path"]),
    ("cdi_path is relative", {"toolkit": {"cdi_path": "nvidia.yaml"}}, ["gpu:toolkit:cdi_path"]),
    ("cdi_path climbs out", {"toolkit": {"cdi_path": "/etc/cdi/../passwd.yaml"}}, ["gpu:toolkit:cdi_path"]),
    ("cdi_path has a NUL", {"toolkit": {"cdi_path": "/etc/cdi/nvidia.yaml\x00"}}, ["gpu:toolkit:cdi_path"]),
    ("hook_path outside the hook dirs", {"toolkit": {"hook_path": "/etc/sudoers.d/nvidia.json"}},
     ["gpu:toolkit:hook_path"]),
    ("hook_binary is relative", {"toolkit": {"hook_binary": "bin/nvidia-container-runtime-hook"}},
     ["gpu:toolkit:hook_binary"]),
    # ----------------------------------------------------------------- schemes and signatures
    ("upper-case HTTP policy without a hash",
     {"selinux": {"policy_source": "HTTP://example.com/nvidia-container.pp", "policy_hash": ""}},
     ["gpu:selinux:policy_hash"]),
    ("mixed-case https policy without a hash",
     {"selinux": {"policy_source": "hTTpS://example.com/nvidia-container.pp", "policy_hash": ""}},
     ["gpu:selinux:policy_hash"]),
    ("policy source is a bare file name", {"selinux": {"policy_source": "nvidia-container.pp"}},
     ["gpu:selinux:policy_source"]),
    ("gpg key over plain http", {"repos": {"cuda": {"gpgkey": "HTTP://mirror.example/cuda.pub"}}},
     ["gpu:repos:cuda:gpgkey"]),
    ("baseurl with a gopher scheme", {"repos": {"cuda": {"baseurl": "gopher://mirror.example/cuda"}}},
     ["gpu:repos:cuda:baseurl"]),
    ("baseurl without a scheme", {"repos": {"toolkit": {"baseurl": "mirror.example/toolkit"}}},
     ["gpu:repos:toolkit:baseurl"]),
    ("cuda gpgcheck 0", {"repos": {"cuda": {"gpgcheck": 0}}}, ["gpu:repos:cuda:gpgcheck"]),
    ("toolkit repo_gpgcheck false", {"repos": {"toolkit": {"repo_gpgcheck": False}}},
     ["gpu:repos:toolkit:repo_gpgcheck"]),
    ("opt-out as a string", {"repos": {"allow_unsigned": "true", "cuda": {"gpgcheck": 0}}},
     ["gpu:repos:allow_unsigned", "gpu:repos:cuda:gpgcheck"]),
    ("policy hash is md5", {"selinux": {"policy_hash": "md5=" + "0" * 32}}, ["gpu:selinux:policy_hash"]),
    # ----------------------------------------------------------------- newlines and control characters
    ("stream with a newline", {"driver": {"stream": "550-dkms\n"}}, ["gpu:driver:stream"]),
    ("user name with a newline", user(name="alice\n"), ["gpu:rootless_users[0]:name"]),
    ("mode with a newline", {"toolkit": {"mode": "cdi\n"}}, ["gpu:toolkit:mode"]),
    ("profile with a newline", {"driver": {"profile": "default\n"}}, ["gpu:driver:profile"]),
    ("image with a newline", {"validate": {"image": "localhost:5000/nvgpu/cuda-vector-add:v0.1\n"}},
     ["gpu:validate:image"]),
    ("policy source with a carriage return", {"selinux": {"policy_source": "/srv/nvidia-container.pp\r"}},
     ["gpu:selinux:policy_source"]),
    ("repo name injecting YAML", {"repos": {"cuda": {"name": "cuda\n    - gpgcheck: 0"}}}, ["gpu:repos:cuda:name"]),
    ("initramfs argument with a newline", {"driver": {"initramfs_cmd": ["dracut", "-f\n"]}},
     ["gpu:driver:initramfs_cmd"]),
    # ----------------------------------------------------------------- duplicates and users
    ("the same user twice", users({"name": "alice"}, {"name": "alice"}), ["gpu:rootless_users[1]:name"]),
    ("the same uid twice", users({"name": "alice", "uid": 2001}, {"name": "bob", "uid": 2001}),
     ["gpu:rootless_users[1]:uid"]),
    ("the same subuid_start twice",
     users({"name": "alice", "subuid_start": 200000}, {"name": "bob", "subuid_start": 200000}),
     ["gpu:rootless_users[1]:subuid_start"]),
    ("overlapping ranges",
     users({"name": "alice", "subuid_start": 200000}, {"name": "bob", "subuid_start": 265000}),
     ["gpu:rootless_users[1]:subuid_start"]),
    ("a user named root", user(name="root"), ["gpu:rootless_users[0]:name"]),
    ("a uid inside another's range", users({"name": "alice", "subuid_start": 200000}, {"name": "bob", "uid": 200500}),
     ["gpu:rootless_users[1]:uid"]),
    ("a legacy repo named as the current one",
     {"repos": {"toolkit": {"legacy": True, "legacy_repos": {"nvidia-container-toolkit": {
         "baseurl": "https://mirror.example/x", "gpgkey": "https://mirror.example/k"}}}}},
     ["gpu:repos:toolkit:legacy_repos:nvidia-container-toolkit"]),
    ("a typo in a key", {"driver": {"strem": "550-dkms"}}, ["gpu:driver:strem"]),
    ("a typo in a user key", user(subuid_star=200000), ["gpu:rootless_users[0]:subuid_star"]),
    # ----------------------------------------------------------------- unicode
    ("full-width digits in the stream", {"driver": {"stream": "\uff15\uff15\uff10-dkms"}}, ["gpu:driver:stream"]),
    ("an accented user name", user(name="\u00e1lice"), ["gpu:rootless_users[0]:name"]),
    ("a non-ASCII image", {"validate": {"image": "docker.io/\u00fc/cuda:v1"}}, ["gpu:validate:image"]),
    ("a non-ASCII CDI path", {"toolkit": {"cdi_path": "/etc/cdi/nv\u00eddia.yaml"}}, ["gpu:toolkit:cdi_path"]),
    ("a unicode hyphen in the module", {"driver": {"module": "nvidia\u2010driver"}}, ["gpu:driver:module"]),
    ("Arabic-Indic digits as subuid_start", user(subuid_start="\u0661\u0660\u0660\u0660\u0660\u0660"),
     ["gpu:rootless_users[0]:subuid_start"]),
    ("a line separator in the package", {"cuda": {"package": "cuda\u2028"}}, ["gpu:cuda:package"]),
    # ----------------------------------------------------------------- huge numbers and ranges
    ("a trillion subordinate ids", user(subuid_count=1000000000000), ["gpu:rootless_users[0]:subuid_count"]),
    ("a uid of 2**40", user(uid=2**40), ["gpu:rootless_users[0]:uid"]),
    ("a timeout of 1e300", {"validate": {"timeout": 1e300}}, ["gpu:validate:timeout"]),
    ("a subuid_start past 2**32", user(subuid_start=2**32), ["gpu:rootless_users[0]:subuid_start"]),
    ("a range ending past the id space", user(subuid_start=4294900000, subuid_count=100000),
     ["gpu:rootless_users[0]:subuid_count"]),
    ("a stream of 10**30", {"driver": {"stream": 10**30}}, ["gpu:driver:stream"]),
    ("a negative timeout", {"validate": {"timeout": -1}}, ["gpu:validate:timeout"]),
    ("subuid_start 0", user(subuid_start=0), ["gpu:rootless_users[0]:subuid_start"]),
    ("a system uid", user(uid=999), ["gpu:rootless_users[0]:uid"]),
    ("uid 0", user(uid=0), ["gpu:rootless_users[0]:uid"]),
    ("no subordinate ids", user(subuid_count=0), ["gpu:rootless_users[0]:subuid_count"]),
    ("a uid with a leading zero", user(uid="02001"), ["gpu:rootless_users[0]:uid"]),
    # ----------------------------------------------------------------- shell metacharacters
    ("initramfs_cmd as a shell line", {"driver": {"initramfs_cmd": "dracut -f; rm -rf /boot"}},
     ["gpu:driver:initramfs_cmd"]),
    ("initramfs_cmd starting with an option", {"driver": {"initramfs_cmd": ["--force"]}},
     ["gpu:driver:initramfs_cmd"]),
    ("image with a command after it", {"validate": {"image": "img; rm -rf /"}}, ["gpu:validate:image"]),
    ("image that is an option", {"validate": {"image": "--privileged"}}, ["gpu:validate:image"]),
    ("package with a command", {"cuda": {"package": "cuda; reboot"}}, ["gpu:cuda:package"]),
    ("version with a substitution", {"cuda": {"version": "$(reboot)"}}, ["gpu:cuda:version"]),
    ("user name with backticks", user(name="a`id`"), ["gpu:rootless_users[0]:name"]),
    ("baseurl with a substitution", {"repos": {"cuda": {"baseurl": "https://mirror.example/$(id)"}}},
     ["gpu:repos:cuda:baseurl"]),
    ("module with &&", {"driver": {"module": "nvidia-driver && reboot"}}, ["gpu:driver:module"]),
    ("hook_binary with an argument", {"toolkit": {"hook_binary": "/usr/bin/nvidia-container-runtime-hook -x"}},
     ["gpu:toolkit:hook_binary"]),
    ("blacklist file with a pipe", {"driver": {"nouveau_blacklist_file": "/etc/modprobe.d/x|y.conf"}},
     ["gpu:driver:nouveau_blacklist_file"]),
]


def _pillar(node_assets, gpu):
    if not isinstance(gpu, dict):
        return {"gpu": gpu}
    return site_pillar(node_assets, **gpu)


def _config(snapshot):
    return {k: v for k, v in snapshot.items() if not k.startswith(BOOKKEEPING)}


class Rejection:
    """One rejected `salt-call state.apply`: its output, in Salt's own words or JSON."""

    def __init__(self, node, pillar, sls, quiet, test=False, text=str):
        argv = [SALT_CALL, "--local"]
        argv += ["--out=json", "--log-level=quiet"] if quiet else []
        argv += ["state.apply", sls, "pillar=" + text(json.dumps(pillar))]
        argv += ["test=True"] if test else []
        self.sls = sls
        self.quiet = quiet
        self.proc = node.run(argv, timeout=300)
        self.output = self.proc.stdout + self.proc.stderr

    def problems(self, keys):
        """Everything that is wrong with this rejection (an empty list when it is clean)."""
        found = []
        if self.proc.returncode == 0:
            found.append("the run succeeded")
        if "Traceback" in self.output or 'File "' in self.output:
            found.append("a Python traceback in the output")
        if "Data failed to compile" in self.output or "Rendering SLS" in self.output:
            found.append("a render error instead of the rejection state")
        state_id = f"gpu-rejected-{self.sls}"
        if self.quiet:
            try:
                states = json.loads(self.proc.stdout)["local"]
            except (ValueError, KeyError, TypeError):
                return [*found, "no JSON state results"]
            if [s.get("__id__") for s in states.values()] != [state_id]:
                found.append(f"states {[s.get('__id__') for s in states.values()]} instead of {state_id} alone")
            comment = "".join(s.get("comment", "") for s in states.values())
        else:
            if f"ID: {state_id}" not in self.proc.stdout or "Total states run:     1" not in self.proc.stdout:
                found.append(f"not {state_id} as the one state run")
            comment = self.proc.stdout
        found += [f"{key} not named" for key in keys if f"- {key}: " not in comment and f"- {key}:" not in comment]
        return found


@pytest.fixture(scope="module")
def converged(node_assets):
    """One node, converged once with the site's good pillar, for every input of this module."""
    node = Node.create(node_assets)
    res = node.salt_call("state.apply", "gpu", pillar=site_pillar(node_assets))
    assert res.retcode == 0 and isinstance(res.data, dict), res.stdout[-2000:] + res.stderr[-2000:]
    assert not [v for v in res.data.values() if v["result"] is False]
    yield node
    node.destroy()


def test_every_bad_input_is_rejected_before_any_change_naming_its_key(converged, node_assets):
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)
    before = _config(converged.snapshot())
    report = {}
    for index, (name, gpu, keys) in enumerate(CASES):
        # Every stage SLS in turn; Salt's own output at the default log level for half
        # of the inputs, JSON at --log-level=quiet for the other half; a few in test mode.
        rejection = Rejection(converged, _pillar(node_assets, gpu), SLS[index % len(SLS)], quiet=index % 2 == 1,
                              test=index % 10 == 9)
        problems = rejection.problems(keys)
        after = _config(converged.snapshot())
        if after != before:
            problems.append(f"the node changed: {sorted(set(after.items()) ^ set(before.items()))[:5]}")
            before = after
        if problems:
            report[name] = (problems, rejection.output[-1500:])
    tried, clean = len(CASES), len(CASES) - len(report)
    print(f"\nbad pillar inputs tried: {tried}, rejected cleanly: {clean}")
    assert not report, json.dumps(report, indent=1, ensure_ascii=False)


def _leaves(value, prefix=()):
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*prefix, key))
    else:
        yield prefix


def _merge(into, value):
    for key, item in value.items():
        if isinstance(item, dict) and isinstance(into.get(key), dict):
            _merge(into[key], item)
        else:
            into[key] = item


# Inputs that would hide others' errors in one pillar: with selinux:enabled not true the
# policy keys are not read, so not checked.
NOT_COMBINED = {"selinux enabled is 1"}


def test_one_message_names_every_bad_key_of_one_pillar(converged, node_assets):
    gpu, keys, taken = {}, [], set()
    for name, case, case_keys in CASES:
        if name in NOT_COMBINED or not isinstance(case, dict) or "rootless_users" in case:
            continue
        paths = set(_leaves(case))
        if any(len(path) < 2 for path in paths):
            continue  # replaces a whole section
        if any(path[: len(other)] == other or other[: len(path)] == path for path in paths for other in taken):
            continue  # writes where an earlier input did
        taken |= paths
        keys += case_keys
        _merge(gpu, case)
    assert len(keys) >= 20, keys
    before = _config(converged.snapshot())
    rejection = Rejection(converged, _pillar(node_assets, gpu), "gpu", quiet=True)
    assert rejection.problems(keys) == [], rejection.output[-3000:]
    assert f"({len(keys)} bad keys;" in rejection.output
    assert _config(converged.snapshot()) == before


def test_the_rejection_is_the_same_without_the_site_pillar(converged):
    # No site mirrors at all: still one message, still no traceback (NVIDIA's policy URL
    # comes with its published hash, so only the stream is wrong).
    rejection = Rejection(converged, {"gpu": {"driver": {"stream": "latest:dkms"}}}, "gpu", quiet=False)
    assert rejection.problems(["gpu:driver:stream"]) == [], rejection.output[-3000:]


def test_the_signature_opt_out_is_reported_on_every_run(converged, node_assets):
    pillar = site_pillar(node_assets, repos={**site_pillar(node_assets)["gpu"]["repos"], "allow_unsigned": True,
                                             "toolkit": {**site_pillar(node_assets)["gpu"]["repos"]["toolkit"],
                                                         "repo_gpgcheck": 0}})
    for _run in range(2):
        res = converged.salt_call("state.apply", "gpu", pillar=pillar)
        assert res.retcode == 0, res.stdout[-2000:]
        [notice] = [v for v in res.data.values() if v["__id__"] == "gpu-repos-unsigned-allowed"]
        assert notice["result"] is True
        assert "toolkit gpgcheck=1 repo_gpgcheck=0" in notice["comment"], notice["comment"]
    assert "repo_gpgcheck=0" in converged.read_file("/etc/yum.repos.d/nvidia-container-toolkit.repo").replace(" ", "")
    res = converged.salt_call("state.apply", "gpu", pillar=site_pillar(node_assets))
    assert res.retcode == 0
    assert "gpu-repos-unsigned-allowed" not in {v["__id__"] for v in res.data.values()}


def test_nan_and_infinity_are_rejected_too(converged, node_assets):
    # JSON has no NaN or infinity; the command line's pillar is YAML, which has both.
    for value in (".nan", ".inf", "-.inf"):
        pillar = site_pillar(node_assets, validate={"timeout": "VALUE"})
        rejection = Rejection(converged, pillar, "gpu.validate", quiet=True,
                              text=lambda t, value=value: t.replace('"VALUE"', value))
        assert rejection.problems(["gpu:validate:timeout"]) == [], rejection.output[-2000:]
        assert f"timeout: {value.replace('.', '')} is not" in rejection.output  # nan, inf, -inf


@pytest.mark.parametrize(
    "grains, words",
    [({"os_family": "Debian", "os": "Ubuntu"}, "this minion is Ubuntu (os_family Debian)"),
     ({"osmajorrelease": 11}, "RHEL 11 is not supported")],
    ids=["debian", "rhel11"],
)
def test_an_unsupported_minion_is_rejected_the_same_way(converged, grains, words):
    import yaml

    config = yaml.safe_load(converged.read_file("/etc/salt/minion"))
    changed = {**config, "grains": {**config["grains"], **grains}}
    converged.write_file("/etc/salt/minion", yaml.safe_dump(changed))
    try:
        before = _config(converged.snapshot())
        for quiet in (False, True):
            rejection = Rejection(converged, {}, "gpu", quiet=quiet)
            assert rejection.problems([]) == [], rejection.output[-2000:]
            assert words in rejection.output
        assert _config(converged.snapshot()) == before
    finally:
        converged.write_file("/etc/salt/minion", yaml.safe_dump(config))
