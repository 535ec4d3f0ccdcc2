"""
Execution module for a kernel's initramfs: whether it carries files as they are on the
host (``lsinitrd``), and its rebuild (``dracut``).

The ``nvgpu_initramfs.carries`` state checks and rebuilds through these: the nouveau
blacklist must be in the initramfs too, or nouveau claims the GPU at early boot.

:depends: dracut (dracut, lsinitrd)
"""

import os

import nvgpu_node
from salt.exceptions import SaltInvocationError

__virtualname__ = "nvgpu_initramfs"

DEFAULT_CMD = ("dracut", "-f", "--kver")


def __virtual__():
    if __grains__.get("kernel") != "Linux":
        return (False, "The nvgpu_initramfs execution module only runs on Linux minions")
    return __virtualname__


def image(kernel=None):
    """
    Return the path of the initramfs of ``kernel`` (default: the running kernel):
    ``/boot/initramfs-<kernel>.img``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_initramfs.image
    """
    return nvgpu_node.INITRAMFS_IMAGE.format(kernel or nvgpu_node.kernel_release())


def stale_files(files, kernel=None):
    """
    Return ``{path: why}`` for each of ``files`` (absolute paths on the host) that the
    initramfs of ``kernel`` (default: the running kernel) does not carry as it is on the
    host: ``lsinitrd IMAGE -f PATH`` prints the copy in the image, compared with the
    file. ``{}`` when the image carries them all. Changes nothing.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_initramfs.stale_files '["/etc/modprobe.d/blacklist-nouveau.conf"]'
    """
    if isinstance(files, str):
        files = [files]
    for path in files:
        nvgpu_node.require_absolute(path, "a file the initramfs must carry")
    path_of_image = image(kernel)
    if not os.path.exists(path_of_image):
        return {path: f"{path_of_image} does not exist" for path in files}
    stale = {}
    for path in files:
        wanted = nvgpu_node.read_file(path)
        if wanted is None:
            stale[path] = f"{path} does not exist on the host"
            continue
        ret = __salt__["cmd.run_all"](
            ["lsinitrd", path_of_image, "-f", path.lstrip("/")],
            python_shell=False,
            ignore_retcode=True,
            rstrip=False,
        )
        said = (ret.get("stderr") or "").strip()
        if ret["retcode"] != 0:
            stale[path] = f"lsinitrd cannot read {path_of_image}: {said or 'exit ' + str(ret['retcode'])}"
        elif ret["stdout"] == wanted:
            continue
        elif not ret["stdout"]:
            stale[path] = f"not in {path_of_image}"
        else:
            stale[path] = f"{path_of_image} holds another version of it"
    return stale


def rebuild(kernel=None, cmd=DEFAULT_CMD):
    """
    Rebuild the initramfs of ``kernel`` (default: the running kernel) with ``cmd``, an
    argument list to which the kernel release is appended (default
    ``dracut -f --kver``), run without a shell. Raises CommandExecutionError with the
    tool's own words when it fails. Returns the image's path.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_initramfs.rebuild
    """
    if isinstance(cmd, str) or not isinstance(cmd, (list, tuple)) or not cmd:
        raise SaltInvocationError(f"cmd must be a non-empty argument list such as [dracut, -f, --kver], not {cmd!r}")
    if not all(isinstance(arg, (str, int)) for arg in cmd):
        raise SaltInvocationError(f"cmd must hold strings only, not {cmd!r}")
    kernel = kernel or nvgpu_node.kernel_release()
    path = image(kernel)
    nvgpu_node.run_checked(
        __salt__["cmd.run_all"],
        [str(arg) for arg in cmd] + [kernel],
        f"rebuilding the initramfs {path}",
        f"free space in {os.path.dirname(path)} and check that it is writable, then apply again "
        "(the state checks the image itself, so it retries)",
    )
    return path
