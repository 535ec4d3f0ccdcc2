"""
The rootless execution module (_modules/nvgpu_rootless.py): /etc/subuid and /etc/subgid
read as real files in a temporary tree; changed only through ``usermod``, which the fake
``cmd.run_all`` carries out on those files.
"""

import shutil

import nvgpu_node
import pytest
import salt.modules.useradd
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.unit.fakes import FakeSalt
from tests.unit.loader import load

OPTIONS = {"--add-subuids": ("subuid", "add"), "--del-subuids": ("subuid", "del"),
           "--add-subgids": ("subgid", "add"), "--del-subgids": ("subgid", "del")}


@pytest.fixture
def rootless(host):
    return load("_modules/nvgpu_rootless.py")


@pytest.fixture
def configure_loader_modules(rootless, run_all):
    return {
        rootless: {
            "__salt__": FakeSalt(functions={"user.info": salt.modules.useradd.info}, run_all=run_all),
            "__grains__": {"kernel": "Linux"},
            "__opts__": {"test": False},
            "__context__": {},
        }
    }


@pytest.fixture
def usermod(host, run_all):
    """usermod --del-sub?ids FIRST-LAST --add-sub?ids FIRST-LAST USER, done on the tree's files."""

    def effect(argv, kwargs):
        user = argv[-1]
        for option, value in zip(argv[1:-1:2], argv[2:-1:2]):
            kind, action = OPTIONS[option]
            first, last = (int(n) for n in value.split("-"))
            path = host.path(f"/etc/{kind}")
            lines = path.read_text().splitlines() if path.exists() else []
            entry = f"{user}:{first}:{last - first + 1}"
            lines = [line for line in lines if line != entry] if action == "del" else [*lines, entry]
            path.write_text("".join(f"{line}\n" for line in lines))

    run_all.on("usermod", effect=effect)
    return run_all


def test_virtual(rootless):
    assert rootless.__virtual__() == "nvgpu_rootless"
    rootless.__grains__["kernel"] = "SunOS"
    assert rootless.__virtual__()[0] is False


class TestRead:
    def test_subids(self, rootless, host):
        host.write("/etc/subuid", "alice:100000:65536\ncarol:231072:65536\nalice:500000:10\n")
        host.write("/etc/subgid", "alice:300000:65536\n")
        assert rootless.subids("alice") == [{"start": 100000, "count": 65536}, {"start": 500000, "count": 10}]
        assert rootless.subids("alice", kind="subgid") == [{"start": 300000, "count": 65536}]
        assert rootless.subids("bob") == []

    def test_no_files(self, rootless):
        assert rootless.subids("alice") == []
        assert rootless.free_subid_start() == 100000

    def test_bad_kind(self, rootless):
        with pytest.raises(SaltInvocationError, match="subuid or subgid"):
            rootless.subids("alice", kind="uid")

    def test_free_subid_start(self, rootless, host):
        host.write("/etc/subuid", "carol:231072:65536\nalice:100000:65536\n")
        assert rootless.free_subid_start(65536) == 165536
        assert rootless.free_subid_start(70000) == 296608
        assert rootless.free_subid_start(1000, minimum=200000) == 200000
        assert rootless.free_subid_start(65536, minimum=200000) == 296608
        assert rootless.free_subid_start(kind="subgid") == 100000

    def test_free_subid_start_past_a_range_that_spans_the_window(self, rootless, host):
        host.write("/etc/subuid", "big:90000:200000\nsmall:100000:10\n")
        assert rootless.free_subid_start(65536) == 290000


class TestOverlaps:
    def test_other_users_ranges_that_the_new_one_would_touch(self, rootless, host):
        host.write("/etc/subuid", "alice:100000:65536\ncarol:231072:65536\ngpuuser:300000:65536\n")
        assert rootless.overlaps("gpuuser", 165535, 2) == [{"user": "alice", "start": 100000, "count": 65536}]
        assert rootless.overlaps("gpuuser", 165536, 65536) == []  # ends right before carol's
        assert rootless.overlaps("gpuuser", 300000, 65536) == []  # its own range is no overlap
        assert [o["user"] for o in rootless.overlaps("gpuuser", 150000, 100000)] == ["alice", "carol"]
        assert rootless.overlaps("gpuuser", 100000, kind="subgid") == []


