"""
States that make a RHEL 8, 9 or 10 host a validated NVIDIA GPU node for Podman containers.

Idempotent, ``test=True``-aware states over the nvgpu execution modules (``nvgpu``,
``nvgpu_toolkit``, ``nvgpu_selinux``, ``nvgpu_rootless``); dnf module streams have
their own states (``dnf_module.installed``). Each state finds the difference first and
returns early when there is none; with ``test=True`` it returns ``result: None`` and
exactly the changes it would make, and changes nothing; a failure comment says what
failed, why, and what to do.

Each state's docstring has an example; salt/gpu/*.sls uses them all.
"""

import datetime
import hashlib
import json
import logging
import os
import urllib.parse

import nvgpu_node
import nvgpu_state
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "nvgpu"

log = logging.getLogger(__name__)


def __virtual__():
    if "nvgpu.load_modules" not in __salt__:
        return (False, "the nvgpu execution module is not loaded (sync _modules or install saltext.nvgpu)")
    return __virtualname__


# ---------------------------------------------------------------------------
# Kernel modules
# ---------------------------------------------------------------------------


def _reboot_required_comment(reason, what):
    return (f"Reboot required: {reason}; {what} (grain nvgpu:reboot_required). Reboot the node, "
            "then run state.apply again.")


@nvgpu_state.reports_unloaded_modules
def modules_loaded(name, uvm=True, reload_on_upgrade=True, reload="auto"):
    """
    Ensure the NVIDIA kernel modules are loaded and their device nodes exist
    (``nvidia-modprobe``, then ``nvidia-modprobe -u`` for nvidia_uvm), and that the
    loaded driver is the installed one.

    name
        An ID for the state; the modules are ``nvidia`` and, with ``uvm``, ``nvidia_uvm``.

    uvm
        Also load nvidia_uvm, which CUDA needs. Default True.

    reload_on_upgrade
        When the loaded module's version differs from the installed driver's (after a
        driver upgrade or a stream switch: every CUDA program then fails with
        "driver/library version mismatch"), unload and reload the modules instead of
        waiting for a reboot. Default True.

    reload
        ``auto`` (default): reload as above, unless a process holds the GPU: then nothing
        changes, the state passes with a comment that a reboot is required (the grain
        ``nvgpu:reboot_required`` is true until then). ``never``: always leave the new
        driver to the next reboot. Whether CUDA programs hold the GPU is read from
        nvidia_uvm's reference count, so ``test=True`` says the same.

    .. code-block:: yaml

        gpu-driver-modules-loaded:
          nvgpu.modules_loaded:
            - name: nvidia
    """
    ret = nvgpu_state.new(name)
    wanted = ["nvidia", "nvidia_uvm"] if uvm else ["nvidia"]
    changes = {}
    try:
        before = __salt__["nvgpu.loaded_modules"]()
        missing = [mod for mod in wanted if not before.get(mod)]
        if missing:
            changes["loaded"] = missing
        if before.get("nvidia") and reload_on_upgrade:
            running = __salt__["nvgpu.driver_version"]()
            installed = __salt__["nvgpu.installed_driver_version"]()
            if running and installed and running != installed:
                if reload == "never":
                    ret["comment"] = _reboot_required_comment(
                        f"driver {running} is loaded, {installed} is installed",
                        "gpu:driver:reload is never, so the new driver runs after the reboot")
                    return ret
                users = __salt__["nvgpu.cuda_processes"]()
                if users:
                    ret["comment"] = _reboot_required_comment(
                        f"driver {running} is loaded, {installed} is installed",
                        f"CUDA programs hold the GPU (nvidia_uvm refcnt {users}), so the driver is not reloaded")
                    return ret
                changes["driver_version"] = {"old": running, "new": installed}
        if not changes:
            ret["comment"] = "Kernel modules {} are already loaded".format(", ".join(wanted))
            return ret
        if "driver_version" in changes:
            what = "driver {old} {{}} reloaded as the installed {new}".format(**changes["driver_version"])
        else:
            what = "kernel modules {} {{}} loaded".format(", ".join(missing))
        if __opts__["test"]:
            return nvgpu_state.pending(ret, changes, "The " + what.format("would be"))
        if "driver_version" in changes:
            try:
                res = __salt__["nvgpu.reload_driver"](uvm=uvm)
            except CommandExecutionError as err:
                if not getattr(err, "gpu_busy", False):
                    raise
                ret["comment"] = _reboot_required_comment(
                    "driver {old} is loaded, {new} is installed".format(**changes["driver_version"]),
                    f"a process holds the GPU, so the driver was not reloaded ({err})")
                return ret
            if res.get("stopped"):
                changes["stopped"] = res["stopped"]
            now = __salt__["nvgpu.driver_version"]()
            if now != changes["driver_version"]["new"]:
                return nvgpu_state.failed(
                    ret,
                    f"Reloaded the NVIDIA modules but driver {now} is loaded, not the installed "
                    f"{changes['driver_version']['new']}: the module was not rebuilt for this kernel "
                    "(check `dkms status`, kernel-devel for the running kernel), or reboot.",
                    changes,
                )
        else:
            res = __salt__["nvgpu.load_modules"](uvm=uvm)
    except (CommandExecutionError, SaltInvocationError) as err:
        return nvgpu_state.failed(ret, f"Loading the NVIDIA kernel modules failed: {err}", changes)
    changes["device_nodes"] = res["device_nodes"]
    ret.update(changes=changes, comment="The " + what.format("was" if "driver_version" in changes else "were"))
    return ret


