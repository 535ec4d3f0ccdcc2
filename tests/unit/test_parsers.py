"""
Parsers of the nvgpu execution module on realistic (and odd) tool output: the
categorisation of ``nvidia-container-cli list``, the vector add's output, the
diagnosis table, and the version strings.
"""


import pytest

from tests.unit.loader import load

nvgpu = load("_modules/nvgpu.py", "nvgpu_under_test_parsers")

# nvidia-container-cli -k list on a RHEL 8 node with two A100s in MIG mode (driver 550).
RHEL_LIST = """\
/dev/nvidiactl
/dev/nvidia-uvm
/dev/nvidia-uvm-tools
/dev/nvidia-modeset
/dev/nvidia0
/dev/nvidia1
/dev/nvidia-caps/nvidia-cap1
/dev/nvidia-caps/nvidia-cap2
/proc/driver/nvidia/capabilities/mig/config
/proc/driver/nvidia/capabilities/mig/monitor
/proc/driver/nvidia/capabilities/gpu0/mig/gi1/access
/proc/driver/nvidia/capabilities/gpu0/mig/gi1/ci0/access
/usr/bin/nvidia-smi
/usr/bin/nvidia-debugdump
/usr/bin/nvidia-persistenced
/usr/bin/nvidia-cuda-mps-control
/usr/bin/nvidia-cuda-mps-server
/usr/lib64/libnvidia-ml.so.550.127.08
/usr/lib64/libnvidia-cfg.so.550.127.08
/usr/lib64/libcuda.so.550.127.08
/usr/lib64/libnvidia-ptxjitcompiler.so.550.127.08
/usr/lib64/vdpau/libvdpau_nvidia.so.550.127.08
/usr/lib64/libnvidia-encode.so.550.127.08
/usr/lib/libnvidia-ml.so.550.127.08
/usr/lib/libcuda.so.550.127.08
/usr/lib/vdpau/libvdpau_nvidia.so.550.127.08
/run/nvidia-persistenced/socket
/tmp/nvidia-mps
/lib/firmware/nvidia/550.127.08/gsp_ga10x.bin
/lib/firmware/nvidia/550.127.08/gsp_tu10x.bin
"""

# The same on Ubuntu (multiarch directories, firmware under /usr/lib).
DEBIAN_LIST = """\
/dev/nvidiactl
/dev/nvidia-uvm
/dev/nvidia0
/usr/bin/nvidia-smi
/usr/sbin/nvidia-persistenced
/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.159.04
/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04
/usr/lib/x86_64-linux-gnu/nvidia/xorg/nvidia_drv.so
/usr/lib/i386-linux-gnu/libnvidia-ml.so.580.159.04
/usr/lib/i386-linux-gnu/libcuda.so.580.159.04
/var/run/nvidia-fabricmanager/socket
/usr/lib/firmware/nvidia/580.159.04/gsp_ga10x.bin
"""


