"""Fixtures shared by the functional and integration tests."""

import os
import sys

import pytest

from tests.node import REPO, Node, build_assets

# The shared layer (_utils/*.py) is imported by name, as Salt's loader makes it
# importable for the modules it loads.
sys.path.insert(0, str(REPO / "_utils"))


@pytest.fixture(scope="session")
def node_assets():
    """Stand-in RPM repos, the vector-add image and the registry (built once, cached)."""
    if os.geteuid() != 0:
        pytest.skip("the simulated node needs root (mount namespaces, overlayfs)")
    return build_assets()


@pytest.fixture
def node(node_assets):
    """A fresh simulated RHEL 8 GPU node: nouveau loaded, nothing installed yet."""
    fresh = Node.create(node_assets)
    yield fresh
    fresh.destroy()


def pytest_configure(config):
    # Importing Salt puts a handler on the root logger that holds log records until the
    # process exits and then writes them to the stderr it saw at import, which pytest has
    # closed by then: the daemons' "received a SIGTERM" lines came out after pytest's
    # summary as "--- Logging error ---". Without it, pytest's log capture takes them.
    import salt._logging.impl

    salt._logging.impl.shutdown_temp_handler()
