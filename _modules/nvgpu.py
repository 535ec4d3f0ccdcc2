"""
Execution module for NVIDIA GPU nodes that run Podman containers.
"""

__virtualname__ = "nvgpu"


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------------------
# Facts and actions used by the states: dnf module streams, toolkit config,
# CDI spec, SELinux labels.
# ---------------------------------------------------------------------------
