"""
Execution module for NVIDIA GPU nodes that run Podman containers.
"""

__virtualname__ = "nvgpu"


def __virtual__():
    return __virtualname__