class TestCategorise:
    def test_rhel_every_path_in_exactly_one_list_in_order(self):
        files = nvgpu._categorise(RHEL_LIST)
        assert files["devices"] == [
            "/dev/nvidiactl",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidia-modeset",
            "/dev/nvidia0",
            "/dev/nvidia1",
        ]
        assert files["mig"] == [
            "/dev/nvidia-caps/nvidia-cap1",
            "/dev/nvidia-caps/nvidia-cap2",
            "/proc/driver/nvidia/capabilities/mig/config",
            "/proc/driver/nvidia/capabilities/mig/monitor",
            "/proc/driver/nvidia/capabilities/gpu0/mig/gi1/access",
            "/proc/driver/nvidia/capabilities/gpu0/mig/gi1/ci0/access",
        ]
        assert files["binaries"] == [
            "/usr/bin/nvidia-smi",
            "/usr/bin/nvidia-debugdump",
            "/usr/bin/nvidia-persistenced",
            "/usr/bin/nvidia-cuda-mps-control",
            "/usr/bin/nvidia-cuda-mps-server",
        ]
        assert files["libraries"] == [
            "/usr/lib64/libnvidia-ml.so.550.127.08",
            "/usr/lib64/libnvidia-cfg.so.550.127.08",
            "/usr/lib64/libcuda.so.550.127.08",
            "/usr/lib64/libnvidia-ptxjitcompiler.so.550.127.08",
            "/usr/lib64/vdpau/libvdpau_nvidia.so.550.127.08",
            "/usr/lib64/libnvidia-encode.so.550.127.08",
        ]
        assert files["libraries32"] == [
            "/usr/lib/libnvidia-ml.so.550.127.08",
            "/usr/lib/libcuda.so.550.127.08",
            "/usr/lib/vdpau/libvdpau_nvidia.so.550.127.08",
        ]
        assert files["ipcs"] == ["/run/nvidia-persistenced/socket", "/tmp/nvidia-mps"]
        assert files["firmware"] == [
            "/lib/firmware/nvidia/550.127.08/gsp_ga10x.bin",
            "/lib/firmware/nvidia/550.127.08/gsp_tu10x.bin",
        ]
        assert files["other"] == []
        flat = [path for kind in nvgpu.CONTAINER_FILE_KINDS for path in files[kind]]
        assert sorted(flat) == sorted(RHEL_LIST.split())

    def test_debian_multiarch(self):
        files = nvgpu._categorise(DEBIAN_LIST)
        assert files["libraries"] == [
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.159.04",
            "/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04",
            "/usr/lib/x86_64-linux-gnu/nvidia/xorg/nvidia_drv.so",
        ]
        assert files["libraries32"] == [
            "/usr/lib/i386-linux-gnu/libnvidia-ml.so.580.159.04",
            "/usr/lib/i386-linux-gnu/libcuda.so.580.159.04",
        ]
        assert files["binaries"] == ["/usr/bin/nvidia-smi", "/usr/sbin/nvidia-persistenced"]
        assert files["ipcs"] == ["/var/run/nvidia-fabricmanager/socket"]
        assert files["firmware"] == ["/usr/lib/firmware/nvidia/580.159.04/gsp_ga10x.bin"]
        assert files["devices"] == ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"]

    def test_other_64bit_roots(self):
        files = nvgpu._categorise(
            "/lib64/libcuda.so.1\n/usr/local/nvidia/lib64/libcuda.so.1\n"
            "/usr/lib/aarch64-linux-gnu/libcuda.so.1\n/usr/lib32/libcuda.so.1\n/lib/libcuda.so.1\n"
        )
        assert files["libraries"] == [
            "/lib64/libcuda.so.1",
            "/usr/local/nvidia/lib64/libcuda.so.1",
            "/usr/lib/aarch64-linux-gnu/libcuda.so.1",
        ]
        assert files["libraries32"] == ["/usr/lib32/libcuda.so.1", "/lib/libcuda.so.1"]

    def test_duplicates_dropped_first_occurrence_kept(self):
        files = nvgpu._categorise("/dev/nvidia0\n/usr/lib64/libcuda.so.1\n/dev/nvidia0\n/usr/lib64/libcuda.so.1\n")
        assert files["devices"] == ["/dev/nvidia0"]
        assert files["libraries"] == ["/usr/lib64/libcuda.so.1"]

    def test_crlf_blank_lines_and_padding(self):
        files = nvgpu._categorise("\r\n  /dev/nvidiactl  \r\n\r\n/usr/bin/nvidia-smi\r\n\n")
        assert files["devices"] == ["/dev/nvidiactl"]
        assert files["binaries"] == ["/usr/bin/nvidia-smi"]

    def test_empty_output(self):
        files = nvgpu._categorise("")
        assert set(files) == set(nvgpu.CONTAINER_FILE_KINDS)
        assert all(value == [] for value in files.values())

    def test_unknown_path_is_kept_not_dropped(self):
        files = nvgpu._categorise("/usr/share/nvidia/nvoptix.bin\n")
        assert files["other"] == ["/usr/share/nvidia/nvoptix.bin"]

    def test_non_path_lines_ignored(self):
        files = nvgpu._categorise("WARNING, something odd\n/dev/nvidia0\n")
        assert [p for kind in files.values() for p in kind] == ["/dev/nvidia0"]

    def test_binary_in_lib_dir_is_a_library_not_a_binary(self):
        # Only a bin/ or sbin/ parent makes a binary; nvidia_drv.so under .../bin-like names does not.
        files = nvgpu._categorise("/usr/lib64/binfmt/libfoo.so\n/usr/local/bin/nvidia-smi\n")
        assert files["libraries"] == ["/usr/lib64/binfmt/libfoo.so"]
        assert files["binaries"] == ["/usr/local/bin/nvidia-smi"]