@nvgpu_state.reports_unloaded_modules
def driver_service_running(name, package=None):
    """
    Ensure a daemon of the NVIDIA driver (``nvidia-persistenced``, ``nvidia-fabricmanager``)
    is enabled and running, through Salt's service module. With ``package``, the package
    that ships it must be of the loaded driver's version (the fabric manager refuses any
    other). Where the loaded driver is not the installed one (a reload is pending: see
    ``modules_loaded``), a daemon of the new version cannot start yet: the state passes and
    says a reboot is required.

    .. code-block:: yaml

        gpu-fabricmanager-running:
          nvgpu.driver_service_running:
            - name: nvidia-fabricmanager
            - package: nvidia-fabric-manager
    """
    ret = nvgpu_state.new(name)
    pending = __salt__["nvgpu.reboot_required"]()
    if pending["required"]:
        ret["comment"] = _reboot_required_comment(pending["reason"], f"{name} starts with the new driver")
        return ret
    if package:
        driver = __salt__["nvgpu.driver_version"]()
        # Not Salt's cached package list: the stream's switch (dnf, in this run) changed it.
        version = __salt__["pkg.version"](package, use_context=False)
        if not version:
            if __opts__["test"]:  # the stream's state before this one would install it
                return nvgpu_state.pending(ret, {"enabled": True, "running": True},
                                           f"{name} would be enabled and running once {package} is installed")
            return nvgpu_state.failed(ret, f"{package} is not installed: {name} cannot run (install the driver "
                                           "stream's fm profile: pillar gpu:driver:fabricmanager)")
        if driver and version.split("-", 1)[0] != driver:
            return nvgpu_state.failed(ret, f"{package} {version} does not match the loaded driver {driver}: "
                                           f"{name} refuses to start; install {package} of the driver's version "
                                           "(the same stream's fm profile)")
    changes = {}
    if not __salt__["service.enabled"](name):
        changes["enabled"] = True
    if not __salt__["service.status"](name):
        changes["running"] = True
    if not changes:
        ret["comment"] = f"{name} is enabled and running"
        return ret
    if __opts__["test"]:
        return nvgpu_state.pending(ret, changes, f"{name} would be {' and '.join(changes)}")
    try:
        if "enabled" in changes:
            __salt__["service.enable"](name)
        if "running" in changes:
            __salt__["service.start"](name)
    except CommandExecutionError as err:
        journal = __salt__["cmd.run_all"](["systemctl", "status", name, "-n", "10"], python_shell=False,
                                         ignore_retcode=True)["stdout"]
        return nvgpu_state.failed(ret, f"{name} did not start: {err}\n{journal}", {k: v for k, v in changes.items()
                                                                                  if k == "enabled"})
    ret.update(changes=changes, comment=f"{name} is now {' and '.join(changes)}")
    return ret


def driver_built_for_next_boot(name):
    """
    Preflight for the next reboot: the newest installed kernel (the one the next boot
    starts, ``/lib/modules/*/vmlinuz``) has the NVIDIA driver built for it (an ``nvidia.ko``
    under its ``/lib/modules``), else fail with the fix, before a reboot loses the driver.
    DKMS builds it from the kernel package's hook only when that kernel's kernel-devel is
    installed, and the driver package's scriptlet exits 0 when the build failed
    (NVIDIA/open-gpu-kernel-modules#805). Read-only: nothing changes, in any mode.

    .. code-block:: yaml

        gpu-driver-built-for-next-boot:
          nvgpu.driver_built_for_next_boot:
            - name: nvidia
    """
    ret = nvgpu_state.new(name)
    running = nvgpu_node.kernel_release()
    newest = nvgpu_node.next_boot_kernel(running)
    if newest == running:
        ret["comment"] = f"The running kernel {running} is the newest installed: the next boot keeps this driver"
        return ret
    if nvgpu_node.nvidia_ko_present(newest):
        ret["comment"] = f"The newest installed kernel {newest} (the next boot's) has the NVIDIA driver built"
        return ret
    devel = os.path.join(nvgpu_node.KERNEL_SOURCES, newest)
    missing = "" if os.path.isdir(devel) else f" (kernel-devel-{newest} is not installed: no {devel})"
    return nvgpu_state.failed(
        ret,
        f"The next boot starts kernel {newest}, which has no NVIDIA driver: no nvidia.ko under "
        f"{os.path.join(nvgpu_node.LIB_MODULES, newest)}{missing}. Before rebooting: dnf install "
        f"kernel-devel-{newest}, then dkms autoinstall -k {newest} (a precompiled stream: dnf update "
        "brings its kmod package for that kernel).",
    )


@nvgpu_state.reports_unloaded_modules
def kernel_module_unloaded(name):
    """
    Ensure the kernel module ``name`` is not loaded (``modprobe -r``), e.g. nouveau,
    which holds the GPU the NVIDIA driver needs.

    Loaded means ``/sys/module/<name>`` exists (the truth on RHEL and on kernels
    without ``/proc/modules``).

    .. code-block:: yaml

        gpu-nouveau-unloaded:
          nvgpu.kernel_module_unloaded:
            - name: nouveau
    """
    ret = nvgpu_state.new(name)
    try:
        if not __salt__["nvgpu.kernel_module_loaded"](name):
            ret["comment"] = f"Kernel module {name} is not loaded"
            return ret
        changes = {"unloaded": [name]}
        if __opts__["test"]:
            return nvgpu_state.pending(ret, changes, f"Kernel module {name} would be unloaded")
        __salt__["nvgpu.unload_kernel_module"](name)
        still = __salt__["nvgpu.kernel_module_loaded"](name)
    except (CommandExecutionError, SaltInvocationError) as err:
        return nvgpu_state.failed(ret, str(err))
    if still:
        return nvgpu_state.failed(
            ret,
            f"modprobe -r {name} exited 0 but /sys/module/{name} still exists: it is built into the "
            f"kernel or in use. Blacklist it (modprobe.d and rd.driver.blacklist={name}) and reboot.",
        )
    ret.update(changes=changes, comment=f"Unloaded kernel module {name}")
    return ret


@nvgpu_state.reports_unloaded_modules
def module_unloaded(name):
    """
    The former name of :py:func:`kernel_module_unloaded`, kept for existing SLS files.
    """
    return kernel_module_unloaded(name)


