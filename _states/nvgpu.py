"""
States that make a RHEL 8/9 host a validated NVIDIA GPU node for Podman containers.

Idempotent, ``test=True``-aware wrappers over the ``nvgpu`` execution module. Each
state finds the difference first and returns early when there is none; with
``test=True`` it returns ``result: None`` and exactly the changes it would make, and
changes nothing; a failure comment says what failed, why, and what to do.

.. code-block:: yaml

    gpu-driver-stream:
      nvgpu.module_stream:
        - name: nvidia-driver
        - stream: latest-dkms
        - profile: default

    gpu-nouveau-unloaded:
      nvgpu.module_unloaded:
        - name: nouveau

    gpu-driver-modules-loaded:
      nvgpu.modules_loaded:
        - name: nvidia

    gpu-container-toolkit:
      nvgpu.container_toolkit:
        - mode: auto
        - rootless: True

    gpu-selinux-ready:
      nvgpu.selinux_ready:
        - policy_source: salt://gpu/files/nvidia-container.pp

    gpu-validate-root:
      nvgpu.vector_add_passes:
        - image: docker.io/mirrorgooglecontainers/cuda-vector-add:v0.1
"""

import os
import re

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "nvgpu"

_TOOLKIT_MODES = ("auto", "hook", "cdi")
_HOOK_PATH = "/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json"
_HOOK_BINARY = "/usr/bin/nvidia-container-runtime-hook"
_CDI_PATH = "/etc/cdi/nvidia.yaml"
_CDI_KIND = "nvidia.com/gpu"
# Podman reads CDI specs from 4.1 on; NVIDIA recommends CDI over the hook there.
_CDI_MIN_PODMAN = (4, 1)
_NO_CGROUPS = "nvidia-container-cli.no-cgroups"
_HASH_LENGTHS = {32: "md5", 40: "sha1", 56: "sha224", 64: "sha256", 96: "sha384", 128: "sha512"}


def __virtual__():
    if "nvgpu.module_stream" not in __salt__:
        return (False, "the nvgpu execution module is not loaded (sync _modules or install saltext.nvgpu)")
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "comment": "", "changes": {}}


def _pending(ret, changes, comment):
    ret.update(result=None, changes=changes, comment=comment)
    return ret


def _failed(ret, comment, changes=None):
    ret.update(result=False, comment=comment)
    if changes:
        ret["changes"] = changes
    return ret


# ---------------------------------------------------------------------------
# dnf module streams
# ---------------------------------------------------------------------------


def module_stream(name, stream, profile=None, platform=None):
    """
    Ensure the dnf module ``name`` is enabled on ``stream`` with ``profile`` installed,
    switching a host that is on another stream.

    The current stream and profiles are read from ``/etc/dnf/modules.d/<name>.module``,
    so a converged host runs no dnf at all.

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

    .. code-block:: yaml

        gpu-driver-stream:
          nvgpu.module_stream:
            - name: nvidia-driver
            - stream: latest-dkms
            - profile: default
    """
    ret = _ret(name)
    spec = f"{name}:{stream}" + (f"/{profile}" if profile else "")
    try:
        cur = __salt__["nvgpu.module_stream"](name)
        enabled_here = cur["state"] == "enabled" and cur["stream"] == stream
        has_profile = profile in cur["profiles"] if profile else bool(cur["profiles"])
        if enabled_here and has_profile:
            ret["comment"] = f"Module stream {spec} is already installed"
            return ret

        if cur["state"] == "enabled" and cur["stream"] and cur["stream"] != stream:
            action = "switch"
        elif cur["state"] == "disabled":
            action = "reset"
        else:
            action = "install"
        new_profiles = sorted(set(cur["profiles"] if enabled_here else []) | {profile or "(default)"})
        changes = {}
        if cur["stream"] != stream or cur["state"] != "enabled":
            changes["stream"] = {"old": cur["stream"] if cur["state"] == "enabled" else None, "new": stream}
        changes["profiles"] = {"old": cur["profiles"], "new": new_profiles}
        what = {
            "switch": f"Module {name} {{}} switched from stream {cur['stream']} to {spec}",
            "reset": f"Module {name} {{}} reset (it was disabled) and {spec} installed",
            "install": f"Module stream {spec} {{}} installed",
        }[action]
        if __opts__["test"]:
            return _pending(ret, changes, what.format("would be"))

        if action == "switch":
            __salt__["nvgpu.module_switch"](name, stream, profile=profile, platform=platform)
        else:
            if action == "reset":
                __salt__["nvgpu.module_reset"](name, platform=platform)
            __salt__["nvgpu.module_install"](name, stream, profile=profile, platform=platform)
        after = __salt__["nvgpu.module_stream"](name)
    except (CommandExecutionError, SaltInvocationError) as err:
        return _failed(ret, str(err))

    ok = after["state"] == "enabled" and after["stream"] == stream and (
        profile in after["profiles"] if profile else bool(after["profiles"])
    )
    if not ok:
        return _failed(
            ret,
            f"dnf reported success but /etc/dnf/modules.d/{name}.module says stream={after['stream']} "
            f"profiles={','.join(after['profiles'])} state={after['state']}, not {spec}. "
            f"Run `dnf module info {name}:{stream}` and `dnf module install {spec}` by hand.",
        )
    changes["profiles"]["new"] = after["profiles"]
    ret.update(changes=changes, comment=what.format("was"))
    return ret


