"""
The failure knowledge base (_utils/nvgpu_failures.py) fed the real messages: the text
patterns (Podman, the OCI hook, nvidia-container-cli, the vector add), the CUDA driver
API errors of the host check, the host check's own findings, and why the driver does
not load.
"""

import nvgpu_failures
import pytest

from tests.nvidia import VECTOR_ADD_PASSED

# Every failure text of FACTS.md ("cuda-vector-add output") and the practical ones: a word
# of its cause, a word of its fix, and the broken layer.
FAILURES = [
    # Podman 4.3's own words, seen on the simulated node (tests/functional/test_module.py).
    (
        'Error: invalid configuration: the specified mapping 1000:65536 in "/etc/subuid" includes the user UID',
        "contains the user's own uid",
        "subuid_start",
        "rootless",
    ),
    (
        'Error: command required for rootless mode with multiple IDs: exec: "newuidmap": executable file not '
        "found in $PATH",
        "newuidmap",
        "shadow-utils",
        "rootless",
    ),
    (
        "Failed to allocate device vector A (error code CUDA driver version is insufficient for CUDA runtime version)!",
        "libcuda was not injected",
        "nvidia.com/gpu=all",
        "toolkit",
    ),
    (
        "Failed to allocate device vector A (error code no CUDA-capable device is detected)!",
        "no /dev/nvidia",
        "load_modules",
        "toolkit",
    ),
    (
        "Error: OCI runtime error: runc: error running hook #0: error running hook: exit status 1, "
        "stdout: , stderr: nvidia-container-cli: initialization error: nvml error: driver not loaded",
        "not loaded",
        "nvgpu.load_modules",
        "kernel-modules",
    ),
    (
        "nvidia-container-cli: initialization error: nvml error: insufficient permissions",
        "SELinux",
        "restorecon",
        "selinux",
    ),
    ("Failed to initialize NVML: Insufficient Permissions", "SELinux", "nvidia_container_t", "selinux"),
    (
        "Error: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=all",
        "no CDI spec",
        "nvidia-ctk cdi generate",
        "toolkit",
    ),
    (
        "Error: crun: error stat'ing file `/usr/lib64/libcuda.so.550.54.14`: No such file or directory: "
        "OCI runtime attempted to invoke a command that was not found",
        "older driver",
        "nvidia-ctk cdi generate",
        "toolkit",
    ),
    ("Failed to launch vectorAdd kernel (error code unspecified launch failure)!", "GPU itself", "Xid", "gpu"),
    ("Result verification failed at element 4711!", "GPU itself", "Xid", "gpu"),
    (
        "Error: initializing source docker://docker.io/mirrorgooglecontainers/cuda-vector-add:v0.2: "
        "reading manifest v0.2 in docker.io/mirrorgooglecontainers/cuda-vector-add: manifest unknown",
        "image",
        "podman pull",
        "image",
    ),
    (
        'Error: pinging container registry registry.example: Get "https://registry.example/v2/": '
        "dial tcp: lookup registry.example: no such host",
        "image",
        "registry",
        "image",
    ),
    ("Error: ... dial tcp 127.0.0.1:5000: connect: connection refused", "image", "registry", "image"),
    (
        "nvidia-container-cli: mount error: failed to add device rules: unable to find any existing "
        "device filters attached to the cgroup: bpf_prog_query(BPF_CGROUP_DEVICE) failed: "
        "operation not permitted",
        "cgroup",
        "no-cgroups=true",
        "rootless",
    ),
    ("nvidia-container-cli: container error: cgroup subsystem devices not found", "cgroup", "no-cgroups", "rootless"),
    ('cannot find newuidmap: exec: "newuidmap": executable file not found in $PATH', "subuid", "subuids", "rootless"),
    ('Error: no subuid ranges found for user "gpuuser" in /etc/subuid', "subuid", "usermod", "rootless"),
    (
        "nvidia-container-cli: initialization error: load library failed: libnvidia-ml.so.1: "
        "cannot open shared object file: no such file or directory",
        "libnvidia-ml",
        "nvidia-driver",
        "driver",
    ),
    ("['podman', 'run'] : Timed out after 5 seconds", "timeout", "timeout=", "podman"),
    ("['/usr/bin/podman', 'run'] : Timed out after 0.01 seconds", "timeout", "timeout=", "podman"),
    (
        # runc's words for the stale spec (seen on the simulated node after a 550 -> 580 switch).
        "Error: runc: runc create failed: unable to start container process: error during container "
        'init: error mounting "/usr/lib64/libcuda.so.550.127.08" to rootfs at '
        '"/usr/lib64/libcuda.so.550.127.08": stat /usr/lib64/libcuda.so.550.127.08: no such file or '
        "directory: OCI runtime attempted to invoke a command that was not found",
        "older driver",
        "nvidia-ctk cdi generate",
        "toolkit",
    ),
    (
        "cudaErrorSystemNotReady: system not yet initialized",
        "Fabric Manager",
        "nvidia-fabricmanager",
        "fabric",
    ),
    (
        "Failed to initialize NVML: Driver/library version mismatch",
        "different versions",
        "reload_driver",
        "kernel-modules",
    ),
    # The stand-in modprobe's (and the kernel's, EKEYREJECTED) words under Secure Boot.
    ("modprobe: ERROR: could not insert 'nvidia': Key was rejected by service", "Secure Boot", "mokutil --import",
     "driver"),
    # The kernel's log line for the same refusal (kernel/module/signing.c).
    ("Loading of module with unavailable key is rejected", "not enrolled", "MOK manager", "driver"),
    ("Loading of unsigned module is rejected", "unsigned", "mokutil", "driver"),
    ("CUDA error 802: system not yet initialized", "Fabric Manager", "nvidia-fabricmanager", "fabric"),
]