def module_stream(name, stream, profile=None, platform=None):
    """
    The former name of ``dnf_module.installed`` (a dnf module stream enabled with a
    profile installed), kept for existing SLS files.
    """
    return __states__["dnf_module.installed"](name, stream, profile=profile, platform=platform)


# ---------------------------------------------------------------------------
# NVIDIA container toolkit
# ---------------------------------------------------------------------------


def _cdi_problem(spec, driver):
    """
    Why the CDI spec needs (re)generating, or None when it is fine.
    """
    if not spec["exists"]:
        return "missing"
    if spec["kind"] != nvgpu_node.CDI_KIND or not spec["devices"]:
        return f"not a {nvgpu_node.CDI_KIND} spec with devices"
    if not spec["mode"] or not int(spec["mode"], 8) & 0o004:
        return f"not world-readable (mode {spec['mode']})"
    if driver and spec["driver_version"] != driver:
        return f"stale: written for driver {spec['driver_version']}, driver {driver} is loaded"
    return None


def _cdi_by_refresh(cdi_path, driver, changes, test, refresh):
    """cdi_owner refresh: nvidia-cdi-refresh enabled, watching, its spec current; the
    formula's spec gone. A failure's text, or None."""
    if not refresh:
        if test:
            changes["cdi_spec"] = {"old": None, "new": nvgpu_node.CDI_REFRESH_SPEC,
                                   "reason": "by nvidia-cdi-refresh once the toolkit (1.18+) is installed"}
            return None
        return (f"gpu:toolkit:cdi_owner is refresh, but {nvgpu_node.CDI_REFRESH_SERVICE} is not installed or "
                "systemd does not run here: it comes with nvidia-container-toolkit 1.18 and later; use "
                "gpu:toolkit:cdi_owner formula with an older toolkit")
    units = (nvgpu_node.CDI_REFRESH_PATH_UNIT, nvgpu_node.CDI_REFRESH_SERVICE)
    disabled = [unit for unit in units if not __salt__["service.enabled"](unit)]
    if disabled:
        changes["cdi_refresh_enabled"] = {"old": disabled, "new": list(units)}
        if not test:
            for unit in disabled:
                __salt__["service.enable"](unit)
    # The path unit watches modules.dep only while it is active.
    if not __salt__["service.status"](nvgpu_node.CDI_REFRESH_PATH_UNIT):
        changes["cdi_refresh_watching"] = {"old": False, "new": True}
        if not test and not __salt__["service.start"](nvgpu_node.CDI_REFRESH_PATH_UNIT):
            return f"systemctl start {nvgpu_node.CDI_REFRESH_PATH_UNIT} failed: see its status and journal"
    spec = __salt__["nvgpu_toolkit.cdi_spec"](nvgpu_node.CDI_REFRESH_SPEC)
    problem = _cdi_problem(spec, driver)
    if problem:
        # It ran before the driver changed, or not at all since the boot cleared /var/run:
        # run it again (a oneshot unit with RemainAfterExit runs on every restart).
        changes["cdi_spec"] = {
            "old": {"path": nvgpu_node.CDI_REFRESH_SPEC, "driver_version": spec["driver_version"],
                    "mode": spec["mode"]} if spec["exists"] else None,
            "new": {"path": nvgpu_node.CDI_REFRESH_SPEC, "driver_version": driver, "mode": "0644"},
            "reason": problem, "by": nvgpu_node.CDI_REFRESH_SERVICE}
        if not test:
            ran = __salt__["service.restart"](nvgpu_node.CDI_REFRESH_SERVICE)
            new = __salt__["nvgpu_toolkit.cdi_spec"](nvgpu_node.CDI_REFRESH_SPEC)
            left = _cdi_problem(new, driver)
            if not ran or left:
                return (f"{nvgpu_node.CDI_REFRESH_SERVICE} ran but {nvgpu_node.CDI_REFRESH_SPEC} is "
                        f"{left or 'not what it should be'}: see `systemctl status {nvgpu_node.CDI_REFRESH_SERVICE}` "
                        f"and `journalctl -u {nvgpu_node.CDI_REFRESH_SERVICE}`")
            changes["cdi_spec"]["new"] = {"path": nvgpu_node.CDI_REFRESH_SPEC,
                                          "driver_version": new["driver_version"], "mode": new["mode"]}
    # One spec for nvidia.com/gpu: the formula keeps none of its own.
    if cdi_path != nvgpu_node.CDI_REFRESH_SPEC and (
            __salt__["nvgpu_toolkit.cdi_spec"](cdi_path)["kind"] == nvgpu_node.CDI_KIND):
        changes["formula_cdi_spec"] = {"old": cdi_path, "new": None}
        if not test:
            __salt__["file.remove"](cdi_path)
    return None


def _cdi_refresh_off(cdi_path, changes, test):
    """cdi_owner formula on a toolkit that ships nvidia-cdi-refresh: its units disabled and
    stopped (the path trigger, and the service that would run at boot), its spec gone."""
    units = (nvgpu_node.CDI_REFRESH_PATH_UNIT, nvgpu_node.CDI_REFRESH_SERVICE)
    enabled = [unit for unit in units if __salt__["service.enabled"](unit)]
    active = [unit for unit in units if __salt__["service.status"](unit)]
    if enabled or active:
        changes["cdi_refresh_enabled"] = {"old": sorted(set(enabled) | set(active)), "new": []}
        if not test:
            for unit in enabled:
                __salt__["service.disable"](unit)
            for unit in active:
                __salt__["service.stop"](unit)
    if cdi_path != nvgpu_node.CDI_REFRESH_SPEC and (
            __salt__["nvgpu_toolkit.cdi_spec"](nvgpu_node.CDI_REFRESH_SPEC)["kind"] == nvgpu_node.CDI_KIND):
        changes["refresh_cdi_spec"] = {"old": nvgpu_node.CDI_REFRESH_SPEC, "new": None}
        if not test:
            __salt__["file.remove"](nvgpu_node.CDI_REFRESH_SPEC)


