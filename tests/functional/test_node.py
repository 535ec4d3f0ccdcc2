"""The simulated node itself: what belongs to the node and what stays the host's."""

import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.node


@pytest.mark.parametrize("parent", ["/root", "/home", "/tmp"])
def test_host_paths_stay_the_hosts_under_the_nodes_layers(node, parent):
    # A checkout in root's home (or /home, /tmp) is where Salt writes byte-code; it must
    # land in the checkout, not in the node's layers and so in every snapshot.
    checkout = Path(tempfile.mkdtemp(prefix="nvgpu-checkout-", dir=parent))
    node.host_paths.append(checkout)
    try:
        before = node.snapshot()
        node.run(["mkdir", "-p", str(checkout / "__pycache__")], check=True)
        node.run(["touch", str(checkout / "__pycache__" / "m.pyc")], check=True)
        assert (checkout / "__pycache__" / "m.pyc").exists()
        assert node.snapshot() == before
    finally:
        shutil.rmtree(checkout)