class TestDiagnoseText:
    @pytest.mark.parametrize("text,in_cause,in_fix,layer", FAILURES, ids=[f[0][:40] for f in FAILURES])
    def test_each_failure_text(self, text, in_cause, in_fix, layer):
        diagnosis = nvgpu_failures.diagnose_text(text)
        assert diagnosis is not None, text
        assert set(diagnosis) == {"cause", "fix", "layer"}
        assert in_cause in diagnosis["cause"]
        assert in_fix in diagnosis["fix"]
        assert diagnosis["layer"] == layer

    def test_each_failure_text_gets_a_distinct_entry_where_causes_differ(self):
        causes = {nvgpu_failures.diagnose_text(text)["cause"] for text, *_ in FAILURES}
        assert len(causes) >= 13

    def test_nothing_known(self):
        assert nvgpu_failures.diagnose_text("") is None
        assert nvgpu_failures.diagnose_text(None) is None
        assert nvgpu_failures.diagnose_text(VECTOR_ADD_PASSED) is None

    def test_first_match_wins_specific_before_generic(self):
        # A hook failure that Podman wraps: the root cause, not "the hook failed".
        text = (
            "Error: OCI runtime error: error running hook #0: exit status 1, stderr: "
            "nvidia-container-cli: initialization error: nvml error: driver not loaded\n"
            "Failed to allocate device vector A (error code no CUDA-capable device is detected)!"
        )
        assert "not loaded" in nvgpu_failures.diagnose_text(text)["cause"]

    def test_plain_hook_failure(self):
        diagnosis = nvgpu_failures.diagnose_text("Error: OCI runtime error: runc: error running hook #0: exit status 127")
        assert "hook" in diagnosis["cause"]
        assert diagnosis["layer"] == "toolkit"

    def test_successful_pull_chatter_is_not_a_failure(self):
        assert nvgpu_failures.diagnose_text("Trying to pull docker.io/x/y:v1...\nGetting image source signatures\n") is None

    @pytest.mark.parametrize("failure", nvgpu_failures.TEXT_FAILURES, ids=lambda f: f.example[:40])
    def test_each_example_finds_its_own_entry(self, failure):
        # The example shown in docs/troubleshooting.md is diagnosed as this entry, not as an
        # earlier, more general one.
        assert nvgpu_failures.diagnose_text(failure.example) == {
            "cause": failure.cause, "fix": failure.fix, "layer": failure.layer}

    def test_table_is_data(self):
        for failure in nvgpu_failures.TEXT_FAILURES:
            assert hasattr(failure.pattern, "search") and failure.cause and failure.fix
            assert failure.layer in nvgpu_failures.LAYERS

    def test_diagnosis_is_a_fresh_dict(self):
        first = nvgpu_failures.diagnose_text("nvml error: driver not loaded")
        first["cause"] = "changed"
        assert nvgpu_failures.diagnose_text("nvml error: driver not loaded")["cause"] != "changed"

    def test_unknown_says_no_pass_was_seen(self):
        assert "Test PASSED" in nvgpu_failures.UNKNOWN["cause"]
        assert nvgpu_failures.UNKNOWN["layer"] == "unknown"