@nvgpu_state.reports_unloaded_modules
def container_toolkit(
    name,
    mode="auto",
    rootless=False,
    hook_path=nvgpu_node.OCI_HOOK_PATH,
    hook_binary=nvgpu_node.OCI_HOOK_BINARY,
    cdi_path=nvgpu_node.CDI_SPEC_PATH,
    cdi_owner="auto",
):
    """
    Ensure the NVIDIA container toolkit gives Podman containers the GPU.

    The toolkit's repository and package are Salt's own states' job
    (``pkgrepo.managed`` and ``pkg.installed`` in gpu/toolkit.sls, which this state
    requires); this state configures what the package installed.

    name
        An ID for the state.

    mode
        ``hook``: NVIDIA's OCI prestart hook JSON at ``hook_path``, exactly as the
        toolkit RPMs shipped it; an ``nvidia.com/gpu`` CDI spec at ``cdi_path`` (from
        cdi mode) is removed. ``cdi``: a CDI spec at ``cdi_path`` from
        ``nvidia-ctk cdi generate``, world-readable, regenerated when it is missing or
        names another driver version than the loaded one (a driver upgrade makes it
        stale); NVIDIA's hook file at ``hook_path`` is removed (it would inject the
        GPU a second time), a hook file with other content is left alone.
        ``auto`` (default): ``cdi`` when Podman is 4.1 or newer, else ``hook`` (the
        rule ``nvgpu.run_vector_add`` follows too).

    cdi_owner
        Who writes the CDI spec in cdi mode; either way there is one spec for
        ``nvidia.com/gpu``. ``refresh``: the toolkit's ``nvidia-cdi-refresh`` (1.18+),
        its path and service units enabled and the path unit watching, the service
        run again when its spec (``/var/run/cdi/nvidia.yaml``) is missing or names
        another driver than the loaded one, and the formula's spec at ``cdi_path``
        removed. ``formula``: the spec at ``cdi_path`` as above, and where the toolkit
        ships nvidia-cdi-refresh its units disabled and stopped (at boot the service
        would write its spec again) and its spec removed. ``auto`` (default):
        ``refresh`` where the unit is installed and systemd runs, else ``formula``.

    rootless
        Set ``nvidia-container-cli.no-cgroups = true`` in the toolkit's config.toml
        (through ``nvidia-ctk config``) so that rootless Podman can use the hook.
        False leaves the setting as it is.

    .. code-block:: yaml

        gpu-container-toolkit:
          nvgpu.container_toolkit:
            - mode: cdi
            - rootless: True
            - require:
              - pkg: gpu-toolkit-installed
    """
    ret = nvgpu_state.new(name)
    if mode not in nvgpu_node.MODES:
        return nvgpu_state.failed(ret, f"mode must be one of {', '.join(nvgpu_node.MODES)}, not {mode!r}")
    if cdi_owner not in nvgpu_node.CDI_OWNERS:
        return nvgpu_state.failed(ret, f"cdi_owner must be one of {', '.join(nvgpu_node.CDI_OWNERS)}, not "
                                       f"{cdi_owner!r} (gpu:toolkit:cdi_owner)")
    test = __opts__["test"]
    changes = {}
    notes = []
    try:
        podman = __salt__["nvgpu.podman_version"]() if mode == "auto" else None
        effective = nvgpu_node.resolve_mode(mode, podman)
        if mode == "auto" and podman:
            notes.append(f"mode auto: Podman {podman} -> {effective}")
        elif mode == "auto":
            if test:
                notes.append("mode auto: decided once Podman is installed (cdi for Podman >= 4.1, else hook)")
            else:
                return nvgpu_state.failed(
                    ret,
                    "mode=auto needs Podman's version, but podman is not installed. Install it first "
                    "(require the gpu.runtime states) or set gpu:toolkit:mode to hook or cdi.",
                )

        if effective == "hook":
            wanted = __salt__["nvgpu_toolkit.oci_hook_content"](hook_binary)
            current = __salt__["nvgpu_toolkit.oci_hook"](hook_path)
            if current != wanted:
                changes["oci_hook"] = {"old": "absent" if current is None else "different", "new": hook_path}
                if not test:
                    __salt__["nvgpu_toolkit.write_oci_hook"](hook_path, hook_binary)
            # A spec left from cdi mode would make Podman inject the GPU a second way, and
            # go stale at the next driver upgrade: the GPU comes through the hook only.
            if __salt__["nvgpu_toolkit.cdi_spec"](cdi_path)["kind"] == nvgpu_node.CDI_KIND:
                changes["cdi_spec"] = {"old": cdi_path, "new": None}
                if not test:
                    __salt__["file.remove"](cdi_path)
        elif effective == "cdi":
            # NVIDIA's hook injects the GPU into every container on its own; next to CDI
            # it would inject twice. Only a file with exactly NVIDIA's content goes.
            if __salt__["nvgpu_toolkit.oci_hook"](hook_path) == __salt__["nvgpu_toolkit.oci_hook_content"](hook_binary):
                changes["oci_hook"] = {"old": hook_path, "new": None}
                if not test:
                    __salt__["nvgpu_toolkit.remove_oci_hook"](hook_path)
            driver = __salt__["nvgpu.driver_version"]()
            # systemd's service module is there only where systemd runs.
            refresh = __salt__["nvgpu_toolkit.cdi_refresh_shipped"]() and "service.enable" in __salt__
            owner = nvgpu_node.resolve_cdi_owner(cdi_owner, refresh)
            if refresh or owner == "refresh":
                notes.append(f"CDI spec by {'nvidia-cdi-refresh' if owner == 'refresh' else 'the formula'}")
            if owner == "refresh":
                failure = _cdi_by_refresh(cdi_path, driver, changes, test, refresh)
                if failure:
                    return nvgpu_state.failed(ret, failure, changes)
            elif refresh:
                _cdi_refresh_off(cdi_path, changes, test)
            spec = __salt__["nvgpu_toolkit.cdi_spec"](cdi_path)
            problem = _cdi_problem(spec, driver) if owner == "formula" else None
            if problem:
                changes["cdi_spec"] = {
                    "old": {"path": cdi_path, "driver_version": spec["driver_version"], "mode": spec["mode"]}
                    if spec["exists"]
                    else None,
                    "new": {"path": cdi_path, "driver_version": driver, "mode": "0644"},
                    "reason": problem,
                }
                if not test:
                    new = __salt__["nvgpu_toolkit.cdi_generate"](cdi_path)
                    changes["cdi_spec"]["new"] = {
                        "path": cdi_path,
                        "driver_version": new["driver_version"],
                        "mode": new["mode"],
                    }
                    left = _cdi_problem(new, driver)
                    if left:
                        return nvgpu_state.failed(
                            ret,
                            f"nvidia-ctk cdi generate wrote {cdi_path} but it is still {left}. Run "
                            "`nvidia-ctk cdi generate` by hand and check `nvidia-smi` for the loaded driver.",
                            changes,
                        )
        elif effective is None:
            changes["gpu_access"] = {"old": None, "new": "OCI hook or CDI spec, by Podman version"}

        if rootless:
            current = __salt__["nvgpu_toolkit.config_value"](nvgpu_node.NO_CGROUPS_KEY)
            if current is not True:
                changes["no-cgroups"] = {"old": current, "new": True}
                if not test:
                    if __salt__["nvgpu_toolkit.set_config"](nvgpu_node.NO_CGROUPS_KEY, True) is not True:
                        return nvgpu_state.failed(
                            ret,
                            f"nvidia-ctk config --set {nvgpu_node.NO_CGROUPS_KEY}=true ran but config.toml does not say "
                            "so. Check /etc/nvidia-container-runtime/config.toml by hand.",
                            changes,
                        )
    except (CommandExecutionError, SaltInvocationError) as err:
        # A file that could not be written or removed (read-only, disk full, a relative
        # path): name the pillar key that sets its path, and do not report it changed.
        settings = {cdi_path: ("gpu:toolkit:cdi_path", "cdi_spec"), hook_path: ("gpu:toolkit:hook_path", "oci_hook")}
        failed_path = getattr(err, "path", None)
        key, change = settings.get(failed_path, (None, None)) if isinstance(failed_path, str) else (None, None)
        changes.pop(change, None)
        first, newline, rest = str(err).partition("\n")
        where = f" (path from pillar {key})" if key else ""
        return nvgpu_state.failed(
            ret, f"Configuring the NVIDIA container toolkit failed: {first}{where}{newline}{rest}", changes
        )

    note = f" ({'; '.join(notes)})" if notes else ""
    return nvgpu_state.finish(ret, changes, "NVIDIA container toolkit",
                              f"NVIDIA container toolkit is ready, mode {effective}", test, note)


