"""
GPU grains under the key ``nvgpu``: GPU count, model, UUID, MIG mode and memory of each GPU,
the driver version and the CUDA version the driver supports; on every node also
``nvswitch_count`` (NVSwitch chips on the PCI bus, from sysfs: their systems need the fabric
manager) and ``reboot_required`` (the loaded driver is not the installed one).

They come from NVML through nvidia-ml-py (``import pynvml``) where it imports, else from
``nvidia-smi --query-gpu`` CSV. Where the nvidia kernel module is not loaded there are no
GPU facts: nothing is asked of the driver then, since NVML or nvidia-smi run as root may
load modules and create device nodes, and grains must not change a node. Grain loading never
raises, and ``nvidia-smi`` gets a few seconds at most.

.. code-block:: bash

    salt '*' grains.item nvgpu
    salt -G 'nvgpu:gpus:name:NVIDIA H200' test.ping
    salt -G 'nvgpu:reboot_required:True' test.ping
"""

import ctypes
import logging
import shutil
import subprocess

import nvgpu_node

log = logging.getLogger(__name__)

_SMI_TIMEOUT = 5
_QUERY = "index,name,uuid,driver_version,mig.mode.current,memory.total"


def __virtual__():
    return "nvgpu"


def _decode(value):
    return value.decode() if isinstance(value, bytes) else value


def _from_nvml():
    """
    The facts through NVML. ImportError when nvidia-ml-py is not installed; NVMLError (from
    pynvml) when NVML cannot start.
    """
    import pynvml

    pynvml.nvmlInit()
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        facts = {
            "driver_version": _decode(pynvml.nvmlSystemGetDriverVersion()),
            "cuda_driver_version": nvgpu_node.cuda_version_string(cuda),
            "gpus": [],
            "source": "nvml",
        }
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            try:
                mig = pynvml.nvmlDeviceGetMigMode(handle)[0]
                mig_mode = "Enabled" if mig == pynvml.NVML_DEVICE_MIG_ENABLE else "Disabled"
            except pynvml.NVMLError:
                mig_mode = None
            facts["gpus"].append(
                {
                    "index": index,
                    "name": _decode(pynvml.nvmlDeviceGetName(handle)),
                    "uuid": _decode(pynvml.nvmlDeviceGetUUID(handle)),
                    "mig_mode": mig_mode,
                    "memory_total_mib": pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
                }
            )
        return facts
    finally:
        pynvml.nvmlShutdown()


def _cuda_driver_version():
    # cuDriverGetVersion needs no cuInit: it only reads the library's version, so it is cheap.
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0:
            return nvgpu_node.cuda_version_string(version.value)
    except (OSError, AttributeError):
        pass
    return None


def _from_nvidia_smi():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    proc = subprocess.run(
        [smi, f"--query-gpu={_QUERY}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=_SMI_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        log.debug("nvgpu grains: nvidia-smi failed: %s", proc.stdout + proc.stderr)
        return None
    facts = {"driver_version": None, "cuda_driver_version": _cuda_driver_version(), "gpus": []}
    for line in proc.stdout.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 6:
            continue
        index, name, uuid, driver, mig, memory = fields
        facts["driver_version"] = driver
        facts["gpus"].append(
            {
                "index": int(index),
                "name": name,
                "uuid": uuid,
                "mig_mode": None if mig in ("[N/A]", "N/A") else mig,
                "memory_total_mib": int(memory) if memory.isdigit() else None,
            }
        )
    facts["source"] = "nvidia-smi"
    return facts


def nvgpu():
    """
    The ``nvgpu`` grain: ``{"nvswitch_count", "reboot_required"}`` on every node (from sysfs
    and two files, no driver call: the NVSwitch chips on the PCI bus, whose systems need the
    fabric manager; whether the loaded driver differs from the installed one, so that only a
    reboot or a reload runs the installed driver), and where the NVIDIA driver is loaded
    also ``{"gpu_count", "gpus": [{"index", "name", "uuid", "mig_mode", "memory_total_mib"}],
    "driver_version", "cuda_driver_version", "source"}``.
    """
    node = {"nvswitch_count": len(nvgpu_node.nvswitches()), "reboot_required": bool(nvgpu_node.reboot_required())}
    if not nvgpu_node.module_loaded("nvidia"):
        return {"nvgpu": node}
    facts = None
    try:
        facts = _from_nvml()
    except ImportError:
        try:
            facts = _from_nvidia_smi()
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("nvgpu grains: nvidia-smi: %s", exc)
    except Exception as exc:  # pylint: disable=broad-except
        # pynvml's NVMLError subclasses are made at run time; any of them means no usable GPU.
        log.debug("nvgpu grains: NVML: %s", exc)
    if not facts or not facts["gpus"]:
        return {"nvgpu": node}
    facts["gpu_count"] = len(facts["gpus"])
    return {"nvgpu": {**facts, **node}}
