"""nvgpu Salt extension: a validated NVIDIA GPU node for Podman containers.

Salt's loader finds the ``modules``, ``states``, ``grains``, ``runners`` and ``output``
(the ``--out=nvgpu`` outputter) sub-packages of this package through the ``salt.loader``
entry point, which imports this package first.

The modules import the shared layer (``utils``: ``nvgpu_node``, ``nvgpu_failures``,
``nvgpu_pillar``) by name. From a checkout (``file_roots`` + ``saltutil.sync_all``) Salt
puts the synced ``_utils`` on ``sys.path`` while it loads them; it does not do that for an
extension's ``utils``, so this package does it here, for the same imports to work.
"""

import os
import sys

_UTILS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "utils")
if _UTILS not in sys.path:
    sys.path.append(_UTILS)