# ---------------------------------------------------------------------------
# SELinux
# ---------------------------------------------------------------------------


def _is_remote(source):
    """True for a source fetched over the network (any URL scheme but salt:// and file://)."""
    # urlsplit lower-cases the scheme: HTTPS:// is remote as https:// is.
    return urllib.parse.urlsplit(str(source)).scheme not in ("", "salt", "file")


def _fetch_policy(source, source_hash, saltenv):
    """
    Local path of the policy package, fetched with Salt's file client when needed and
    checked against ``source_hash`` with Salt's own hash handling (``file.check_hash``).
    """
    if urllib.parse.urlsplit(source).scheme == "file":
        path = urllib.parse.urlsplit(source).path
    elif source.startswith("/"):
        path = source
    else:
        path = __salt__["cp.cache_file"](source, saltenv=saltenv)
        if not path:
            raise CommandExecutionError(
                f"could not fetch the SELinux policy package {source}. Check the URL or salt:// path "
                "(gpu:selinux:policy_source) and that the minion can reach it."
            )
    if not os.path.isfile(path):
        raise CommandExecutionError(f"SELinux policy package {path} does not exist (gpu:selinux:policy_source)")
    # file.check_hash compares hex digests as given; a digest pasted in upper case is the same digest.
    if source_hash and not __salt__["file.check_hash"](path, str(source_hash).strip().lower()):
        raise CommandExecutionError(
            f"SELinux policy package {source} does not match {source_hash}. The download is corrupt or "
            "the file changed upstream: check it, then fix gpu:selinux:policy_hash."
        )
    return path