class TestDiagnoseCuda:
    @pytest.mark.parametrize(
        "error, call, words, layer",
        [
            ("CUDA_ERROR_NO_DEVICE", "cuInit", ["no CUDA-capable GPU", "nvgpu.load_modules"], "kernel-modules"),
            (100, "cuInit", ["no CUDA-capable GPU"], "kernel-modules"),
            ("100", "cuInit", ["no CUDA-capable GPU"], "kernel-modules"),
            ("CUDA_ERROR_UNKNOWN", "cuInit", ["nvidia_uvm", "nvgpu.load_modules"], "kernel-modules"),
            ("CUDA_ERROR_UNKNOWN", "cuLaunchKernel", ["GPU failed", "Xid"], "gpu"),
            ("CUDA_ERROR_NOT_INITIALIZED", "cuInit", ["not loaded", "dmesg"], "kernel-modules"),
            ("CUDA_ERROR_DEVICE_UNAVAILABLE", "cuCtxCreate_v2", ["exclusive-process", "nvidia-smi -c"], "gpu"),
            ("CUDA_ERROR_STUB_LIBRARY", "cuInit", ["stub", "LD_LIBRARY_PATH"], "driver"),
            ("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", "cuInit", ["different driver versions", "Reboot"], "kernel-modules"),
            ("CUDA_ERROR_SYSTEM_NOT_READY", "cuInit", ["Fabric Manager", "nvidia-fabricmanager"], "fabric"),
            (222, "cuModuleLoadData", ["CUDA driver version is insufficient", "driver stream"], "driver"),
            ("CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER", "cuInit", ["insufficient", "driver stream"], "driver"),
            ("CUDA_ERROR_INVALID_PTX", "cuModuleLoadData", ["JIT compiler", "nvidia-driver-cuda-libs"], "driver"),
            ("CUDA_ERROR_NO_BINARY_FOR_GPU", "cuModuleLoadData", ["this GPU", "driver stream"], "driver"),
            ("CUDA_ERROR_JIT_COMPILER_NOT_FOUND", "cuModuleLoadData", ["ptxjitcompiler"], "driver"),
            ("CUDA_ERROR_ECC_UNCORRECTABLE", "cuMemcpyDtoH_v2", ["GPU failed", "Xid"], "gpu"),
            ("CUDA_ERROR_LAUNCH_FAILED", "cuCtxSynchronize", ["GPU failed", "nvidia-smi -r"], "gpu"),
            ("CUDA_ERROR_OUT_OF_MEMORY", "cuMemAlloc_v2", ["memory is full"], "gpu"),
            ("CUDA_ERROR_INVALID_DEVICE", "cuDeviceGet", ["requested index"], "gpu"),
            ("CUDA_ERROR_OPERATING_SYSTEM", "cuInit", ["SELinux", "ausearch"], "selinux"),
            ("CUDA_ERROR_SOMETHING_NEW", "cuInit", ["CUDA driver failed", "dmesg"], "driver"),
            (12345, "cuInit", ["CUDA error 12345"], "driver"),
        ],
    )
    def test_error_mapping(self, error, call, words, layer):
        found = nvgpu_failures.diagnose_cuda(error, call=call, text="driver text")
        assert set(found) == {"cause", "fix", "layer"}
        said = found["cause"] + " " + found["fix"]
        for word in words:
            assert word in said
        assert f"{call} returned" in found["cause"] and "(driver text)" in found["cause"]
        assert found["layer"] == layer

    def test_without_driver_text(self):
        found = nvgpu_failures.diagnose_cuda("CUDA_ERROR_NO_DEVICE", call="cuInit")
        assert found["cause"].endswith("[cuInit returned CUDA_ERROR_NO_DEVICE]")

    def test_every_named_code_has_a_diagnosis_of_its_own(self):
        generic = nvgpu_failures.diagnose_cuda("CUDA_ERROR_SOMETHING_NEW", call="cuInit")["fix"]
        for name in nvgpu_failures.CUDA_ERROR_NAMES.values():
            if name == "CUDA_ERROR_UNKNOWN" or name in nvgpu_failures.CUDA_GPU_FAULTS:
                continue
            if name == "CUDA_ERROR_INVALID_VALUE":
                continue  # a bug in the check itself, not a node problem: the generic answer
            assert nvgpu_failures.diagnose_cuda(name, call="cuInit")["fix"] != generic, name

    def test_every_gpu_fault_is_a_gpu_diagnosis(self):
        for name in nvgpu_failures.CUDA_GPU_FAULTS - {"CUDA_ERROR_UNKNOWN"}:
            assert nvgpu_failures.diagnose_cuda(name, call="cuCtxSynchronize")["fix"] == nvgpu_failures.GPU_FIX, name

    def test_every_layer_is_known(self):
        assert {layer for _c, _f, layer in nvgpu_failures.CUDA_ERRORS.values()} <= set(nvgpu_failures.LAYERS)
        assert {layer for _c, _f, layer in nvgpu_failures.HOST_CHECK_FAILURES.values()} <= set(nvgpu_failures.LAYERS)


