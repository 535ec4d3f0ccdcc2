"""A real salt-master on this machine, and salt-minions that each run inside a simulated node."""

import shutil

import pytest
import yaml
from saltfactories.daemons.minion import SaltMinion

from tests.node import HOME, KERNEL_RELEASE, REPO, Node


@pytest.fixture(scope="session")
def salt_factories_config():
    # Daemons' config and state live outside the node's replaced paths (/tmp, /etc, /var),
    # so a minion inside a node still finds them.
    root = HOME / "factories"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return {"root_dir": root}


@pytest.fixture(scope="module")
def pillar_dir(salt_factories):
    path = HOME / "factories" / "pillar"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def salt_master(salt_factories, pillar_dir):
    """The fleet's master: serves the formula, the extension modules and per-minion pillar."""
    overrides = {
        "file_roots": {"base": [str(REPO / "salt"), str(REPO)]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "open_mode": True,
    }
    master = salt_factories.salt_master_daemon("nvgpu-master", overrides=overrides)
    with master.started(start_timeout=120):
        yield master


def write_pillar(pillar_dir, per_minion):
    """Pillar per minion id: top.sls maps each id to its own file."""
    top = {"base": {minion_id: [minion_id.replace("-", "_")] for minion_id in per_minion}}
    (pillar_dir / "top.sls").write_text(yaml.safe_dump(top))
    for minion_id, pillar in per_minion.items():
        (pillar_dir / f"{minion_id.replace('-', '_')}.sls").write_text(yaml.safe_dump(pillar))


def node_minion(salt_master, node, minion_id):
    """A salt-minion daemon whose process runs inside `node`."""

    class NodeMinion(SaltMinion):
        def cmdline(self, *args):
            return node.command_prefix() + super().cmdline(*args)

    return salt_master.salt_minion_daemon(
        minion_id, factory_class=NodeMinion,
        overrides={"grains": {"kernelrelease": KERNEL_RELEASE}})


@pytest.fixture(scope="module")
def salt_cli(salt_master):
    return salt_master.salt_cli(timeout=900)


@pytest.fixture(scope="module")
def node_factory(node_assets):
    nodes = []

    def create(name):
        node = Node.create(node_assets, name=name)
        nodes.append(node)
        return node

    yield create
    for node in nodes:
        node.destroy()