@nvgpu_state.reports_unloaded_modules
def selinux_ready(
    name,
    policy_source=None,
    source_hash=None,
    module_name="nvidia-container",
    relabel=True,
    relabel_recursive=("/dev",),
    saltenv="base",
    method="auto",
):
    """
    Ensure SELinux lets rootless GPU containers use the GPU, by one of two methods:
    ``boolean``, container-selinux's ``container_use_xserver_devices`` turned on
    persistently through Salt's own ``selinux.boolean`` state (containers then run as
    ``container_t``), or ``module``, NVIDIA's policy module (dgx-selinux
    ``nvidia-container.pp``, containers run as ``nvidia_container_t``); and the files the
    toolkit injects (``nvidia-container-cli list``) and ``/dev`` labelled as the policy says.

    With SELinux disabled there is nothing to do; the state says so and changes nothing.

    method
        ``auto`` (default): the boolean where the node's policy defines it
        (container-selinux 2.232.0 and later: EL 9.5+, RHEL 10), else the module; or
        ``boolean``, or ``module``. Decided on the node when the state runs
        (``nvgpu_selinux.method``), after Podman brought container-selinux.

    policy_source
        The ``.pp`` (method module): ``salt://...``, a local path, or ``https://...`` (then
        ``source_hash`` is required). Fetched with Salt's file client, only when the
        module is not installed yet.

    source_hash
        ``sha256=HEX`` (or ``sha256:HEX``, or a bare hex digest) of the ``.pp``.

    module_name
        The name ``semodule -l`` lists once installed. Default ``nvidia-container``.

    relabel
        Restore labels (only where ``restorecon -n -v`` reports them wrong). Default True.

    relabel_recursive
        Trees relabelled recursively. Default ``["/dev"]``.

    .. code-block:: yaml

        gpu-selinux-ready:
          nvgpu.selinux_ready:
            - method: auto
            - policy_source: https://raw.githubusercontent.com/NVIDIA/dgx-selinux/master/bin/RHEL8/nvidia-container.pp
            - source_hash: sha256=74646211455c5bc11cff08961e62e7b68d5a84037d1ea7e837c2d50e36cb4ebf
    """
    ret = nvgpu_state.new(name)
    if method not in nvgpu_node.SELINUX_METHODS:
        return nvgpu_state.failed(
            ret, f"method must be one of {', '.join(nvgpu_node.SELINUX_METHODS)}, not {method!r} "
                 "(gpu:selinux:method)")
    test = __opts__["test"]
    changes = {}
    try:
        mode = __salt__["nvgpu_selinux.mode"]()
        if mode == "Disabled":
            ret["comment"] = (
                "SELinux is disabled: no policy module or labels needed. If you enable it later, "
                "apply this state again (after the relabel at boot)."
            )
            return ret

        effective = __salt__["nvgpu_selinux.method"](method)
        if (test and method == "auto" and effective == "module"
                and not __salt__["pkg.version"](nvgpu_node.SELINUX_BOOLEAN_PACKAGE)):
            # container-selinux comes with Podman in this very run; its policy decides.
            changes["method"] = {
                "old": None,
                "new": f"boolean {nvgpu_node.SELINUX_BOOLEAN} if the {nvgpu_node.SELINUX_BOOLEAN_PACKAGE} "
                       f"that Podman brings defines it, else policy module {module_name}",
            }
            done = "(decided once container-selinux is installed)"
        elif effective == "boolean":
            failure = _selinux_boolean(changes)
            if failure:
                return nvgpu_state.failed(ret, failure, changes)
            done = f"boolean {nvgpu_node.SELINUX_BOOLEAN} on (containers run as container_t)"
        else:
            failure = _selinux_module(policy_source, source_hash, module_name, saltenv, changes, test)
            if failure:
                return nvgpu_state.failed(ret, failure, changes)
            done = f"{module_name} installed (containers run as nvidia_container_t)"

        if relabel:
            try:
                # Without -k: listing must not load kernel modules (test=True is read-only,
                # and loading is the modules_loaded state's job).
                listed = __salt__["nvgpu.list_container_files"](load_kmods=False)
            except CommandExecutionError:
                if not test:
                    raise
                listed = None
                changes["relabelled"] = ["(files listed by nvidia-container-cli, once it is installed)"]
            if listed is not None:
                files = []
                for paths in listed.values():
                    files.extend(p for p in paths if p not in files)
                wrong = __salt__["nvgpu_selinux.relabel_needed"](files)
                wrong += [
                    p
                    for p in __salt__["nvgpu_selinux.relabel_needed"](list(relabel_recursive), recursive=True)
                    if p not in wrong
                ]
                if wrong:
                    changes["relabelled"] = wrong
                    if not test:
                        __salt__["nvgpu_selinux.relabel"](wrong)
                        left = __salt__["nvgpu_selinux.relabel_needed"](wrong)
                        if left:
                            return nvgpu_state.failed(
                                ret,
                                "restorecon ran but these paths still have wrong labels: {}. Check "
                                "`restorecon -n -v` on them and the file contexts (`semanage fcontext -l`)."
                                "".format(", ".join(left)),
                                changes,
                            )
    except (CommandExecutionError, SaltInvocationError) as err:
        return nvgpu_state.failed(ret, f"Preparing SELinux for GPU containers failed: {err}", changes)

    return nvgpu_state.finish(ret, changes, f"SELinux ({mode})",
                              f"SELinux ({mode}) is ready: {done}, labels correct", test)


def _selinux_boolean(changes):
    """container_use_xserver_devices on, persistently, through Salt's selinux.boolean
    state (test=True included); a failure's text, or None."""
    if "selinux.boolean" not in __states__:
        return ("Salt's selinux state is not available: its execution module needs semanage, setsebool "
                "and semodule on PATH (dnf install policycoreutils-python-utils policycoreutils)")
    res = __states__["selinux.boolean"](name=nvgpu_node.SELINUX_BOOLEAN, value=True, persist=True)
    if res["result"] is False:
        return f"Turning on the SELinux boolean {nvgpu_node.SELINUX_BOOLEAN} failed: {res['comment']}"
    if res["changes"]:
        changes["boolean"] = res["changes"]
    return None


def _selinux_module(policy_source, source_hash, module_name, saltenv, changes, test):
    """NVIDIA's policy module installed (test=True: only said); a failure's text, or None."""
    if not policy_source:
        return ("policy_source is required for the policy module (gpu:selinux:policy_source), or use "
                "gpu:selinux:method boolean where container-selinux defines container_use_xserver_devices")
    if _is_remote(policy_source) and not source_hash:
        return (f"policy_source {policy_source} is remote, so source_hash is required "
                "(gpu:selinux:policy_hash, e.g. sha256=<hex>): an unverified policy module would run as root.")
    if module_name in __salt__["nvgpu_selinux.policy_modules"]():
        return None
    changes["policy_module"] = {"old": None, "new": module_name}
    if not test:
        path = _fetch_policy(policy_source, source_hash, saltenv)
        __salt__["nvgpu_selinux.install_policy"](path)
        if module_name not in __salt__["nvgpu_selinux.policy_modules"]():
            return (f"semodule -i {path} succeeded but `semodule -l` does not list {module_name}: "
                    "the package holds another module name; set module_name to it.")
    return None


# ---------------------------------------------------------------------------
# Rootless users
# ---------------------------------------------------------------------------