# ---------------------------------------------------------------------------
# Kernel modules
# ---------------------------------------------------------------------------


def modules_loaded(name, uvm=True, reload_on_upgrade=True):
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
        waiting for a reboot. Default True; it fails while a process uses the GPU.

    .. code-block:: yaml

        gpu-driver-modules-loaded:
          nvgpu.modules_loaded:
            - name: nvidia
    """
    ret = _ret(name)
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
                changes["driver_version"] = {"old": running, "new": installed}
        if not changes:
            ret["comment"] = "Kernel modules {} are already loaded".format(", ".join(wanted))
            return ret
        if "driver_version" in changes:
            what = "driver {old} {{}} reloaded as the installed {new}".format(**changes["driver_version"])
        else:
            what = "kernel modules {} {{}} loaded".format(", ".join(missing))
        if __opts__["test"]:
            return _pending(ret, changes, "The " + what.format("would be"))
        if "driver_version" in changes:
            res = __salt__["nvgpu.reload_driver"](uvm=uvm)
            now = __salt__["nvgpu.driver_version"]()
            if now != changes["driver_version"]["new"]:
                return _failed(
                    ret,
                    f"Reloaded the NVIDIA modules but driver {now} is loaded, not the installed "
                    f"{changes['driver_version']['new']}: the module was not rebuilt for this kernel "
                    "(check `dkms status`, kernel-devel for the running kernel), or reboot.",
                    changes,
                )
        else:
            res = __salt__["nvgpu.load_modules"](uvm=uvm)
    except (CommandExecutionError, SaltInvocationError) as err:
        return _failed(ret, f"Loading the NVIDIA kernel modules failed: {err}", changes)
    changes["device_nodes"] = res["device_nodes"]
    ret.update(changes=changes, comment="The " + what.format("was" if "driver_version" in changes else "were"))
    return ret


def module_unloaded(name):
    """
    Ensure the kernel module ``name`` is not loaded (``modprobe -r``), e.g. nouveau,
    which holds the GPU the NVIDIA driver needs.

    Loaded means ``/sys/module/<name>`` exists (the truth on RHEL and on kernels
    without ``/proc/modules``).

    .. code-block:: yaml

        gpu-nouveau-unloaded:
          nvgpu.module_unloaded:
            - name: nouveau
    """
    ret = _ret(name)
    try:
        if not __salt__["nvgpu.kernel_module_loaded"](name):
            ret["comment"] = f"Kernel module {name} is not loaded"
            return ret
        changes = {"unloaded": [name]}
        if __opts__["test"]:
            return _pending(ret, changes, f"Kernel module {name} would be unloaded")
        __salt__["nvgpu.unload_kernel_module"](name)
        still = __salt__["nvgpu.kernel_module_loaded"](name)
    except (CommandExecutionError, SaltInvocationError) as err:
        return _failed(ret, str(err))
    if still:
        return _failed(
            ret,
            f"modprobe -r {name} exited 0 but /sys/module/{name} still exists: it is built into the "
            f"kernel or in use. Blacklist it (modprobe.d and rd.driver.blacklist={name}) and reboot.",
        )
    ret.update(changes=changes, comment=f"Unloaded kernel module {name}")
    return ret


# ---------------------------------------------------------------------------
# NVIDIA container toolkit
# ---------------------------------------------------------------------------


def _version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", str(text))[:3])


def _cdi_problem(spec, driver):
    """
    Why the CDI spec needs (re)generating, or None when it is fine.
    """
    if not spec["exists"]:
        return "missing"
    if spec["kind"] != _CDI_KIND or not spec["devices"]:
        return f"not a {_CDI_KIND} spec with devices"
    if not spec["mode"] or not int(spec["mode"], 8) & 0o004:
        return f"not world-readable (mode {spec['mode']})"
    if driver and spec["driver_version"] != driver:
        return f"stale: written for driver {spec['driver_version']}, driver {driver} is loaded"
    return None


def container_toolkit(
    name,
    mode="auto",
    rootless=False,
    package="nvidia-container-toolkit",
    hook_path=_HOOK_PATH,
    hook_binary=_HOOK_BINARY,
    cdi_path=_CDI_PATH,
):
    """
    Ensure the NVIDIA container toolkit gives Podman containers the GPU.

    The package is ensured here (``pkg.install`` when ``pkg.version`` finds it
    missing); its repository is the formula's job (``pkgrepo.managed`` in
    gpu/toolkit.sls, which this state requires), because Salt's pkgrepo state already
    does that with GPG keys and test mode.

    name
        An ID for the state.

    mode
        ``hook``: NVIDIA's OCI prestart hook JSON at ``hook_path``, exactly as the
        toolkit RPMs shipped it. ``cdi``: a CDI spec at ``cdi_path`` from
        ``nvidia-ctk cdi generate``, world-readable, regenerated when it is missing or
        names another driver version than the loaded one (a driver upgrade makes it
        stale); NVIDIA's hook file at ``hook_path`` is removed (it would inject the
        GPU a second time), a hook file with other content is left alone.
        ``auto`` (default): ``cdi`` when Podman is 4.1 or newer, else ``hook``.

    rootless
        Set ``nvidia-container-cli.no-cgroups = true`` in the toolkit's config.toml
        (through ``nvidia-ctk config``) so that rootless Podman can use the hook.
        False leaves the setting as it is.

    package
        The toolkit package; None to not manage it.

    .. code-block:: yaml

        gpu-container-toolkit:
          nvgpu.container_toolkit:
            - mode: cdi
            - rootless: True
            - require:
              - pkgrepo: gpu-toolkit-repo
    """
    ret = _ret(name)
    if mode not in _TOOLKIT_MODES:
        return _failed(ret, f"mode must be one of {', '.join(_TOOLKIT_MODES)}, not {mode!r}")
    test = __opts__["test"]
    changes = {}
    notes = []
    try:
        if package and not __salt__["pkg.version"](package):
            changes["package"] = {"old": None, "new": package}
            if not test:
                __salt__["pkg.install"](name=package)
                version = __salt__["pkg.version"](package)
                if not version:
                    return _failed(
                        ret,
                        f"pkg.install {package} ran but the package is not installed. Check that the "
                        f"toolkit repository is configured and enabled (`dnf info {package}`).",
                        changes,
                    )
                changes["package"]["new"] = f"{package}-{version}"

        effective = mode
        if mode == "auto":
            podman = __salt__["nvgpu.podman_version"]()
            if podman:
                effective = "cdi" if _version_tuple(podman) >= _CDI_MIN_PODMAN else "hook"
                notes.append(f"mode auto: Podman {podman} -> {effective}")
            elif test:
                effective = None
                notes.append("mode auto: decided once Podman is installed (cdi for Podman >= 4.1, else hook)")
            else:
                return _failed(
                    ret,
                    "mode=auto needs Podman's version, but podman is not installed. Install it first "
                    "(require the gpu.runtime states) or set gpu:toolkit:mode to hook or cdi.",
                )

        if effective == "hook":
            wanted = __salt__["nvgpu.oci_hook_content"](hook_binary)
            current = __salt__["nvgpu.oci_hook"](hook_path)
            if current != wanted:
                changes["oci_hook"] = {"old": "absent" if current is None else "different", "new": hook_path}
                if not test:
                    __salt__["nvgpu.write_oci_hook"](hook_path, hook_binary)
        elif effective == "cdi":
            # NVIDIA's hook injects the GPU into every container on its own; next to CDI
            # it would inject twice. Only a file with exactly NVIDIA's content goes.
            if __salt__["nvgpu.oci_hook"](hook_path) == __salt__["nvgpu.oci_hook_content"](hook_binary):
                changes["oci_hook"] = {"old": hook_path, "new": None}
                if not test:
                    __salt__["nvgpu.remove_oci_hook"](hook_path)
            spec = __salt__["nvgpu.cdi_spec"](cdi_path)
            driver = __salt__["nvgpu.driver_version"]()
            problem = _cdi_problem(spec, driver)
            if problem:
                changes["cdi_spec"] = {
                    "old": {"path": cdi_path, "driver_version": spec["driver_version"], "mode": spec["mode"]}
                    if spec["exists"]
                    else None,
                    "new": {"path": cdi_path, "driver_version": driver, "mode": "0644"},
                    "reason": problem,
                }
                if not test:
                    new = __salt__["nvgpu.cdi_generate"](cdi_path)
                    changes["cdi_spec"]["new"] = {
                        "path": cdi_path,
                        "driver_version": new["driver_version"],
                        "mode": new["mode"],
                    }
                    left = _cdi_problem(new, driver)
                    if left:
                        return _failed(
                            ret,
                            f"nvidia-ctk cdi generate wrote {cdi_path} but it is still {left}. Run "
                            "`nvidia-ctk cdi generate` by hand and check `nvidia-smi` for the loaded driver.",
                            changes,
                        )
        elif effective is None:
            changes["gpu_access"] = {"old": None, "new": "OCI hook or CDI spec, by Podman version"}

        if rootless:
            current = __salt__["nvgpu.toolkit_config_value"](_NO_CGROUPS)
            if current is not True:
                changes["no-cgroups"] = {"old": current, "new": True}
                if not test:
                    if __salt__["nvgpu.set_toolkit_config"](_NO_CGROUPS, True) is not True:
                        return _failed(
                            ret,
                            f"nvidia-ctk config --set {_NO_CGROUPS}=true ran but config.toml does not say "
                            "so. Check /etc/nvidia-container-runtime/config.toml by hand.",
                            changes,
                        )
    except (CommandExecutionError, SaltInvocationError) as err:
        return _failed(ret, f"Configuring the NVIDIA container toolkit failed: {err}", changes)

    note = f" ({'; '.join(notes)})" if notes else ""
    if not changes:
        ret["comment"] = f"NVIDIA container toolkit is ready, mode {effective}{note}"
        return ret
    if test:
        return _pending(ret, changes, f"NVIDIA container toolkit would change: {', '.join(changes)}{note}")
    ret.update(changes=changes, comment=f"NVIDIA container toolkit changed: {', '.join(changes)}{note}")
    return ret


# ---------------------------------------------------------------------------
# SELinux
# ---------------------------------------------------------------------------


def _is_remote(source):
    return bool(re.match(r"^(https?|ftp)://", str(source)))


def _split_hash(source_hash):
    """
    ``(form, hexdigest)`` from ``sha256=HEX``, ``sha256:HEX`` or a bare hex digest.
    """
    text = str(source_hash).strip()
    match = re.match(r"^(md5|sha1|sha224|sha256|sha384|sha512)[=:]([0-9a-fA-F]+)$", text)
    if match:
        return match.group(1), match.group(2).lower()
    if re.match(r"^[0-9a-fA-F]+$", text) and len(text) in _HASH_LENGTHS:
        return _HASH_LENGTHS[len(text)], text.lower()
    raise SaltInvocationError(f"source_hash {source_hash!r} is not sha256=HEX, sha256:HEX or a hex digest")


def _fetch_policy(source, source_hash, saltenv):
    """
    Local path of the policy package, fetched with Salt's file client when needed and
    checked against ``source_hash``.
    """
    if source.startswith("file://"):
        path = source[len("file://") :]
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
        raise CommandExecutionError(
            f"SELinux policy package {path} does not exist (gpu:selinux:policy_source)"
        )
    if source_hash:
        form, expected = _split_hash(source_hash)
        actual = __salt__["file.get_hash"](path, form=form)
        if actual != expected:
            raise CommandExecutionError(
                f"SELinux policy package {source} has {form} {actual}, expected {expected}. The download "
                "is corrupt or the file changed upstream: check it, then fix gpu:selinux:policy_hash."
            )
    return path


def selinux_ready(
    name,
    policy_source,
    source_hash=None,
    module_name="nvidia-container",
    relabel=True,
    relabel_recursive=("/dev",),
    saltenv="base",
):
    """
    Ensure SELinux lets containers of type ``nvidia_container_t`` use the GPU: NVIDIA's
    policy module (dgx-selinux ``nvidia-container.pp``) installed, and the files the
    toolkit injects (``nvidia-container-cli list``) and ``/dev`` labelled as the
    policy says.

    With SELinux disabled there is nothing to do; the state says so and changes nothing.

    policy_source
        The ``.pp``: ``salt://...``, a local path, or ``https://...`` (then
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
            - policy_source: https://raw.githubusercontent.com/NVIDIA/dgx-selinux/master/bin/RHEL8/nvidia-container.pp
            - source_hash: sha256=...
    """
    ret = _ret(name)
    if not policy_source:
        return _failed(ret, "policy_source is required (gpu:selinux:policy_source)")
    if _is_remote(policy_source) and not source_hash:
        return _failed(
            ret,
            f"policy_source {policy_source} is remote, so source_hash is required "
            "(gpu:selinux:policy_hash, e.g. sha256=<hex>): an unverified policy module would run as root.",
        )
    test = __opts__["test"]
    changes = {}
    try:
        if source_hash:
            _split_hash(source_hash)
        mode = __salt__["nvgpu.selinux_mode"]()
        if mode == "Disabled":
            ret["comment"] = (
                "SELinux is disabled: no policy module or labels needed. If you enable it later, "
                "apply this state again (after the relabel at boot)."
            )
            return ret

        if module_name not in __salt__["nvgpu.policy_modules"]():
            changes["policy_module"] = {"old": None, "new": module_name}
            if not test:
                path = _fetch_policy(policy_source, source_hash, saltenv)
                __salt__["nvgpu.install_policy"](path)
                if module_name not in __salt__["nvgpu.policy_modules"]():
                    return _failed(
                        ret,
                        f"semodule -i {path} succeeded but `semodule -l` does not list {module_name}: "
                        "the package holds another module name; set module_name to it.",
                        changes,
                    )

        if relabel:
            try:
                listed = __salt__["nvgpu.list_container_files"]()
            except CommandExecutionError:
                if not test:
                    raise
                listed = None
                changes["relabelled"] = ["(files listed by nvidia-container-cli, once it is installed)"]
            if listed is not None:
                files = []
                for paths in listed.values():
                    files.extend(p for p in paths if p not in files)
                wrong = __salt__["nvgpu.relabel_needed"](files)
                wrong += [
                    p
                    for p in __salt__["nvgpu.relabel_needed"](list(relabel_recursive), recursive=True)
                    if p not in wrong
                ]
                if wrong:
                    changes["relabelled"] = wrong
                    if not test:
                        __salt__["nvgpu.relabel"](wrong)
                        left = __salt__["nvgpu.relabel_needed"](wrong)
                        if left:
                            return _failed(
                                ret,
                                "restorecon ran but these paths still have wrong labels: {}. Check "
                                "`restorecon -n -v` on them and the file contexts (`semanage fcontext -l`)."
                                "".format(", ".join(left)),
                                changes,
                            )
    except (CommandExecutionError, SaltInvocationError) as err:
        return _failed(ret, f"Preparing SELinux for GPU containers failed: {err}", changes)

    if not changes:
        ret["comment"] = f"SELinux ({mode}) is ready: {module_name} installed, labels correct"
        return ret
    if test:
        return _pending(ret, changes, f"SELinux ({mode}) would change: {', '.join(changes)}")
    ret.update(changes=changes, comment=f"SELinux ({mode}) changed: {', '.join(changes)}")
    return ret


# ---------------------------------------------------------------------------
# Rootless users
# ---------------------------------------------------------------------------


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
    ret = _ret(name)
    changes = {}
    try:
        count = int(count)
        for kind in ("subuid", "subgid"):
            cur = __salt__["nvgpu.subid_range"](name, kind=kind)
            if start is None:
                if any(r["count"] >= count for r in cur):
                    continue
                new_start = __salt__["nvgpu.free_subid_start"](count, kind=kind)
            else:
                if cur == [{"start": int(start), "count": count}]:
                    continue
                new_start = int(start)
            changes[kind] = {"old": cur, "new": [{"start": new_start, "count": count}]}
            if not __opts__["test"]:
                __salt__["nvgpu.set_subid_range"](name, new_start, count, kind=kind)
    except (CommandExecutionError, SaltInvocationError, OSError, ValueError) as err:
        return _failed(ret, f"Setting subordinate id ranges of {name} failed: {err}", changes)
    if not changes:
        ret["comment"] = f"User {name} has subuid and subgid ranges"
        return ret
    if __opts__["test"]:
        return _pending(ret, changes, f"{', '.join(changes)} ranges of {name} would be set")
    ret.update(changes=changes, comment=f"Set {', '.join(changes)} ranges of {name}")
    return ret


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def vector_add_passes(name, user=None, image=None, mode="auto", timeout=300, pull="missing"):
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
        ``hook``, ``cdi`` or ``auto`` (cdi when a CDI spec exists, else hook).

    .. code-block:: yaml

        gpu-validate-gpuuser:
          nvgpu.vector_add_passes:
            - user: gpuuser
            - mode: cdi
    """
    ret = _ret(name)
    who = f"as {user} (rootless)" if user else "as root"
    kwargs = {"user": user, "mode": mode, "timeout": timeout, "pull": pull}
    if image:
        kwargs["image"] = image
    if __opts__["test"]:
        ret.update(
            result=None,
            comment=f"The vector add would run {who} (mode {mode}, image {image or 'default'})",
        )
        return ret
    try:
        res = __salt__["nvgpu.run_vector_add"](**kwargs)
    except (CommandExecutionError, SaltInvocationError) as err:
        return _failed(ret, f"The vector add could not run {who}: {err}")
    if res["passed"]:
        ret["comment"] = "Vector add PASSED {} (mode {}, {} elements, {} blocks of {} threads, {} s)".format(
            who, res.get("mode", mode), res["elements"], res["blocks"], res["threads"], res["duration_s"]
        )
        return ret
    diagnosis = res.get("diagnosis") or {}
    text = "{}\n{}".format(res.get("stderr") or "", res.get("stdout") or "").strip()
    output = "\n".join(text.splitlines()[-5:])
    return _failed(
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