SUCCESS = """\
[Vector addition of 50000 elements]
Copy input data from the host memory to the CUDA device
CUDA kernel launch with 196 blocks of 256 threads
Copy output data from the CUDA device to the host memory
Test PASSED
Done
"""


class TestVectorAddOutput:
    def test_success(self):
        assert nvgpu._parse_vector_add(SUCCESS) == {
            "passed_text": True,
            "elements": 50000,
            "blocks": 196,
            "threads": 256,
        }

    def test_crlf(self):
        parsed = nvgpu._parse_vector_add(SUCCESS.replace("\n", "\r\n"))
        assert parsed == {"passed_text": True, "elements": 50000, "blocks": 196, "threads": 256}

    def test_other_block_size_and_extra_lines(self):
        text = (
            "Trying to pull localhost:5000/nvgpu/cuda-vector-add:v0.1...\n"
            "[Vector addition of 50000 elements]\n"
            "some debug line\n"
            "CUDA kernel launch with 391 blocks of 128 threads\n"
            "Test PASSED\n"
            "Done\n"
        )
        assert nvgpu._parse_vector_add(text) == {
            "passed_text": True,
            "elements": 50000,
            "blocks": 391,
            "threads": 128,
        }

    def test_empty(self):
        assert nvgpu._parse_vector_add("", "") == {
            "passed_text": False,
            "elements": None,
            "blocks": None,
            "threads": None,
        }

    def test_failure_has_elements_but_no_pass(self):
        parsed = nvgpu._parse_vector_add(
            "[Vector addition of 50000 elements]\n",
            "Failed to allocate device vector A (error code CUDA driver version is insufficient "
            "for CUDA runtime version)!\n",
        )
        assert parsed == {"passed_text": False, "elements": 50000, "blocks": None, "threads": None}

    def test_passed_must_be_its_own_line(self):
        assert not nvgpu._parse_vector_add("Test PASSED? no: Result verification failed\n")["passed_text"]
        assert nvgpu._parse_vector_add("  Test PASSED  \r\n")["passed_text"]

    def test_pass_in_stderr_stream_counts(self):
        assert nvgpu._parse_vector_add("", "Test PASSED\n")["passed_text"]


# Every failure text of FACTS.md ("cuda-vector-add output") and the practical ones,
# each with a word that must be in its diagnosis.
FAILURES = [
    (
        "Failed to allocate device vector A (error code CUDA driver version is insufficient for CUDA runtime version)!",
        "libcuda was not injected",
        "nvidia.com/gpu=all",
    ),
    (
        "Failed to allocate device vector A (error code no CUDA-capable device is detected)!",
        "no /dev/nvidia",
        "load_modules",
    ),
    (
        "Error: OCI runtime error: runc: error running hook #0: error running hook: exit status 1, "
        "stdout: , stderr: nvidia-container-cli: initialization error: nvml error: driver not loaded",
        "not loaded",
        "nvgpu.load_modules",
    ),
    (
        "nvidia-container-cli: initialization error: nvml error: insufficient permissions",
        "SELinux",
        "restorecon",
    ),
    ("Failed to initialize NVML: Insufficient Permissions", "SELinux", "nvidia_container_t"),
    (
        "Error: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=all",
        "no CDI spec",
        "nvidia-ctk cdi generate",
    ),
    (
        "Error: crun: error stat'ing file `/usr/lib64/libcuda.so.550.54.14`: No such file or directory: "
        "OCI runtime attempted to invoke a command that was not found",
        "older driver",
        "nvidia-ctk cdi generate",
    ),
    ("Failed to launch vectorAdd kernel (error code unspecified launch failure)!", "GPU itself", "Xid"),
    ("Result verification failed at element 4711!", "GPU itself", "Xid"),
    (
        "Error: initializing source docker://docker.io/mirrorgooglecontainers/cuda-vector-add:v0.2: "
        "reading manifest v0.2 in docker.io/mirrorgooglecontainers/cuda-vector-add: manifest unknown",
        "image",
        "podman pull",
    ),
    (
        'Error: pinging container registry registry.example: Get "https://registry.example/v2/": '
        "dial tcp: lookup registry.example: no such host",
        "image",
        "registry",
    ),
    (
        "Error: ... dial tcp 127.0.0.1:5000: connect: connection refused",
        "image",
        "registry",
    ),
    (
        "nvidia-container-cli: mount error: failed to add device rules: unable to find any existing "
        "device filters attached to the cgroup: bpf_prog_query(BPF_CGROUP_DEVICE) failed: "
        "operation not permitted",
        "cgroup",
        "no-cgroups=true",
    ),
    ("nvidia-container-cli: container error: cgroup subsystem devices not found", "cgroup", "no-cgroups"),
    ('cannot find newuidmap: exec: "newuidmap": executable file not found in $PATH', "subuid", "subuids"),
    ('Error: no subuid ranges found for user "gpuuser" in /etc/subuid', "subuid", "usermod"),
    (
        "nvidia-container-cli: initialization error: load library failed: libnvidia-ml.so.1: "
        "cannot open shared object file: no such file or directory",
        "libnvidia-ml",
        "nvidia-driver",
    ),
    ("['podman', 'run'] : Timed out after 5 seconds", "timeout", "timeout="),
    ("['/usr/bin/podman', 'run'] : Timed out after 0.01 seconds", "timeout", "timeout="),
    (
        # runc's words for the stale spec (seen on the simulated node after a 550 -> 580 switch).
        "Error: runc: runc create failed: unable to start container process: error during container "
        'init: error mounting "/usr/lib64/libcuda.so.550.127.08" to rootfs at '
        '"/usr/lib64/libcuda.so.550.127.08": stat /usr/lib64/libcuda.so.550.127.08: no such file or '
        "directory: OCI runtime attempted to invoke a command that was not found",
        "older driver",
        "nvidia-ctk cdi generate",
    ),
]


