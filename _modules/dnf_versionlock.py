"""
Execution module for dnf's versionlock plugin (``python3-dnf-plugin-versionlock``), the
way NVIDIA pins a driver branch where there are no module streams (RHEL 10):
``dnf versionlock add '*nvidia*580*'`` locks every package of that branch, then
``dnf install nvidia-open``. The locks are read from the plugin's list file, without
running dnf; changes go through dnf itself.

:depends: dnf, python3-dnf-plugin-versionlock
"""

import re

import nvgpu_node
import salt.utils.path

__virtualname__ = "dnf_versionlock"

# A lock line as the plugin writes it: NAME-EPOCH:VERSION-RELEASE.* (`nvidia-open-3:580.105.08-1.el10.*`).
_LOCK_RE = re.compile(r"(?P<name>.+)-(?P<epoch>[0-9]+):(?P<version>[^-]+)-(?P<release>[^-]+)$")


def __virtual__():
    if not salt.utils.path.which("dnf"):
        return (False, "The dnf_versionlock execution module needs dnf")
    return __virtualname__


def _run(argv, what, fix):
    return nvgpu_node.run_checked(__salt__["cmd.run_all"], argv, what, fix)


def locks(path=nvgpu_node.VERSIONLOCK_LIST):
    """
    Return the plugin's locks: ``[{"spec", "name", "version"}]``, one per line of its list
    file (``spec`` as written there; comments, blanks and ``!`` excludes left out).

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_versionlock.locks
    """
    found = []
    for line in (nvgpu_node.read_file(path) or "").splitlines():
        spec = line.strip()
        if not spec or spec.startswith(("#", "!")):
            continue
        match = _LOCK_RE.match(spec.removesuffix(".*"))
        found.append({"spec": spec, "name": match.group("name") if match else None,
                      "version": match.group("version") if match else None})
    return found


def add(pattern):
    """
    Lock every package matching ``pattern`` at the versions dnf finds for it:
    ``dnf versionlock add PATTERN`` (e.g. ``*nvidia*580*``).

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_versionlock.add '*nvidia*580*'
    """
    _run(["dnf", "-y", "versionlock", "add", pattern], f"locking {pattern} with dnf versionlock",
         "check that python3-dnf-plugin-versionlock is installed and that the repos hold packages matching "
         f"{pattern} (`dnf list --showduplicates {pattern}`)")
    return True


def delete(specs):
    """
    Remove the locks ``specs`` (lines as ``locks`` returns them): ``dnf versionlock delete SPEC...``.

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_versionlock.delete 'nvidia-open-3:575.57.08-1.el10.*'
    """
    specs = [specs] if isinstance(specs, str) else list(specs)
    _run(["dnf", "-y", "versionlock", "delete", *specs], "removing dnf version locks",
         "check that python3-dnf-plugin-versionlock is installed; `dnf versionlock list` shows the locks")
    return True


def installed_version(name):
    """
    Return the installed VERSION of package ``name`` (``580.105.08``), or None (``rpm -q``).

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_versionlock.installed_version nvidia-open
    """
    ret = __salt__["cmd.run_all"](["rpm", "-q", "--qf", "%{VERSION}\\n", name], python_shell=False,
                                  ignore_retcode=True)
    if ret["retcode"] != 0:
        return None
    versions = (ret.get("stdout") or "").split()
    return versions[-1] if versions else None


def available_versions(name):
    """
    Return every VERSION of package ``name`` in the enabled repos, the locks left aside
    (``dnf repoquery --disableplugin=versionlock``), oldest first.

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_versionlock.available_versions nvidia-open
    """
    ret = _run(["dnf", "-q", "repoquery", "--disableplugin=versionlock", "--qf", "%{version}", name],
               f"listing the versions of {name} in the repos", "check the repos (dnf repolist)")
    return sorted(set(ret["stdout"].split()), key=nvgpu_node.version_tuple)


def packages_of_version(version):
    """
    Return the names of the installed packages whose VERSION is ``version``: the packages
    of one driver release, which NVIDIA versions alike (``rpm -qa``).

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_versionlock.packages_of_version 575.57.08
    """
    ret = _run(["rpm", "-qa", "--qf", "%{NAME} %{VERSION}\\n"], "listing installed packages",
               "check the rpm database (rpm -qa)")
    return sorted({line.split()[0] for line in ret["stdout"].splitlines()
                   if len(line.split()) == 2 and line.split()[1] == version})


def install(name):
    """
    ``dnf -y install NAME``: the newest version the locks allow.

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_versionlock.install nvidia-open
    """
    _run(["dnf", "-y", "install", name], f"installing {name}",
         "check the repo (dnf list --showduplicates NAME) and the locks (dnf versionlock list)")
    return True


def distro_sync(names):
    """
    ``dnf -y distro-sync NAMES``: each package to the newest version the locks allow,
    upgrading or downgrading (a branch change).

    CLI Example:

    .. code-block:: bash

        salt '*' dnf_versionlock.distro_sync '[nvidia-open, nvidia-driver]'
    """
    names = [names] if isinstance(names, str) else list(names)
    _run(["dnf", "-y", "distro-sync", *names], f"moving {', '.join(names)} to the locked versions",
         "check the repo (dnf list --showduplicates) and the locks (dnf versionlock list)")
    return True
