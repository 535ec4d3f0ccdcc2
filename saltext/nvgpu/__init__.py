"""nvgpu Salt extension: a validated NVIDIA GPU node for Podman containers.

Salt's loader finds the ``modules``, ``states``, ``grains`` and ``runners``
sub-packages of this package through the ``salt.loader`` entry point.
"""
