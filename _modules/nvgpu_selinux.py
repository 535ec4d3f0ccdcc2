"""
Execution module for SELinux on a GPU container node: the mode, the two ways to let
containers use the GPU (container-selinux's boolean ``container_use_xserver_devices``,
or NVIDIA's ``nvidia-container`` policy module from dgx-selinux), and the labels of the
files the NVIDIA toolkit puts into containers.

The ``nvgpu.selinux_ready`` state reads and changes the node through these.

:depends: policycoreutils (semodule, restorecon), libselinux-utils (getenforce, getsebool)
"""

import os

import nvgpu_node
import salt.utils.path
from salt.exceptions import SaltInvocationError

__virtualname__ = "nvgpu_selinux"

# __context__ keys: what one run reads once (Salt keeps __context__ for one job).
_MODE = "nvgpu_selinux.mode"
_MODULES = "nvgpu_selinux.policy_modules"


def __virtual__():
    if __grains__.get("kernel") != "Linux":
        return (False, "The nvgpu_selinux execution module only runs on Linux minions")
    return __virtualname__


def _run(argv, what, fix):
    return nvgpu_node.run_checked(__salt__["cmd.run_all"], argv, what, fix)


def mode():
    """
    Return the SELinux mode: ``Enforcing``, ``Permissive`` or ``Disabled``
    (``getenforce``; a host without it counts as Disabled).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_selinux.mode
    """
    # Asked by several states in one run (selinux_ready, each validation): getenforce once.
    if _MODE not in __context__:
        __context__[_MODE] = _getenforce()
    return __context__[_MODE]


def _getenforce():
    if not salt.utils.path.which("getenforce"):
        return "Disabled"
    res = __salt__["cmd.run_all"](["getenforce"], python_shell=False, ignore_retcode=True)
    found = (res.get("stdout") or "").strip().capitalize()
    if res["retcode"] != 0 or found not in ("Enforcing", "Permissive", "Disabled"):
        return "Disabled"
    return found


def boolean(name=nvgpu_node.SELINUX_BOOLEAN):
    """
    Return the active value of the SELinux boolean ``name`` (``on`` or ``off``), or None
    where the loaded policy does not define it or SELinux is disabled (``getsebool NAME``).
    Default name: ``container_use_xserver_devices``, defined by container-selinux 2.232.0
    and later.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_selinux.boolean
    """
    if mode() == "Disabled":
        return None
    argv = ["getsebool", name]
    res = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    if res["retcode"] == 0:
        # "container_use_xserver_devices --> on" (and " pending: off" while a change waits)
        value = (res.get("stdout") or "").split("-->", 1)[-1].split()
        if value and value[0] in ("on", "off"):
            return value[0]
    elif "Error getting active value" in (res.get("stderr") or ""):
        return None
    raise nvgpu_node.command_error(f"reading the SELinux boolean {name}", argv, res,
                                   "check that libselinux-utils is installed and the policy is loaded (sestatus)")


def method(configured="auto"):
    """
    Return how SELinux lets containers use the GPU on this node: ``boolean`` or
    ``module`` (pillar ``gpu:selinux:method``); ``auto`` is ``boolean`` where the loaded
    policy defines ``container_use_xserver_devices`` (container-selinux 2.232.0 and
    later: EL 9.5+, RHEL 10), else ``module``. The ``nvgpu.selinux_ready`` state and the
    rootless vector add (its ``label=type:``) decide it this one way.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_selinux.method
    """
    if configured not in nvgpu_node.SELINUX_METHODS:
        raise SaltInvocationError(
            f"method must be one of {', '.join(nvgpu_node.SELINUX_METHODS)}, not {configured!r}")
    if configured != "auto":
        return configured
    return nvgpu_node.resolve_selinux_method(configured, boolean() is not None)


def container_type(configured="auto"):
    """
    Return the SELinux type a rootless GPU container runs as on this node:
    ``container_t`` with the boolean, ``nvidia_container_t`` with NVIDIA's module
    (see ``method``).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_selinux.container_type
    """
    return nvgpu_node.SELINUX_CONTAINER_TYPES[method(configured)]


def policy_modules():
    """
    Return the names of the installed SELinux policy modules (first column of
    ``semodule -l``; RHEL 7 adds a version column, RHEL 8+ does not).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_selinux.policy_modules
    """
    # Asked by several states in one run (selinux_ready, each validation): semodule -l
    # (slow: it reads the whole policy store) once, until install_policy changes the list.
    if _MODULES not in __context__:
        __context__[_MODULES] = _semodule_list()
    return list(__context__[_MODULES])


def _semodule_list():
    res = _run(["semodule", "-l"], "listing SELinux policy modules",
               "check that policycoreutils is installed and the SELinux policy store is readable")
    return sorted({line.split()[0] for line in res["stdout"].splitlines() if line.strip()})


def install_policy(path):
    """
    Install the SELinux policy module package ``path`` (a ``.pp``): ``semodule -i PATH``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_selinux.install_policy /root/nvidia-container.pp
    """
    __context__.pop(_MODULES, None)
    _run(["semodule", "-i", path], f"installing SELinux policy module {path}",
         "check that the file is a policy package built for this policy version (for RHEL 8 take "
         "NVIDIA dgx-selinux bin/RHEL8/nvidia-container.pp) and that the policy it needs "
         "(container-selinux) is installed")
    return True


def _restorecon(paths, recursive, dry_run):
    if isinstance(paths, str):
        paths = [paths]
    existing = [p for p in paths if os.path.lexists(p)]
    if not existing:
        return []
    argv = ["restorecon"] + (["-n"] if dry_run else []) + ["-v"] + (["-R"] if recursive else []) + existing
    res = _run(argv, "checking SELinux labels" if dry_run else "relabelling files",
               "check that the SELinux policy is installed and loaded (sestatus), then run the command by hand")
    return nvgpu_node.parse_restorecon(res["stdout"] + "\n" + res.get("stderr", ""))


def relabel_needed(paths, recursive=False):
    """
    Return the paths (of ``paths``, or below them with ``recursive``) whose SELinux
    label differs from the policy's: ``restorecon -n -v [-R] PATHS``, which changes
    nothing. Paths that do not exist are skipped.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_selinux.relabel_needed /dev recursive=True
    """
    return _restorecon(paths, recursive, dry_run=True)


def relabel(paths, recursive=False):
    """
    Restore the policy's SELinux labels on ``paths``: ``restorecon -v [-R] PATHS``.
    Returns the paths that were relabelled.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_selinux.relabel /dev recursive=True
    """
    return _restorecon(paths, recursive, dry_run=False)
