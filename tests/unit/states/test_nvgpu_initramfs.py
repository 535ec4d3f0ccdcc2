"""
The initramfs state (_states/nvgpu_initramfs.py) over the autospecced nvgpu_initramfs
execution functions: a current image runs nothing, test=True says why and runs nothing,
a stale one is rebuilt and checked again, a failed rebuild changes nothing so the next
run retries. Real runs (stand-in dracut and lsinitrd) are in tests/functional/test_faults.py.
"""

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.unit.fakes import FakeSalt
from tests.unit.loader import load, real

STATES = load("_states/nvgpu_initramfs.py")


@pytest.fixture
def mods():
    return FakeSalt(real("_modules/nvgpu_initramfs.py"))


@pytest.fixture
def opts():
    return {"test": False}


@pytest.fixture
def configure_loader_modules(mods, opts):
    return {STATES: {"__salt__": mods, "__opts__": opts, "__context__": {}}}


@pytest.fixture
def st():
    return STATES


def test_virtual(st, mods):
    assert st.__virtual__() == "nvgpu_initramfs"
    del mods["nvgpu_initramfs.stale_files"]
    loaded, reason = st.__virtual__()
    assert loaded is False and "nvgpu_initramfs" in reason


BLACKLIST = "/etc/modprobe.d/blacklist-nouveau.conf"
KVER = "4.18.0-513.24.1.el8_9.x86_64"
IMAGE = f"/boot/initramfs-{KVER}.img"
STALE = {BLACKLIST: f"not in {IMAGE}"}


@pytest.fixture
def initramfs(mods):
    mods.set("nvgpu_initramfs.image", IMAGE)
    mods.set("nvgpu_initramfs.rebuild", IMAGE)
    return mods


class TestCarries:
    def test_carrying_the_files_runs_nothing(self, st, initramfs):
        initramfs.set("nvgpu_initramfs.stale_files", {})
        ret = st.carries(KVER, [BLACKLIST])
        assert ret == {"name": KVER, "result": True, "changes": {},
                       "comment": f"The initramfs of {KVER} carries {BLACKLIST}"}
        assert initramfs.called("nvgpu_initramfs.stale_files") == [(([BLACKLIST],), {"kernel": KVER})]
        assert initramfs.actions() == []

    def test_test_mode_says_why_and_runs_nothing(self, st, initramfs, opts):
        opts["test"] = True
        initramfs.set("nvgpu_initramfs.stale_files", STALE)
        ret = st.carries(KVER, BLACKLIST)
        assert ret["result"] is None
        assert ret["changes"] == {"rebuilt": IMAGE, "stale": STALE}
        assert ret["comment"] == f"The initramfs {IMAGE} would be rebuilt ({BLACKLIST}: not in {IMAGE})"
        assert initramfs.actions() == []

    def test_stale_is_rebuilt_with_the_command_and_checked_again(self, st, initramfs):
        initramfs.set("nvgpu_initramfs.stale_files", STALE, {})
        ret = st.carries(KVER, [BLACKLIST], cmd=["dracut", "-f", "--kver"])
        assert ret["result"] is True
        assert ret["changes"] == {"rebuilt": IMAGE, "stale": STALE}
        assert ret["comment"] == f"Rebuilt the initramfs {IMAGE} ({BLACKLIST}: not in {IMAGE})"
        assert initramfs.called("nvgpu_initramfs.rebuild") == [((KVER,), {"cmd": ["dracut", "-f", "--kver"]})]
        assert len(initramfs.called("nvgpu_initramfs.stale_files")) == 2

    def test_a_failed_rebuild_has_dracuts_words_and_no_change_so_the_next_run_retries(self, st, initramfs):
        initramfs.set("nvgpu_initramfs.stale_files", STALE)
        said = f"rebuilding the initramfs {IMAGE} failed (`dracut -f --kver {KVER}` exited 1): dracut: No permission"
        initramfs.set("nvgpu_initramfs.rebuild", CommandExecutionError(said + "\nFix: free space in /boot"))
        ret = st.carries(KVER, [BLACKLIST])
        assert ret["result"] is False and ret["changes"] == {}
        assert ret["comment"].splitlines() == [said, "Fix: free space in /boot",
                                               f"Why a rebuild: {BLACKLIST}: not in {IMAGE}"]

    def test_rebuilt_but_still_stale_fails(self, st, initramfs):
        initramfs.set("nvgpu_initramfs.stale_files", STALE)
        ret = st.carries(KVER, [BLACKLIST])
        assert ret["result"] is False
        assert f"dracut -f --kver {KVER} exited 0 but the initramfs still does not carry {BLACKLIST}" in ret["comment"]
        assert f"lsinitrd {IMAGE}" in ret["comment"]

    def test_a_check_that_cannot_run_fails_without_rebuilding(self, st, initramfs):
        initramfs.set("nvgpu_initramfs.stale_files", SaltInvocationError("a file the initramfs must carry must be "
                                                                         "an absolute path, not 'x'"))
        ret = st.carries(KVER, ["x"])
        assert ret["result"] is False and "absolute path" in ret["comment"]
        assert initramfs.actions() == []

    @pytest.mark.parametrize("cmd", ["dracut -f --kver", [], None])
    def test_a_command_that_is_no_argument_list_fails_naming_the_pillar_key(self, st, initramfs, cmd):
        ret = st.carries(KVER, [BLACKLIST], cmd=cmd)
        assert ret["result"] is False and "gpu:driver:initramfs_cmd" in ret["comment"]
        assert initramfs.names() == []
