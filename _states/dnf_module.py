"""
States for dnf module streams (modularity, RHEL 8/9): a stream enabled with a profile
installed, switching streams where another is enabled.

The current stream is read from ``/etc/dnf/modules.d`` (``dnf_module.info``), and
``dnf check`` (the rpm database only) confirms its packages fit together, so a converged
host runs no dnf transaction and reads no repository; ``dnf check`` itself runs again only
when the installed packages changed since it last found nothing (Salt's cachedir,
``nvgpu/dnf-check.json``), so a converged host starts no dnf process at all.

.. code-block:: yaml

    gpu-driver-stream:
      dnf_module.installed:
        - name: nvidia-driver
        - stream: latest-dkms
        - profile: default
"""

import datetime
import hashlib
import json
import os

import nvgpu_node
import nvgpu_state
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "dnf_module"


def __virtual__():
    if "dnf_module.info" not in __salt__:
        return (False, "the dnf_module execution module is not loaded (it needs dnf)")
    return __virtualname__


def _package_set():
    """
    sha256 of every installed package's name, epoch, version, release and arch, from
    ``pkg.list_pkgs`` (Salt runs ``rpm -qa`` once per run and keeps it in __context__;
    the pkg states before this one already asked); None on a minion without it.
    """
    if "pkg.list_pkgs" not in __salt__:
        return None
    packages = __salt__["pkg.list_pkgs"](versions_as_list=True, attr=["epoch", "version", "release", "arch"])
    return hashlib.sha256(json.dumps(packages, sort_keys=True, default=str).encode()).hexdigest()


def _clean_check_path():
    return os.path.join(__opts__.get("cachedir", ""), "nvgpu", "dnf-check.json")


def _problems(name, stream, platform):
    """
    ``dnf_module.problems``, unless ``dnf check`` found nothing the last time and the
    installed packages are exactly the same since: its answer depends on the rpm
    database alone, so a converged run starts no dnf at all.
    """
    packages = _package_set()
    recorded = nvgpu_node.read_file(_clean_check_path()) if packages and __opts__.get("cachedir") else None
    try:
        if recorded and json.loads(recorded).get("packages") == packages:
            return []
    except (ValueError, AttributeError):
        pass
    broken = __salt__["dnf_module.problems"](name, stream, platform=platform)
    if not broken and packages and __opts__.get("cachedir") and not __opts__["test"]:
        at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            nvgpu_node.atomic_write(_clean_check_path(), json.dumps({"packages": packages, "at": at}) + "\n")
        except CommandExecutionError:
            pass  # the next run checks again
    return broken


def _has_profile(cur, stream, profile):
    on_stream = cur["state"] == "enabled" and cur["stream"] == stream
    return on_stream and (profile in cur["profiles"] if profile else bool(cur["profiles"]))


def installed(name, stream, profile=None, platform=None):
    """
    Ensure the dnf module ``name`` is enabled on ``stream`` with ``profile`` installed,
    switching a host that is on another stream (``dnf module switch-to``). A stream
    recorded as installed whose packages ``dnf check`` finds broken (a transaction that
    failed half-way) is repaired with ``dnf module switch-to`` to the same stream.

    name
        The module, e.g. ``nvidia-driver`` or ``container-tools``.

    stream
        The stream, e.g. ``latest-dkms``, ``550-dkms``, ``open-dkms``.

    profile
        The profile to install; the stream's default profile when None (then any
        installed profile counts as installed).

    platform
        ``module_platform_id`` for dnf (e.g. ``platform:el8``), for hosts whose
        os-release does not name it. Default: dnf's own.
    """
    ret = nvgpu_state.new(name)
    # dnf records streams as text; YAML reads `stream: 550` as a number.
    stream = str(stream)
    spec = f"{name}:{stream}" + (f"/{profile}" if profile else "")
    try:
        cur = __salt__["dnf_module.info"](name)
        broken = []
        if _has_profile(cur, stream, profile):
            broken = _problems(name, stream, platform)
            if not broken:
                ret["comment"] = f"Module stream {spec} is already installed"
                return ret

        enabled_here = cur["state"] == "enabled" and cur["stream"] == stream
        if broken:
            action = "repair"
        elif cur["state"] == "enabled" and cur["stream"] and not enabled_here:
            action = "switch"
        elif cur["state"] == "disabled":
            action = "reset"
        else:
            action = "install"
        changes = {}
        if broken:
            changes["repaired"] = broken
        else:
            if not enabled_here:
                changes["stream"] = {"old": cur["stream"] if cur["state"] == "enabled" else None, "new": stream}
            new_profiles = sorted(set(cur["profiles"] if enabled_here else []) | {profile or "(default)"})
            changes["profiles"] = {"old": cur["profiles"], "new": new_profiles}
        what = {
            "repair": f"Module stream {spec} {{}} repaired (its packages, left half-installed, are synced to the "
            f"stream: {len(broken)} problem(s) from dnf check)",
            "switch": f"Module {name} {{}} switched from stream {cur['stream']} to {spec}",
            "reset": f"Module {name} {{}} reset (it was disabled) and {spec} installed",
            "install": f"Module stream {spec} {{}} installed",
        }[action]
        if __opts__["test"]:
            return nvgpu_state.pending(ret, changes, what.format("would be"))

        if action in ("switch", "repair"):
            __salt__["dnf_module.switch_to"](name, stream, profile=profile, platform=platform)
        else:
            if action == "reset":
                __salt__["dnf_module.reset"](name, platform=platform)
            __salt__["dnf_module.install"](name, stream, profile=profile, platform=platform)
        after = __salt__["dnf_module.info"](name)
        left = __salt__["dnf_module.problems"](name, stream, platform=platform) if broken else []
    except (CommandExecutionError, SaltInvocationError) as err:
        return nvgpu_state.failed(ret, str(err))

    if left:
        return nvgpu_state.failed(
            ret,
            f"dnf module switch-to {spec} ran but dnf check still finds: {'; '.join(left)}. "
            "Run `dnf check` and `dnf distro-sync` by hand.",
            changes,
        )
    if not _has_profile(after, stream, profile):
        return nvgpu_state.failed(
            ret,
            f"dnf reported success but /etc/dnf/modules.d/{name}.module says stream={after['stream']} "
            f"profiles={','.join(after['profiles'])} state={after['state']}, not {spec}. "
            f"Run `dnf module info {name}:{stream}` and `dnf module install {spec}` by hand.",
        )
    if "profiles" in changes:
        changes["profiles"]["new"] = after["profiles"]
    ret.update(changes=changes, comment=what.format("was"))
    return ret