class TestHostCheckFailures:
    @pytest.mark.parametrize(
        "name, text, in_cause, layer",
        [
            ("NO_LIBCUDA", "libcuda.so.1: cannot open", "No NVIDIA driver installed/loaded", "driver"),
            ("NO_LIBCUDA_WITH_MODULE", "libcuda.so.1: cannot open", "kernel module is loaded but libcuda.so.1",
             "driver"),
            ("RESULT_MISMATCH", "element 4711", "failed at element 4711", "gpu"),
            ("TIMEOUT", "300.0 s", "within 300.0 s", "gpu"),
            ("CRASHED", "exit status -11", "(exit status -11)", "gpu"),
        ],
    )
    def test_finding_with_the_childs_words(self, name, text, in_cause, layer):
        found = nvgpu_failures.diagnose_host_check(name, text)
        assert in_cause in found["cause"] and text in found["cause"]
        assert found["layer"] == layer
        assert "{text}" not in found["cause"]

    def test_libcuda_with_module_names_the_package(self):
        assert "nvidia-driver-cuda-libs" in nvgpu_failures.diagnose_host_check("NO_LIBCUDA_WITH_MODULE", "x")["fix"]

    def test_unknown_finding_is_a_key_error(self):
        with pytest.raises(KeyError):
            nvgpu_failures.diagnose_host_check("SOMETHING_ELSE", "x")


class TestDriverLoadFailures:
    def test_no_module_for_kernel_names_the_release(self):
        found = nvgpu_failures.no_module_for_kernel("4.18.0-513.24.1.el8_9.x86_64")
        assert "4.18.0-513.24.1.el8_9.x86_64" in found["cause"]
        assert "kernel-devel-4.18.0-513.24.1.el8_9.x86_64" in found["fix"] and "DKMS" in found["fix"]
        assert found["layer"] == "driver"

    def test_combine_keeps_order_and_the_first_layer(self):
        first = nvgpu_failures.no_module_for_kernel("5.14.0")
        combined = nvgpu_failures.combine([first, nvgpu_failures.NOUVEAU_LOADED])
        assert combined["cause"] == first["cause"] + "; and " + nvgpu_failures.NOUVEAU_LOADED["cause"]
        assert combined["fix"] == first["fix"] + "; then " + nvgpu_failures.NOUVEAU_LOADED["fix"]
        assert combined["layer"] == "driver"

    def test_combine_one(self):
        assert nvgpu_failures.combine([nvgpu_failures.KERNEL_REFUSED]) == nvgpu_failures.KERNEL_REFUSED


def test_an_uncorrectable_ecc_error_in_a_container_is_the_gpu():
    # The vectorAdd sample's words when cudaMalloc returns cudaErrorECCUncorrectable.
    found = nvgpu_failures.diagnose_text(
        "Failed to allocate device vector A (error code uncorrectable ECC error encountered)!")
    assert found["layer"] == "gpu" and "uncorrectable ECC" in found["cause"] and "nvidia-smi -r" in found["fix"]


def test_xid_meanings():
    assert nvgpu_failures.xid_meaning(79) == ("fail", "GPU has fallen off the bus")
    assert nvgpu_failures.xid_meaning(13)[0] == "warn"
    assert nvgpu_failures.xid_meaning(9999)[0] == "warn"
