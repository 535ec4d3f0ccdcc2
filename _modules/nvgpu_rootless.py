"""
Execution module for rootless Podman users: their subordinate uid and gid ranges
(``/etc/subuid``, ``/etc/subgid``), into which rootless Podman maps a container's ids, and
their lingering (systemd keeps their runtime dir without a login session).

Reads the files directly; changes them only through shadow-utils' ``usermod``, which
locks them as every other tool that writes them does.

The ``nvgpu.subids_present`` and ``nvgpu.user_lingers`` states read and change the node
through these.

:depends: shadow-utils (usermod), systemd (loginctl)
"""

import os

import nvgpu_node
import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "nvgpu_rootless"

# usermod's options for each file: (add, delete).
_USERMOD_OPTIONS = {"subuid": ("--add-subuids", "--del-subuids"), "subgid": ("--add-subgids", "--del-subgids")}


def __virtual__():
    if __grains__.get("kernel") != "Linux":
        return (False, "The nvgpu_rootless execution module only runs on Linux minions")
    return __virtualname__


def _entries(kind):
    if kind not in nvgpu_node.SUBID_FILES:
        raise SaltInvocationError(f"kind must be subuid or subgid, not {kind!r}")
    return nvgpu_node.parse_subids(nvgpu_node.read_file(nvgpu_node.SUBID_FILES[kind]))


def subids(name, kind="subuid"):
    """
    Return the subordinate id ranges of user ``name`` from ``/etc/subuid``
    (``kind=subgid``: ``/etc/subgid``) as a list of ``{"start", "count"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_rootless.subids gpuuser kind=subgid
    """
    return [{"start": s, "count": c} for n, s, c in _entries(kind) if n == name]


def free_subid_start(count=65536, kind="subuid", minimum=100000):
    """
    Return the first start >= ``minimum`` where ``count`` subordinate ids overlap no
    range in ``/etc/subuid`` (or ``/etc/subgid``).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_rootless.free_subid_start
    """
    start = minimum
    for _, s, c in sorted(_entries(kind), key=lambda e: e[1]):
        if s < start + count and start < s + c:
            start = s + c
    return start


def overlaps(name, start, count=65536, kind="subuid"):
    """
    Return the ranges of OTHER users in ``/etc/subuid`` (``kind=subgid``: ``/etc/subgid``)
    that ``start``..``start+count-1`` would overlap, as ``{"user", "start", "count"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_rootless.overlaps gpuuser 200000 65536
    """
    start, count = int(start), int(count)
    return [{"user": n, "start": s, "count": c} for n, s, c in _entries(kind)
            if n != name and s < start + count and start < s + c]


def set_subids(name, start, count=65536, kind="subuid"):
    """
    Make ``start``..``start+count-1`` the only range of user ``name`` in ``/etc/subuid``
    (``kind=subgid``: ``/etc/subgid``): ``usermod --del-subuids OLD --add-subuids NEW``
    in one call. Returns the user's ranges afterwards.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_rootless.set_subids gpuuser 200000 65536
    """
    start, count = int(start), int(count)
    add, delete = _USERMOD_OPTIONS.get(kind, (None, None))
    argv = ["usermod"]
    for old in subids(name, kind):
        argv += [delete, f"{old['start']}-{old['start'] + old['count'] - 1}"]
    argv += [add, f"{start}-{start + count - 1}", name]
    nvgpu_node.run_checked(
        __salt__["cmd.run_all"],
        argv,
        f"setting the {kind} range of {name}",
        "check that the user exists and that shadow-utils' usermod supports --add-subuids (RHEL 8+)",
    )
    return subids(name, kind)


def migrate(name):
    """
    Make user ``name``'s rootless Podman take its new subordinate id ranges:
    ``podman system migrate`` as that user (what Podman's documentation asks for after
    /etc/subuid or /etc/subgid changed; without it the user's containers can fail with
    "cannot set user namespace"). Returns False where Podman is not installed.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_rootless.migrate gpuuser
    """
    podman = salt.utils.path.which("podman")
    if not podman:
        return False
    info = __salt__["user.info"](name) or {}

    def as_user(argv, **kwargs):
        user_argv, user_kwargs = nvgpu_node.as_user(argv, name, info)
        return __salt__["cmd.run_all"](user_argv, **user_kwargs, **kwargs)

    nvgpu_node.run_checked(as_user, [podman, "system", "migrate"], f"making Podman of {name} use its new id ranges",
                           f"run podman system migrate as {name}")
    return True


def lingers(name):
    """
    True when systemd keeps user ``name``'s manager, and so its runtime dir ``/run/user/UID``,
    from boot on (lingering: an empty file per user under ``/var/lib/systemd/linger``).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_rootless.lingers gpuuser
    """
    return os.path.exists(nvgpu_node.linger_file(name))


def enable_linger(name):
    """
    Turn lingering on for user ``name`` (``loginctl enable-linger``): rootless Podman run
    without a login session (from Salt, cron or a unit) needs the user's runtime dir, and
    without lingering systemd stops the user's containers when its last session ends.
    Returns True.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_rootless.enable_linger gpuuser
    """
    nvgpu_node.run_checked(__salt__["cmd.run_all"], ["loginctl", "enable-linger", name],
                           f"turning lingering on for {name}",
                           "check that systemd-logind runs (systemctl status systemd-logind)")
    if not lingers(name):
        raise CommandExecutionError(f"loginctl enable-linger {name} exited 0, but "
                                    f"{nvgpu_node.linger_file(name)} does not exist")
    return True
