"""
The nvgpu grains (_grains/nvgpu.py): nvidia-smi's CSV from a stand-in nvidia-smi on
PATH, NVML through a stand-in pynvml, nothing asked of the driver while it is not
loaded, and never an exception.
"""

import ctypes
import sys
import types

import pytest

from tests.unit.loader import load

QUERY = "--query-gpu=index,name,uuid,driver_version,mig.mode.current,memory.total --format=csv,noheader,nounits"
CSV = (
    "0, NVIDIA H200, GPU-5f2c1a9e-0000-1111-2222-333344445555, 550.127.08, Disabled, 143771\n"
    "1, NVIDIA A100-SXM4-80GB, GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, 550.127.08, [N/A], [N/A]\n"
)
GPUS = [
    {"index": 0, "name": "NVIDIA H200", "uuid": "GPU-5f2c1a9e-0000-1111-2222-333344445555", "mig_mode": "Disabled",
     "memory_total_mib": 143771},
    {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "mig_mode": None,
     "memory_total_mib": None},
]


# What every node has, driver loaded or not (no NVSwitch, nothing pending).
NO_GPU_FACTS = {"nvgpu": {"nvswitch_count": 0, "reboot_required": False}}


@pytest.fixture
def grains(host):
    return load("_grains/nvgpu.py")


@pytest.fixture
def configure_loader_modules(grains):
    # No nvidia-ml-py: `import pynvml` fails (a test may put a stand-in into sys.modules;
    # the loader mock restores sys.modules after each test).
    return {grains: {"__opts__": {}, "__salt__": {}, "sys.modules": {"pynvml": None}}}


class FakeLibcuda:
    def __init__(self, version):
        self.version = version

    def cuDriverGetVersion(self, ref):  # noqa: N802 (the CUDA driver API's name)
        ref._obj.value = self.version
        return 0


@pytest.fixture
def libcuda(grains, monkeypatch):
    """libcuda.so.1 of a CUDA 12.4 driver; set ``.missing = True`` for a node without it."""

    def cdll(name):
        assert name == "libcuda.so.1"
        if state.missing:
            raise OSError("libcuda.so.1: cannot open shared object file: No such file or directory")
        return FakeLibcuda(12040)

    state = types.SimpleNamespace(missing=False)
    monkeypatch.setattr(grains, "ctypes", types.SimpleNamespace(CDLL=cdll, c_int=ctypes.c_int, byref=ctypes.byref))
    return state


@pytest.fixture
def smi(tmp_path, monkeypatch):
    """A stand-in nvidia-smi, alone on PATH: ``smi(stdout, retcode=0, sleep=0)``; ``smi.runs`` its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "nvidia-smi.log"
    monkeypatch.setenv("PATH", str(bin_dir))

    def make(stdout, retcode=0, sleep=0):
        script = bin_dir / "nvidia-smi"
        script.write_text(
            f"#!{sys.executable}\n"
            "import sys, time\n"
            f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
            f"time.sleep({sleep})\n"
            f"sys.stdout.write({stdout!r})\n"
            f"sys.exit({retcode})\n"
        )
        script.chmod(0o755)

    make.runs = lambda: log.read_text().splitlines() if log.exists() else []
    return make


def test_virtual(grains):
    assert grains.__virtual__() == "nvgpu"


class TestNvidiaSmi:
    def test_gpus_from_the_csv(self, grains, host, smi, libcuda):
        host.load("nvidia")
        smi(CSV)
        assert grains.nvgpu() == {
            "nvgpu": {
                "driver_version": "550.127.08",
                "cuda_driver_version": "12.4",
                "gpus": GPUS,
                "source": "nvidia-smi",
                "gpu_count": 2,
                "nvswitch_count": 0,
                "reboot_required": False,
            }
        }
        assert smi.runs() == [QUERY]

    def test_odd_lines_are_skipped(self, grains, host, smi, libcuda):
        host.load("nvidia")
        smi("\n" + CSV.splitlines()[0] + "\nWARNING: infoROM is corrupted at gpu 0000:3B:00.0\n\n")
        facts = grains.nvgpu()["nvgpu"]
        assert facts["gpus"] == GPUS[:1] and facts["gpu_count"] == 1

    def test_without_libcuda_no_cuda_version(self, grains, host, smi, libcuda):
        host.load("nvidia")
        libcuda.missing = True
        smi(CSV)
        assert grains.nvgpu()["nvgpu"]["cuda_driver_version"] is None

    def test_driver_not_loaded_asks_nothing(self, grains, smi, libcuda):
        smi(CSV)
        assert grains.nvgpu() == NO_GPU_FACTS
        assert smi.runs() == []

    def test_failing_nvidia_smi(self, grains, host, smi, libcuda):
        host.load("nvidia")
        smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", retcode=9)
        assert grains.nvgpu() == NO_GPU_FACTS
        assert smi.runs() == [QUERY]

    def test_no_gpus(self, grains, host, smi, libcuda):
        host.load("nvidia")
        smi("")
        assert grains.nvgpu() == NO_GPU_FACTS

    def test_no_nvidia_smi(self, grains, host, smi, libcuda):
        host.load("nvidia")
        assert grains.nvgpu() == NO_GPU_FACTS

    def test_hung_nvidia_smi_is_given_up(self, grains, host, smi, libcuda, monkeypatch):
        host.load("nvidia")
        monkeypatch.setattr(grains, "_SMI_TIMEOUT", 0.5)
        smi(CSV, sleep=30)
        assert grains.nvgpu() == NO_GPU_FACTS
        assert smi.runs() == [QUERY]


class NVMLError(Exception):
    pass


def fake_pynvml(count=2, init_error=None):
    """nvidia-ml-py's module as the grains use it; ``calls`` records init and shutdown."""
    pynvml = types.ModuleType("pynvml")
    pynvml.calls = []
    pynvml.NVMLError = NVMLError
    pynvml.NVML_DEVICE_MIG_ENABLE = 1

    def init():
        pynvml.calls.append("init")
        if init_error:
            raise init_error

    def mig_mode(handle):
        if handle == 1:
            raise NVMLError("Not Supported")
        return (1, 1)

    pynvml.nvmlInit = init
    pynvml.nvmlShutdown = lambda: pynvml.calls.append("shutdown")
    pynvml.nvmlSystemGetCudaDriverVersion_v2 = lambda: 12080
    pynvml.nvmlSystemGetDriverVersion = lambda: b"570.86.15"
    pynvml.nvmlDeviceGetCount = lambda: count
    pynvml.nvmlDeviceGetHandleByIndex = lambda index: index
    pynvml.nvmlDeviceGetMigMode = mig_mode
    pynvml.nvmlDeviceGetName = lambda handle: [b"NVIDIA H200", "NVIDIA L40S"][handle]
    pynvml.nvmlDeviceGetUUID = lambda handle: f"GPU-{handle}"
    pynvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(total=[150754820096, 48305799168][handle])
    return pynvml