@nvgpu_state.reports_unloaded_modules
def subids_present(name, start=None, count=65536):
    """
    Ensure user ``name`` has subordinate uid and gid ranges in ``/etc/subuid`` and
    ``/etc/subgid`` (rootless Podman maps the container's ids into them).

    start
        First subordinate id. Default None: keep any existing range of at least
        ``count`` ids (``useradd`` on RHEL allocates one), else take the first free one
        from 100000.

    count
        How many ids. Default 65536.

    .. code-block:: yaml

        gpu-user-gpuuser-subids:
          nvgpu.subids_present:
            - name: gpuuser
            - count: 65536
    """
    ret = nvgpu_state.new(name)
    changes = {}
    try:
        count = int(count)
        for kind in ("subuid", "subgid"):
            cur = __salt__["nvgpu_rootless.subids"](name, kind=kind)
            if start is None:
                if any(r["count"] >= count for r in cur):
                    continue
                new_start = __salt__["nvgpu_rootless.free_subid_start"](count, kind=kind)
            else:
                if cur == [{"start": int(start), "count": count}]:
                    continue
                new_start = int(start)
                taken = __salt__["nvgpu_rootless.overlaps"](name, new_start, count, kind=kind)
                if taken:
                    return nvgpu_state.failed(ret, "{} range {}-{} of {} overlaps {}; choose another start "
                                              "(gpu:rootless_users[].subuid_start)".format(
                                                  kind, new_start, new_start + count - 1, name,
                                                  ", ".join(f"{t['user']}'s {t['start']}-{t['start'] + t['count'] - 1}"
                                                            for t in taken)), changes)
            changes[kind] = {"old": cur, "new": [{"start": new_start, "count": count}]}
            if not __opts__["test"]:
                __salt__["nvgpu_rootless.set_subids"](name, new_start, count, kind=kind)
        if changes and not __opts__["test"]:
            __salt__["nvgpu_rootless.migrate"](name)
    except (CommandExecutionError, SaltInvocationError, OSError, ValueError) as err:
        return nvgpu_state.failed(ret, f"Setting subordinate id ranges of {name} failed: {err}", changes)
    if not changes:
        ret["comment"] = f"User {name} has subuid and subgid ranges"
        return ret
    if __opts__["test"]:
        return nvgpu_state.pending(ret, changes, f"{', '.join(changes)} ranges of {name} would be set")
    ret.update(changes=changes, comment=f"Set {', '.join(changes)} ranges of {name}")
    return ret


@nvgpu_state.reports_unloaded_modules
def user_lingers(name):
    """
    Ensure systemd keeps user ``name``'s manager, and with it the runtime dir
    ``/run/user/UID``, from boot on (``loginctl enable-linger``): rootless Podman run
    without a login session (from Salt, cron or a unit) needs that dir, and without
    lingering systemd stops the user's containers when the user's last session ends.

    .. code-block:: yaml

        gpu-rootless-linger-gpuuser:
          nvgpu.user_lingers:
            - name: gpuuser
    """
    ret = nvgpu_state.new(name)
    if __salt__["nvgpu_rootless.lingers"](name):
        ret["comment"] = f"User {name} lingers"
        return ret
    changes = {"linger": {"old": False, "new": True}}
    if __opts__["test"]:
        return nvgpu_state.pending(ret, changes, f"Lingering would be turned on for {name} (loginctl enable-linger)")
    try:
        __salt__["nvgpu_rootless.enable_linger"](name)
    except CommandExecutionError as err:
        return nvgpu_state.failed(ret, str(err))
    ret.update(changes=changes, comment=f"Turned lingering on for {name}")
    return ret


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _each_gpu_result(ret, res, who, mode, why):
    """The state's return for ``gpus=each``: a line per GPU, the failed ones with cause and fix."""
    lines = []
    for gpu in res["gpus"]:
        status = "PASSED" if gpu["passed"] else "FAILED"
        lines.append(f"GPU {gpu['index']} ({gpu['uuid']}, {gpu['name']}): {status} ({gpu.get('duration_s')} s)")
    for gpu in res["failed_gpus"]:
        lines.append(f"GPU {gpu['index']} ({gpu['uuid']}): Cause: {gpu['cause']}\nFix: {gpu['fix']}")
    head = "Vector add {} {} on each of {} GPU(s) (mode {}, {} s{})".format(
        "PASSED" if res["passed"] else "FAILED", who, len(res["gpus"]), res.get("mode") or mode, res["duration_s"],
        f"; ran: {why}" if res["passed"] else "")
    if res["passed"]:
        ret["comment"] = "\n".join([head] + lines)
        return ret
    if not res["gpus"]:
        diagnosis = res.get("diagnosis") or {}
        lines.append(f"Cause: {diagnosis.get('cause', 'unknown')}\nFix: {diagnosis.get('fix', '')}")
    return nvgpu_state.failed(ret, "\n".join([head] + lines))


# What each input of a validation is called in a state's comment.
_INPUT_WORDS = {
    "boot_id": "boot (boot id)",
    "driver": "loaded driver version",
    "cdi_specs": "CDI spec",
    "oci_hooks": "OCI hook file",
    "toolkit_config": "toolkit config",
    "fabric_manager": "fabric manager state",
    "selinux": "SELinux mode, modules or boolean",
    "podman": "podman binary",
    "image": "image",
    "image_id": "image id",
    "mode": "mode",
    "pull": "pull policy",
    "user": "user",
    "subuid": "subuid ranges",
    "subgid": "subgid ranges",
}


def _record_path(user, image, mode, pull, gpus):
    """Where the last validation of (user, image, mode, pull, gpus) is kept: Salt's cachedir."""
    key = hashlib.sha256(json.dumps([user, image, mode, pull, gpus]).encode()).hexdigest()[:16]
    return os.path.join(__opts__["cachedir"], "nvgpu", "validate", f"{user or 'root'}-{key}.json")


def _last_record(path):
    """The last validation's record, or None (none yet, or unreadable: then it runs)."""
    text = nvgpu_node.read_file(path)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("inputs"), dict) else None