class TestDiagnose:
    @pytest.mark.parametrize("text,in_cause,in_fix", FAILURES, ids=[f[0][:40] for f in FAILURES])
    def test_each_failure_text(self, text, in_cause, in_fix):
        diagnosis = nvgpu.diagnose(text)
        assert diagnosis is not None, text
        assert set(diagnosis) == {"cause", "fix"}
        assert in_cause in diagnosis["cause"]
        assert in_fix in diagnosis["fix"]

    def test_each_failure_text_gets_a_distinct_entry_where_causes_differ(self):
        causes = {nvgpu.diagnose(text)["cause"] for text, _c, _f in FAILURES}
        assert len(causes) >= 11

    def test_nothing_known(self):
        assert nvgpu.diagnose("") is None
        assert nvgpu.diagnose(None) is None
        assert nvgpu.diagnose(SUCCESS) is None

    def test_first_match_wins_specific_before_generic(self):
        # A hook failure that Podman wraps: the root cause, not "the hook failed".
        text = (
            "Error: OCI runtime error: error running hook #0: exit status 1, stderr: "
            "nvidia-container-cli: initialization error: nvml error: driver not loaded\n"
            "Failed to allocate device vector A (error code no CUDA-capable device is detected)!"
        )
        assert "not loaded" in nvgpu.diagnose(text)["cause"]

    def test_plain_hook_failure(self):
        diagnosis = nvgpu.diagnose("Error: OCI runtime error: runc: error running hook #0: exit status 127")
        assert "hook" in diagnosis["cause"]

    def test_successful_pull_chatter_is_not_a_failure(self):
        assert nvgpu.diagnose("Trying to pull docker.io/x/y:v1...\nGetting image source signatures\n") is None

    def test_table_is_data(self):
        for entry in nvgpu._DIAGNOSES:
            pattern, cause, fix = entry
            assert hasattr(pattern, "search") and cause and fix


class TestVersions:
    @pytest.mark.parametrize(
        "text,expected",
        [
            (
                "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.08  Wed Oct  2 05:52:47 UTC 2024\n"
                "GCC version:  gcc version 8.5.0 20210514 (Red Hat 8.5.0-22) (GCC)\n",
                "550.127.08",
            ),
            (
                "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  "
                "(dvs-builder@U22-I3-AE18-09-3)  Thu Oct  9 2025\n",
                "580.159.04",
            ),
            ("NVRM version: NVIDIA UNIX aarch64 Kernel Module  535.216.01  Release Build\r\n", "535.216.01"),
            ("", None),
            (None, None),
            ("garbage\n", None),
        ],
    )
    def test_proc_driver_version(self, text, expected):
        assert nvgpu._parse_proc_driver_version(text) == expected

    @pytest.mark.parametrize(
        "text,expected",
        [("podman version 4.3.1\n", "4.3.1"), ("podman version 5.2.2-dev", "5.2.2-dev"), ("", None)],
    )
    def test_podman_version(self, text, expected):
        assert nvgpu._parse_podman_version(text) == expected