class TestNvml:
    def test_gpus_from_nvml(self, grains, host, smi):
        host.load("nvidia")
        smi(CSV)
        pynvml = sys.modules["pynvml"] = fake_pynvml()
        assert grains.nvgpu() == {
            "nvgpu": {
                "driver_version": "570.86.15",
                "cuda_driver_version": "12.8",
                "gpus": [
                    {"index": 0, "name": "NVIDIA H200", "uuid": "GPU-0", "mig_mode": "Enabled",
                     "memory_total_mib": 143771},
                    {"index": 1, "name": "NVIDIA L40S", "uuid": "GPU-1", "mig_mode": None, "memory_total_mib": 46068},
                ],
                "source": "nvml",
                "gpu_count": 2,
                "nvswitch_count": 0,
                "reboot_required": False,
            }
        }
        assert pynvml.calls == ["init", "shutdown"]
        assert smi.runs() == [], "nvidia-smi asked although NVML answered"

    def test_nvml_that_cannot_start_gives_no_grains(self, grains, host):
        host.load("nvidia")
        pynvml = sys.modules["pynvml"] = fake_pynvml(init_error=NVMLError("Driver Not Loaded"))
        assert grains.nvgpu() == NO_GPU_FACTS
        assert pynvml.calls == ["init"]

    def test_no_gpus_is_no_grains_and_nvml_is_shut_down(self, grains, host):
        host.load("nvidia")
        pynvml = sys.modules["pynvml"] = fake_pynvml(count=0)
        assert grains.nvgpu() == NO_GPU_FACTS
        assert pynvml.calls == ["init", "shutdown"]

    def test_driver_not_loaded_does_not_start_nvml(self, grains):
        pynvml = sys.modules["pynvml"] = fake_pynvml()
        assert grains.nvgpu() == NO_GPU_FACTS
        assert pynvml.calls == []


def test_nvswitches_are_counted_from_pci_ids_without_the_driver(grains, host, smi):
    smi(CSV)
    for address, device in (("0000:c5:00.0", "0x22a3"), ("0000:c6:00.0", "0x22a3"), ("0000:3b:00.0", "0x2330"),
                            ("0000:07:00.0", "0x1af1")):
        host.write(f"/sys/bus/pci/devices/{address}/vendor", "0x10de\n")
        host.write(f"/sys/bus/pci/devices/{address}/device", device + "\n")
    host.write("/sys/bus/pci/devices/0000:00:1f.0/vendor", "0x8086\n")
    host.write("/sys/bus/pci/devices/0000:00:1f.0/device", "0x22a3\n")
    assert grains.nvgpu() == {"nvgpu": {"nvswitch_count": 3, "reboot_required": False}}
    assert smi.runs() == []


def test_reboot_required_when_the_loaded_driver_is_not_the_installed_one(grains, host, smi):
    smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", retcode=9)
    host.load("nvidia")
    host.write("/sys/module/nvidia/version", "550.127.08\n")
    host.touch("/usr/lib64/libcuda.so.580.105.08")
    assert grains.nvgpu()["nvgpu"]["reboot_required"] is True
    host.write("/sys/module/nvidia/version", "580.105.08\n")
    assert grains.nvgpu()["nvgpu"]["reboot_required"] is False
