"""
State for the initramfs of a kernel: it carries the files it must (the nouveau
blacklist: without it nouveau claims the GPU at early boot), checked in the image
itself, so a rebuild that failed is retried on the next run. salt/gpu/driver.sls uses it.
"""

import nvgpu_state
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "nvgpu_initramfs"


def __virtual__():
    if "nvgpu_initramfs.stale_files" not in __salt__:
        return (False, "the nvgpu_initramfs execution module is not loaded (sync _modules or install saltext.nvgpu)")
    return __virtualname__


@nvgpu_state.reports_unloaded_modules
def carries(name, required_files, cmd=("dracut", "-f", "--kver")):
    """
    Ensure the initramfs of kernel release ``name`` carries ``required_files`` as they
    are on the host (the nouveau blacklist: without it nouveau claims the GPU at early
    boot), rebuilding it only when it does not. The check reads the image itself
    (``lsinitrd``), not whether a file changed in this run, so a rebuild that failed is
    retried on the next run.

    name
        The kernel release, e.g. ``{{ grains["kernelrelease"] }}``.

    required_files
        Absolute paths on the host that the initramfs must carry.

    cmd
        The rebuild command as an argument list, run without a shell, the kernel
        release appended. Default ``[dracut, -f, --kver]``.

    .. code-block:: yaml

        gpu-initramfs-carries-blacklist:
          nvgpu_initramfs.carries:
            - name: {{ grains["kernelrelease"] }}
            - required_files:
              - /etc/modprobe.d/blacklist-nouveau.conf
            - require:
              - file: gpu-nouveau-blacklisted
    """
    ret = nvgpu_state.new(name)
    if isinstance(required_files, str):
        required_files = [required_files]
    if isinstance(cmd, str) or not isinstance(cmd, (list, tuple)) or not cmd:
        return nvgpu_state.failed(
            ret, f"cmd must be an argument list such as [dracut, -f, --kver], not {cmd!r} (gpu:driver:initramfs_cmd)"
        )
    stale, why = {}, ""
    try:
        stale = __salt__["nvgpu_initramfs.stale_files"](required_files, kernel=name)
        if not stale:
            ret["comment"] = f"The initramfs of {name} carries {', '.join(required_files)}"
            return ret
        image = __salt__["nvgpu_initramfs.image"](name)
        why = "; ".join(f"{path}: {reason}" for path, reason in stale.items())
        changes = {"rebuilt": image, "stale": stale}
        if __opts__["test"]:
            return nvgpu_state.pending(ret, changes, f"The initramfs {image} would be rebuilt ({why})")
        __salt__["nvgpu_initramfs.rebuild"](name, cmd=list(cmd))
        left = __salt__["nvgpu_initramfs.stale_files"](required_files, kernel=name)
    except (CommandExecutionError, SaltInvocationError) as err:
        # Nothing counts as changed: the next run checks the image again and retries.
        return nvgpu_state.failed(ret, f"{err}\nWhy a rebuild: {why}" if why else str(err))
    if left:
        return nvgpu_state.failed(
            ret,
            "{} {} exited 0 but the initramfs still does not carry {}. Check that dracut includes "
            "/etc/modprobe.d (hostonly mode) and run `lsinitrd {}` by hand.".format(
                " ".join(map(str, cmd)), name, "; ".join(f"{p} ({r})" for p, r in left.items()), image
            ),
            changes,
        )
    ret.update(changes=changes, comment=f"Rebuilt the initramfs {image} ({why})")
    return ret
