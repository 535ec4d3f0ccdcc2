"""Fixtures shared by the functional and integration tests."""

import os

import pytest

from tests.node import Node, build_assets


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
