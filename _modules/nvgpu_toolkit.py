"""
Execution module for the NVIDIA container toolkit on a Podman node: its configuration
(``config.toml``), NVIDIA's OCI hook file, and the CDI spec.

The ``nvgpu.container_toolkit`` state reads and changes the node through these.

:depends: nvidia-container-toolkit (nvidia-ctk) for ``set_config`` and ``cdi_generate``
"""

import json
import os
import shutil
import stat
import tempfile

import nvgpu_node
import salt.utils.yaml
from salt.exceptions import CommandExecutionError

try:
    import tomllib
except ImportError:  # Python < 3.11 (Salt 3006/3007's onedir)
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

__virtualname__ = "nvgpu_toolkit"


def __virtual__():
    if __grains__.get("kernel") != "Linux":
        return (False, "The nvgpu_toolkit execution module only runs on Linux minions")
    if tomllib is None:
        return (False, "nvgpu_toolkit reads config.toml with tomllib (Python 3.11+) or tomli: salt-pip install tomli")
    return __virtualname__


# ---------------------------------------------------------------------------
# config.toml
# ---------------------------------------------------------------------------


def config(path=nvgpu_node.TOOLKIT_CONFIG):
    """
    Return the NVIDIA container toolkit configuration
    (``/etc/nvidia-container-runtime/config.toml``) as a dict; ``{}`` when the file
    does not exist (toolkit not installed).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_toolkit.config
    """
    text = nvgpu_node.read_file(path)
    if text is None:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CommandExecutionError(
            f"{path} is not valid TOML ({err}). Fix or remove it and reinstall nvidia-container-toolkit."
        ) from err


def config_value(key, path=nvgpu_node.TOOLKIT_CONFIG):
    """
    Return one dotted key of the toolkit configuration, e.g.
    ``nvidia-container-cli.no-cgroups``; None when not set.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_toolkit.config_value nvidia-container-cli.no-cgroups
    """
    node = config(path)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_config(key, value):
    """
    Set one toolkit configuration key in place:
    ``nvidia-ctk config --set KEY=VALUE --in-place`` (booleans as true/false).
    Returns the value the file then holds.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_toolkit.set_config nvidia-container-cli.no-cgroups true
    """
    if isinstance(value, bool):
        value = "true" if value else "false"
    nvgpu_node.run_checked(
        __salt__["cmd.run_all"],
        ["nvidia-ctk", "config", "--set", f"{key}={value}", "--in-place"],
        f"setting {key}={value} in the toolkit configuration",
        "check that nvidia-container-toolkit is installed (it provides nvidia-ctk) and that "
        f"{nvgpu_node.TOOLKIT_CONFIG} is writable",
    )
    return config_value(key)


# ---------------------------------------------------------------------------
# NVIDIA's OCI hook
# ---------------------------------------------------------------------------


def oci_hook(path=nvgpu_node.OCI_HOOK_PATH):
    """
    Return the OCI hook file at ``path`` parsed as JSON, None when it does not exist
    or is not valid JSON.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_toolkit.oci_hook
    """
    text = nvgpu_node.read_file(path)
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def oci_hook_content(hook_binary=nvgpu_node.OCI_HOOK_BINARY):
    """
    Return NVIDIA's OCI prestart hook for Podman (the content of
    ``oci-nvidia-hook.json``) as a dict.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_toolkit.oci_hook_content
    """
    return {
        "version": "1.0.0",
        "hook": {
            "path": hook_binary,
            "args": [os.path.basename(hook_binary), "prestart"],
            "env": [nvgpu_node.OCI_HOOK_ENV_PATH],
        },
        "when": {"always": True, "commands": [".*"]},
        "stages": ["prestart"],
    }