def _changed_inputs(record, inputs):
    return [_INPUT_WORDS.get(key, key) for key in sorted(set(record["inputs"]) | set(inputs))
            if record["inputs"].get(key) != inputs.get(key)]


@nvgpu_state.reports_unloaded_modules
def vector_add_passes(name, user=None, image=None, mode="auto", timeout=300, pull="missing", gpus="all",
                      when="changed"):
    """
    Run the CUDA vector add in a Podman container (as root, or rootless as ``user``)
    and fail, with the diagnosis (cause and fix) as the comment, unless it passes.

    Validation changes nothing, so the state never reports changes; with
    ``test=True`` it starts no container and says what it would run.

    user
        Run rootless as this user, with the guide's flags. Default: root.

    image
        The validation image. Default: ``nvgpu.run_vector_add``'s
        (docker.io/mirrorgooglecontainers/cuda-vector-add:v0.1).

    mode
        ``hook``, ``cdi`` or ``auto`` (cdi with Podman 4.1 or newer, else hook).

    gpus
        ``all`` (one run that sees every GPU) or ``each`` (one run per GPU, all at once; the
        state fails naming each GPU that failed, by index and UUID). Pillar ``gpu:validate:gpus``.

    when
        ``changed`` (default): run the container only when something its result
        depends on changed since the last run that passed (``nvgpu.validation_inputs``:
        boot id, loaded driver, CDI specs, OCI hooks, toolkit config, SELinux, Podman,
        the image's id, the user's subordinate ranges), or the last run failed; else
        pass without a container and say when it last passed. The last run is kept in
        Salt's cachedir (``nvgpu/validate/``). ``always``: run every time.

    .. code-block:: yaml

        gpu-validate-gpuuser:
          nvgpu.vector_add_passes:
            - user: gpuuser
            - mode: cdi
            - when: changed
    """
    ret = nvgpu_state.new(name)
    who = f"as {user} (rootless)" if user else "as root"
    if when not in nvgpu_node.VALIDATE_WHEN:
        return nvgpu_state.failed(
            ret, f"when must be one of {', '.join(nvgpu_node.VALIDATE_WHEN)} (gpu:validate:when), not {when!r}")
    # Also in test mode and before `when`: a node waiting for its reboot says so.
    pending = __salt__["nvgpu.reboot_required"]()
    if pending["required"]:
        # A vector add now would test the old driver against the new libraries and fail
        # with a version mismatch: no finding about the node, only about the pending reboot.
        ret["comment"] = _reboot_required_comment(pending["reason"], f"the vector add {who} runs after it")
        return ret
    kwargs = {"user": user, "mode": mode, "timeout": timeout, "pull": pull}
    if image:
        kwargs["image"] = image
    if gpus != "all":
        kwargs["gpus"] = gpus
    fingerprint = {"user": user, "image": image or nvgpu_node.DEFAULT_IMAGE, "mode": mode, "pull": pull}
    record_path = _record_path(gpus=gpus, **fingerprint)
    why = "gpu:validate:when is always"
    if when == "changed":
        try:
            inputs = __salt__["nvgpu.validation_inputs"](**fingerprint)
        except (CommandExecutionError, SaltInvocationError) as err:
            # Not there yet (test=True on a fresh node: no user, no Podman): the run says why.
            why = f"what it depends on could not be read: {err}"
        else:
            record = _last_record(record_path)
            if record is None:
                why = "no earlier run recorded"
            elif not record.get("passed"):
                why = f"the last run, at {record.get('at')}, failed"
            else:
                changed = _changed_inputs(record, inputs)
                if not changed:
                    ret["comment"] = (
                        f"Vector add {who} skipped: it last PASSED at {record.get('at')} and nothing it depends "
                        "on changed since (boot, driver, CDI spec, hooks, toolkit config, SELinux, Podman, image "
                        "id, subordinate ids; gpu:validate:when: always runs it every time)"
                    )
                    return ret
                why = "changed since it last passed: " + ", ".join(changed)
    if __opts__["test"]:
        ret.update(
            result=None,
            comment=f"The vector add would run {who} (mode {mode}, image {image or 'default'}"
                    + (", on each GPU" if gpus == "each" else "") + f"; {why})",
        )
        return ret
    try:
        res = __salt__["nvgpu.run_vector_add"](**kwargs)
    except (CommandExecutionError, SaltInvocationError) as err:
        return nvgpu_state.failed(ret, f"The vector add could not run {who}: {err}")
    at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        # Read after the run: a --pull=missing run may have just pulled the image.
        after = __salt__["nvgpu.validation_inputs"](**fingerprint)
        nvgpu_node.atomic_write(record_path, json.dumps({"passed": res["passed"], "at": at, "inputs": after},
                                                        indent=1, sort_keys=True) + "\n", mode=0o600)
    except (CommandExecutionError, SaltInvocationError) as err:
        # The run's result stands; the next run only cannot skip it.
        log.warning("could not keep the validation record %s: %s", record_path, err)
    if "failed_gpus" in res:
        return _each_gpu_result(ret, res, who, mode, why)
    if res["passed"]:
        ret["comment"] = "Vector add PASSED {} (mode {}, {} elements, {} blocks of {} threads, {} s; ran: {})".format(
            who, res.get("mode", mode), res["elements"], res["blocks"], res["threads"], res["duration_s"], why
        )
        return ret
    diagnosis = res.get("diagnosis") or {}
    text = "{}\n{}".format(res.get("stderr") or "", res.get("stdout") or "").strip()
    output = "\n".join(text.splitlines()[-5:])
    return nvgpu_state.failed(
        ret,
        "Vector add FAILED {} (mode {}, exit {}).\nCause: {}\nFix: {}\nCommand: {}\nOutput: {}".format(
            who,
            res.get("mode", mode),
            res["retcode"],
            diagnosis.get("cause", "unknown"),
            diagnosis.get("fix", "read the output below"),
            " ".join(res["command"]),
            output,
        ),
    )
