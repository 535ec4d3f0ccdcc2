"""
The initramfs execution module (_modules/nvgpu_initramfs.py): the check reads the image
with ``lsinitrd`` (the fake ``cmd.run_all`` prints what the image holds) and compares it
with the host's file in a temporary tree; the rebuild runs dracut as an argument list.
"""

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.unit.conftest import KERNEL
from tests.unit.fakes import FakeSalt
from tests.unit.loader import load

BLACKLIST = "blacklist nouveau\noptions nouveau modeset=0\n"


@pytest.fixture
def initramfs(host):
    # Loaded after host moved the paths: INITRAMFS_IMAGE is in the tree.
    return load("_modules/nvgpu_initramfs.py")


@pytest.fixture
def configure_loader_modules(initramfs, run_all):
    return {
        initramfs: {
            "__salt__": FakeSalt(run_all=run_all),
            "__grains__": {"kernel": "Linux"},
            "__opts__": {"test": False},
            "__context__": {},
        }
    }


@pytest.fixture
def blacklist(host):
    """The blacklist on the host; its absolute path as nvgpu sees it."""
    return str(host.write("/etc/modprobe.d/blacklist-nouveau.conf", BLACKLIST))


@pytest.fixture
def image(host):
    return host.write(f"/boot/initramfs-{KERNEL}.img", "an image\n")


def test_virtual(initramfs):
    assert initramfs.__virtual__() == "nvgpu_initramfs"
    initramfs.__grains__["kernel"] = "Darwin"
    assert initramfs.__virtual__()[0] is False


def test_image_of_the_running_and_of_another_kernel(initramfs, host):
    assert initramfs.image() == str(host.path(f"/boot/initramfs-{KERNEL}.img"))
    assert initramfs.image("5.14.0-1.el9.x86_64") == str(host.path("/boot/initramfs-5.14.0-1.el9.x86_64.img"))


class TestStaleFiles:
    def test_carried_as_on_the_host(self, initramfs, run_all, blacklist, image):
        run_all.on("lsinitrd", stdout=BLACKLIST)
        assert initramfs.stale_files([blacklist]) == {}
        argv, kwargs = run_all.calls[0]
        # lsinitrd takes the path inside the image without its leading slash.
        assert argv == ["lsinitrd", str(image), "-f", blacklist.lstrip("/")]
        assert kwargs["rstrip"] is False and kwargs["python_shell"] is False

    def test_not_in_the_image(self, initramfs, run_all, blacklist, image):
        run_all.on("lsinitrd", stdout="")
        assert initramfs.stale_files(blacklist, kernel=KERNEL) == {blacklist: f"not in {image}"}

    def test_an_older_copy(self, initramfs, run_all, blacklist, image):
        run_all.on("lsinitrd", stdout="blacklist nouveau\n")
        assert initramfs.stale_files([blacklist]) == {blacklist: f"{image} holds another version of it"}

    def test_no_image_runs_nothing(self, initramfs, run_all, blacklist, host):
        image = host.path(f"/boot/initramfs-{KERNEL}.img")
        assert initramfs.stale_files([blacklist]) == {blacklist: f"{image} does not exist"}
        assert run_all.calls == []

    def test_unreadable_image(self, initramfs, run_all, blacklist, image):
        run_all.on("lsinitrd", retcode=1, stderr="cpio: premature end of archive")
        assert initramfs.stale_files([blacklist]) == {
            blacklist: f"lsinitrd cannot read {image}: cpio: premature end of archive"}

    def test_file_not_on_the_host_yet(self, initramfs, run_all, host, image):
        missing = str(host.path("/etc/modprobe.d/blacklist-nouveau.conf"))
        assert initramfs.stale_files([missing]) == {missing: f"{missing} does not exist on the host"}
        assert run_all.calls == []

    def test_relative_path_refused(self, initramfs, run_all, image):
        with pytest.raises(SaltInvocationError, match="must be an absolute path"):
            initramfs.stale_files(["etc/modprobe.d/blacklist-nouveau.conf"])
        assert run_all.calls == []


class TestRebuild:
    def test_argv_without_shell_and_the_image(self, initramfs, run_all, host):
        run_all.on("dracut")
        assert initramfs.rebuild() == str(host.path(f"/boot/initramfs-{KERNEL}.img"))
        argv, kwargs = run_all.calls[0]
        assert argv == ["dracut", "-f", "--kver", KERNEL]
        assert kwargs["python_shell"] is False

    def test_another_command_and_kernel(self, initramfs, run_all):
        run_all.on("dracut")
        initramfs.rebuild("5.14.0-1.el9.x86_64", cmd=["dracut", "-f", "--regenerate-all", "--kver"])
        assert run_all.argvs == [["dracut", "-f", "--regenerate-all", "--kver", "5.14.0-1.el9.x86_64"]]

    def test_failure_carries_dracuts_words(self, initramfs, run_all, host):
        run_all.on("dracut", retcode=1, stderr="dracut: No permission to write to /boot.\n")
        with pytest.raises(CommandExecutionError) as err:
            initramfs.rebuild(KERNEL)
        image = host.path(f"/boot/initramfs-{KERNEL}.img")
        first = str(err.value).splitlines()[0]
        assert first == (f"rebuilding the initramfs {image} failed (`dracut -f --kver {KERNEL}` exited 1): "
                         "dracut: No permission to write to /boot.")
        assert "Additional info" not in str(err.value)
        assert err.value.info["stderr"] == "dracut: No permission to write to /boot.\n"

    @pytest.mark.parametrize("cmd", ["dracut -f --kver", [], {"cmd": "dracut"}, ["dracut", None]])
    def test_a_command_that_is_no_argument_list_runs_nothing(self, initramfs, run_all, cmd):
        with pytest.raises(SaltInvocationError):
            initramfs.rebuild(KERNEL, cmd=cmd)
        assert run_all.calls == []