class TestSetSubids:
    def test_new_user_gets_one_range(self, rootless, host, usermod):
        host.write("/etc/subuid", "alice:100000:65536\n")
        assert rootless.set_subids("bob", 165536) == [{"start": 165536, "count": 65536}]
        assert usermod.argvs == [["usermod", "--add-subuids", "165536-231071", "bob"]]

    def test_existing_ranges_are_replaced_in_one_call(self, rootless, host, usermod):
        host.write("/etc/subuid", "alice:100000:65536\ncarol:231072:65536\nalice:500000:10\n")
        assert rootless.set_subids("alice", "400000", "65536") == [{"start": 400000, "count": 65536}]
        assert usermod.argvs == [["usermod", "--del-subuids", "100000-165535", "--del-subuids", "500000-500009",
                                  "--add-subuids", "400000-465535", "alice"]]
        assert sorted(host.path("/etc/subuid").read_text().splitlines()) == [
            "alice:400000:65536", "carol:231072:65536"]

    def test_subgid(self, rootless, host, usermod):
        host.write("/etc/subgid", "alice:100000:65536\n")
        assert rootless.set_subids("alice", 200000, 1000, kind="subgid") == [{"start": 200000, "count": 1000}]
        assert usermod.argvs == [["usermod", "--del-subgids", "100000-165535", "--add-subgids", "200000-200999", "alice"]]
        assert not host.path("/etc/subuid").exists()

    def test_bad_kind_runs_nothing(self, rootless, run_all):
        with pytest.raises(SaltInvocationError):
            rootless.set_subids("alice", 100000, kind="uid")
        assert run_all.calls == []

    def test_usermod_failure(self, rootless, run_all):
        run_all.on("usermod", retcode=6, stderr="usermod: user 'nobody2' does not exist")
        with pytest.raises(CommandExecutionError) as err:
            rootless.set_subids("nobody2", 100000)
        assert "does not exist" in str(err.value) and "--add-subuids" in str(err.value)


class TestMigrate:
    def test_runs_podman_as_the_user_in_its_home(self, rootless, run_all, which, tmp_path):
        which.tools.add("podman")
        home = tmp_path / "home" / "gpuuser"
        home.mkdir(parents=True)
        rootless.__salt__.set("user.info", {"home": str(home), "uid": 2001, "gid": 2001})
        setpriv = shutil.which("setpriv", path=nvgpu_node.USER_PATH)
        run_all.on(setpriv)
        assert rootless.migrate("gpuuser") is True
        (argv, kwargs), = run_all.calls
        assert argv == [setpriv, "--reuid=2001", "--regid=2001", "--init-groups", "--",
                        which.path("podman"), "system", "migrate"]
        assert "runas" not in kwargs and kwargs["cwd"] == str(home) and kwargs["clean_env"] is True
        assert kwargs["env"]["HOME"] == str(home)

    def test_without_podman_runs_nothing(self, rootless, run_all, which):
        which.tools.discard("podman")
        assert rootless.migrate("gpuuser") is False
        assert run_all.calls == []


# ---------------------------------------------------------------------------- lingering


def test_enable_linger_runs_loginctl_and_checks_its_file(rootless, host, run_all):
    linger = host.path("/var/lib/systemd/linger/gpuuser")
    run_all.on("loginctl", "enable-linger", effect=lambda argv, kwargs: host.touch("/var/lib/systemd/linger/gpuuser"))
    assert rootless.lingers("gpuuser") is False
    assert rootless.enable_linger("gpuuser") is True
    assert run_all.argvs == [["loginctl", "enable-linger", "gpuuser"]] and linger.exists()
    assert rootless.lingers("gpuuser") is True


def test_enable_linger_failures_name_the_user_and_the_fix(rootless, run_all):
    run_all.on("loginctl", retcode=1, stderr="Failed to look up user gpuuser: No such process")
    with pytest.raises(CommandExecutionError, match="lingering on for gpuuser.*No such process"):
        rootless.enable_linger("gpuuser")
    # loginctl said yes but logind wrote nothing (no logind listening): not taken as done.
    run_all.on("loginctl", retcode=0)
    with pytest.raises(CommandExecutionError, match="exited 0, but .*linger/gpuuser does not exist"):
        rootless.enable_linger("gpuuser")