def write_oci_hook(path=nvgpu_node.OCI_HOOK_PATH, hook_binary=nvgpu_node.OCI_HOOK_BINARY):
    """
    Write NVIDIA's OCI hook JSON to ``path`` atomically (mode 0644) and return its content.
    ``path`` must be absolute; an OS error (read-only, disk full) names it in one line.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_toolkit.write_oci_hook
    """
    content = oci_hook_content(hook_binary)
    nvgpu_node.atomic_write(path, json.dumps(content, indent=4) + "\n")
    return content


def remove_oci_hook(path=nvgpu_node.OCI_HOOK_PATH):
    """
    Remove the OCI hook file at ``path`` (absolute); True when it was there.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_toolkit.remove_oci_hook
    """
    nvgpu_node.require_absolute(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise nvgpu_node.os_error("remove", path, err) from err
    return True


# ---------------------------------------------------------------------------
# The CDI spec
# ---------------------------------------------------------------------------


def cdi_spec(path=nvgpu_node.CDI_SPEC_PATH):
    """
    Describe the CDI spec at ``path``: ``{"exists", "kind", "devices": [names],
    "driver_version", "mode"}``. ``driver_version`` comes from the versioned
    ``libcuda.so.<version>`` the spec mounts (None when absent); ``mode`` is the
    file's permission bits as an octal string such as ``"0644"``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_toolkit.cdi_spec
    """
    ret = {"exists": False, "kind": None, "devices": [], "driver_version": None, "mode": None}
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ret
    ret["exists"] = True
    ret["mode"] = f"{stat.S_IMODE(st.st_mode):04o}"
    try:
        spec = salt.utils.yaml.safe_load(nvgpu_node.read_file(path) or "") or {}
    except salt.utils.yaml.YAMLError:
        return ret
    if not isinstance(spec, dict):
        return ret
    ret["kind"] = spec.get("kind")
    ret["devices"] = [d.get("name") for d in spec.get("devices") or [] if isinstance(d, dict)]
    ret["driver_version"] = nvgpu_node.cdi_spec_driver_version(spec)
    return ret


def cdi_refresh_shipped(dirs=nvgpu_node.SYSTEMD_UNIT_DIRS):
    """
    True where the toolkit's ``nvidia-cdi-refresh.service`` unit file is installed
    (nvidia-container-toolkit 1.18 and later ship it with its path unit).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_toolkit.cdi_refresh_shipped
    """
    return any(os.path.isfile(os.path.join(d, nvgpu_node.CDI_REFRESH_SERVICE)) for d in dirs)


def cdi_generate(path=nvgpu_node.CDI_SPEC_PATH):
    """
    Generate the CDI spec for this host's GPUs and driver with
    ``nvidia-ctk cdi generate`` into a temporary file next to ``path``, make it
    world-readable (0644) and move it into place atomically, so that Podman never
    sees a half-written spec; the temporary file is gone whatever happens. ``path``
    must be absolute; an OS error (read-only, disk full) names it in one line.
    Returns the new ``cdi_spec``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_toolkit.cdi_generate
    """
    nvgpu_node.require_absolute(path)
    directory = os.path.dirname(path)
    tmpdir = None
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        # A sub-directory keeps the half-written file out of Podman's spec search (it
        # reads *.yaml / *.json in /etc/cdi, not below) and keeps the extension
        # nvidia-ctk takes the output format from.
        tmpdir = tempfile.mkdtemp(dir=directory, prefix=nvgpu_node.TEMP_PREFIX)
        tmp = os.path.join(tmpdir, os.path.basename(path))
        try:
            nvgpu_node.run_checked(
                __salt__["cmd.run_all"],
                ["nvidia-ctk", "cdi", "generate", f"--output={tmp}"],
                f"generating the CDI spec {path}",
                "check that the NVIDIA driver is installed and loaded (nvidia-smi), that "
                "nvidia-container-toolkit is installed, and that the file system has space",
            )
        except CommandExecutionError as err:
            err.path = path  # the spec that was not written, as os_error says it
            raise
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:
        raise nvgpu_node.os_error("write", path, err) from err
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return cdi_spec(path)
