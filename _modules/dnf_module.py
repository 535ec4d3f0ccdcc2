"""
Execution module for dnf module streams (modularity, RHEL 8/9): what is enabled and
installed, read from dnf's own records without running dnf, and the dnf commands that
install, reset and switch streams.

Salt itself has no module-stream support up to 3008 (saltstack/salt PR #69603 adds a
``dnfmodule`` module); the names here follow dnf's own verbs, so the ``dnf_module``
states can move onto Salt's once it ships.

:depends: dnf
"""

import configparser
import os

import nvgpu_node
import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "dnf_module"


def __virtual__():
    if not salt.utils.path.which("dnf"):
        return (False, "The dnf_module execution module needs dnf")
    return __virtualname__


def _spec(name, stream, profile=None):
    if not name or not stream or ":" in str(name) or "/" in str(stream):
        raise SaltInvocationError(f"bad module stream {name!r}:{stream!r}; expected e.g. nvidia-driver, latest-dkms")
    return f"{name}:{stream}" + (f"/{profile}" if profile else "")


def _dnf(platform=None):
    argv = ["dnf", "-y"]
    if platform:
        argv.append(f"--setopt=module_platform_id={platform}")
    return argv


def _run(argv, what, fix):
    """
    ``nvgpu_node.run_checked`` for dnf. When a transaction fails half-way, rpm's own
    errors (the file that could not be unpacked, the scriptlet that failed) are in
    dnf's transaction output on stdout, and stderr only says "Transaction failed": the
    message leads with rpm's lines. ``info`` keeps dnf's output as it was.
    """
    ret = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    if ret["retcode"] == 0:
        return ret
    rpm_errors = [line.strip() for line in (ret.get("stdout") or "").splitlines() if line.strip().startswith("error:")]
    shown = dict(ret, stderr="\n".join(rpm_errors + [(ret.get("stderr") or "").strip()]).strip())
    err = nvgpu_node.command_error(what, argv, shown, fix)
    err.info["stderr"] = ret.get("stderr", "")
    raise err


def _nevra_name(nevra):
    """``kmod-nvidia-latest-dkms-3:550.127.08-1.el8.x86_64`` -> ``kmod-nvidia-latest-dkms``."""
    return nevra.rsplit("-", 2)[0]


def info(name):
    """
    Return the state of the dnf module ``name`` as dnf recorded it in
    ``/etc/dnf/modules.d/<name>.module``, without running dnf:
    ``{"name", "stream", "profiles": [installed profiles], "state"}`` (``state`` is
    ``enabled``, ``disabled`` or None; absent values are None / []).

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_module.info nvidia-driver
    """
    ret = {"name": name, "stream": None, "profiles": [], "state": None}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(nvgpu_node.read_file(os.path.join(nvgpu_node.DNF_MODULES_D, f"{name}.module")) or "")
    except configparser.Error:
        return ret
    if not parser.has_section(name):
        return ret
    sect = parser[name]
    ret["stream"] = sect.get("stream", "").strip() or None
    ret["state"] = sect.get("state", "").strip() or None
    # dnf joins installed profiles with commas
    ret["profiles"] = [p.strip() for p in sect.get("profiles", "").split(",") if p.strip()]
    return ret


def stream_packages(name, stream, platform=None):
    """
    Return the names of the packages of the module stream ``name:stream`` in the
    configured repositories: ``dnf module repoquery name:stream`` (reads repository
    metadata).

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_module.stream_packages nvidia-driver latest-dkms
    """
    spec = _spec(name, stream)
    res = _run(
        _dnf(platform) + ["-q", "module", "repoquery", spec],
        f"listing the packages of module stream {spec}",
        f"check that the repository providing the module is configured and reachable (dnf module list {name})",
    )
    return sorted({_nevra_name(line.strip()) for line in res["stdout"].splitlines() if line.strip().count("-") >= 2})


def problems(name, stream, platform=None):
    """
    Return what ``dnf check`` finds wrong (missing requires, conflicts, duplicates)
    with the installed packages of the module stream ``name:stream``, as dnf's lines;
    ``[]`` when nothing. A transaction that failed half-way (a package that could not
    be unpacked) leaves the stream recorded as installed in ``/etc/dnf/modules.d``
    while its packages do not fit together: ``info`` cannot see that, this can.
    ``dnf check`` reads the rpm database only; the stream's packages are asked of the
    repositories only when it finds something.

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_module.problems nvidia-driver latest-dkms
    """
    argv = ["dnf", "-q", "check"]
    ret = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    lines = [line.strip() for line in (ret.get("stdout") or "").splitlines() if line.strip()]
    if ret["retcode"] != 0 and not lines:
        raise nvgpu_node.command_error("checking the installed packages", argv, ret, "run dnf check by hand")
    if not lines:
        return []
    names = set(stream_packages(name, stream, platform=platform))
    return [line for line in lines if _nevra_name(line.split()[0]) in names]


def install(name, stream, profile=None, platform=None):
    """
    Enable the dnf module stream ``name:stream`` and install ``profile`` (its
    default profile when None): ``dnf -y module install name:stream[/profile]``.
    ``platform`` (e.g. ``platform:el8``) is passed as ``module_platform_id`` for
    hosts whose os-release lacks PLATFORM_ID. Returns the new ``info``.

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_module.install nvidia-driver latest-dkms profile=default
    """
    spec = _spec(name, stream, profile)
    _run(
        _dnf(platform) + ["module", "install", spec],
        f"installing module stream {spec}",
        "check that the repository providing the module is configured and reachable "
        f"(dnf module list {name}), that the stream and profile exist, and for DKMS streams that "
        "kernel-devel for the running kernel is available",
    )
    return info(name)


def reset(name, platform=None):
    """
    Reset the dnf module ``name`` (forget its enabled stream): ``dnf -y module reset name``.

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_module.reset nvidia-driver
    """
    _run(
        _dnf(platform) + ["module", "reset", name],
        f"resetting module {name}",
        f"run dnf module reset {name} by hand to see the full error",
    )
    return info(name)


def switch_to(name, stream, profile=None, platform=None):
    """
    Move the dnf module ``name`` to another stream, replacing its packages:
    ``dnf -y module switch-to name:stream[/profile]``. On a dnf without
    ``switch-to`` (before RHEL 8.6) it resets the module and installs the stream.
    Returns the new ``info``.

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_module.switch_to nvidia-driver 550-dkms profile=default
    """
    spec = _spec(name, stream, profile)
    argv = _dnf(platform) + ["module", "switch-to", spec]
    try:
        _run(
            argv,
            f"switching module {name} to {spec}",
            f"check that the stream exists (dnf module list {name}); packages held by another module "
            "or versionlock can block the switch",
        )
    except CommandExecutionError as err:
        said = f"{err.info['stderr']}{err.info['stdout']}"
        if "invalid choice" not in said and "No such command" not in said:
            raise
        reset(name, platform=platform)
        return install(name, stream, profile=profile, platform=platform)
    return info(name)
