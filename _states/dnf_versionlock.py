"""
States for a package pinned to a driver branch with dnf versionlock, NVIDIA's recipe
where there are no module streams (RHEL 10): ``dnf versionlock add '*nvidia*580*'`` and
``dnf install nvidia-open``; ``latest`` is the package without a lock.

The locks are read from the plugin's list file and the installed version from rpm, so a
converged host runs no dnf transaction and reads no repository.

.. code-block:: yaml

    gpu-driver-branch:
      dnf_versionlock.branch_installed:
        - name: nvidia-open
        - branch: "580"
"""

import fnmatch
import re

import nvgpu_state
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "dnf_versionlock"

# A driver version: its branch is the first number (580.105.08 -> 580).
_DRIVER_VERSION = re.compile(r"(?P<branch>[0-9]{3,})\.[0-9]+(?:\.[0-9]+)?")
_BRANCH = re.compile(r"latest|[0-9]{3,}")


def __virtual__():
    if "dnf_versionlock.locks" not in __salt__:
        return (False, "the dnf_versionlock execution module is not loaded (it needs dnf)")
    return __virtualname__


def _branch_of(version):
    match = _DRIVER_VERSION.fullmatch(version or "")
    return match.group("branch") if match else None


def branch_installed(name, branch="latest", lock_glob="*nvidia*"):
    """
    Ensure package ``name`` is installed from driver ``branch``: ``latest`` (no version
    lock on the driver's packages), or a branch number such as ``580`` (every package
    matching ``*nvidia*580*`` locked, as NVIDIA's RHEL 10 instructions do, and ``name``
    installed from it). A change of branch replaces the locks and moves the installed
    driver packages (all of one version) with ``dnf distro-sync``, up or down; going
    from a branch to ``latest`` unlocks and brings the newest.

    name
        The package, e.g. ``nvidia-open`` (open kernel modules and the whole driver).

    branch
        ``latest`` or a driver branch, e.g. ``"580"``.

    lock_glob
        Which locks belong to the driver: lines of the lock list that match this glob and
        name a driver version (NNN.NN...). Default ``*nvidia*``; a branch is locked with
        the glob followed by ``BRANCH*``.
    """
    ret = nvgpu_state.new(name)
    branch = str(branch)
    if not _BRANCH.fullmatch(branch):
        return nvgpu_state.failed(ret, f"branch must be latest or a driver branch such as 580, not {branch!r} "
                                       "(gpu:driver:branch)")
    test = __opts__["test"]
    try:
        installed = __salt__["dnf_versionlock.installed_version"](name)
        driver_locks = [lock for lock in __salt__["dnf_versionlock.locks"]()
                        if fnmatch.fnmatchcase(lock["spec"], lock_glob) and _branch_of(lock["version"])]
        locked = sorted({_branch_of(lock["version"]) for lock in driver_locks})
        wanted_locks = [] if branch == "latest" else [branch]
        stale = [lock["spec"] for lock in driver_locks if _branch_of(lock["version"]) != branch]
        changes = {}
        if locked != wanted_locks:
            changes["locked"] = {"old": locked or None, "new": branch if wanted_locks else None}
        target = installed
        if installed is None or (wanted_locks and _branch_of(installed) != branch) or stale:
            # What dnf will install: the newest of the branch (or of all, unlocked).
            available = __salt__["dnf_versionlock.available_versions"](name)
            of_branch = [v for v in available if not wanted_locks or _branch_of(v) == branch]
            if not available and test:
                # test=True before the run that configures the repo: nothing to ask yet.
                of_branch = [f"the newest of branch {branch} (no {name} in the enabled repos yet)"]
            if not of_branch:
                return nvgpu_state.failed(ret, f"no {name} of branch {branch} in the enabled repos (they have "
                                               f"{', '.join(available) or 'none'}); set gpu:driver:branch to one "
                                               "of their branches, or latest")
            target = of_branch[-1]
        if target != installed:
            changes["version"] = {"old": installed, "new": target}
        if not changes:
            ret["comment"] = f"{name} {installed} is installed from branch {branch}" + (
                " (locked)" if wanted_locks else " (not locked)")
            return ret
        if test:
            return nvgpu_state.pending(ret, changes, f"{name} would be installed from branch {branch}")
        if stale:
            __salt__["dnf_versionlock.delete"](stale)
        if wanted_locks and branch not in locked:
            __salt__["dnf_versionlock.add"](f"{lock_glob}{branch}*")
        if installed is None:
            __salt__["dnf_versionlock.install"](name)
        elif target != installed:
            __salt__["dnf_versionlock.distro_sync"](__salt__["dnf_versionlock.packages_of_version"](installed))
        now = __salt__["dnf_versionlock.installed_version"](name)
    except (CommandExecutionError, SaltInvocationError) as err:
        return nvgpu_state.failed(ret, f"Installing {name} from branch {branch} failed: {err}")
    if now != target:
        return nvgpu_state.failed(ret, f"dnf finished but {name} is {now or 'not installed'}, not {target} of "
                                       f"branch {branch}: check `dnf versionlock list` and "
                                       f"`dnf list --showduplicates {name}`", changes)
    ret.update(changes=changes, comment=f"{name} {now} installed from branch {branch}" + (
        f", switched from {installed}" if installed and installed != now else ""))
    return ret
