"""What NVIDIA's own tools and packages produce, as FACTS.md records it: the expected
values the tests compare the project's output with (kept apart from production code)."""

# oci-nvidia-hook.json, as the nvidia-container-toolkit RPMs shipped it until v1.14.
NVIDIA_HOOK = {
    "version": "1.0.0",
    "hook": {
        "path": "/usr/bin/nvidia-container-runtime-hook",
        "args": ["nvidia-container-runtime-hook", "prestart"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    },
    "when": {"always": True, "commands": [".*"]},
    "stages": ["prestart"],
}

# The cuda-samples vectorAdd's output when it passes (FACTS.md).
VECTOR_ADD_PASSED = """\
[Vector addition of 50000 elements]
Copy input data from the host memory to the CUDA device
CUDA kernel launch with 196 blocks of 256 threads
Copy output data from the CUDA device to the host memory
Test PASSED
Done
"""
