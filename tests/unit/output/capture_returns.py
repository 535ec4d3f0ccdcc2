"""
Capture the real returns the outputter tests render (``tests/unit/output/returns/``):
``salt-call --out=json`` of nvgpu.doctor and nvgpu.run_vector_add on a simulated node
converged with the 550 stream (cdi mode, rootless user gpuuser), healthy and then with
one fault (its CDI spec made stale: generated for 550.54.14 while 550.127.08 is loaded);
and the fleet report that _runners/nvgpu.py builds from such returns.

Run it again, as root, when a return's shape changes:

    .venv/bin/python -m tests.unit.output.capture_returns
"""

import json
import pathlib
import sys
from unittest.mock import create_autospec

import salt.client
import salt.utils.minions

from tests.functional.test_formula import converge
from tests.node import REPO, Node, site_pillar
from tests.node.assets import build_assets
from tests.unit.loader import load

# The runner imports the shared layer by name, as Salt's loader lets it.
sys.path.insert(0, str(REPO / "_utils"))

RETURNS = pathlib.Path(__file__).resolve().parent / "returns"
USER = "gpuuser"


def save(name, data):
    (RETURNS / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def capture_node():
    assets = build_assets()
    node = Node.create(assets)
    try:
        pillar = site_pillar(assets, driver={"stream": "550-dkms"}, rootless_users=[{"name": USER, "uid": 2001}])
        node.write_pillar(pillar)
        converge(node, pillar)
        image = f"image={assets.image}"
        returns = {
            "doctor_healthy": node.salt_call("nvgpu.doctor"),
            "vector_add_root": node.salt_call("nvgpu.run_vector_add", image),
            "vector_add_rootless": node.salt_call("nvgpu.run_vector_add", image, f"user={USER}"),
            # No stand-in libcuda for the host check here: it fails as on a node without one.
            "vector_add_host": node.salt_call("nvgpu.run_vector_add", "runtime=host"),
        }
        spec = node.read_file("/etc/cdi/nvidia.yaml")
        node.write_file("/etc/cdi/nvidia.yaml", spec.replace("550.127.08", "550.54.14"))
        returns["doctor_stale_spec"] = node.salt_call("nvgpu.doctor")
        returns["vector_add_rootless_stale_spec"] = node.salt_call("nvgpu.run_vector_add", image, f"user={USER}")
        return {name: save(name, res.data) for name, res in returns.items()}
    finally:
        node.destroy()


def capture_report(returns):
    """The runner's report for three minions: one passes, one has the stale spec, one is silent."""
    client = create_autospec(salt.client.LocalClient, instance=True)
    answers = {
        "nvgpu.run_vector_add": {
            "gpu-a": {"ret": returns["vector_add_root"], "retcode": 0},
            "gpu-b": {"ret": returns["vector_add_rootless_stale_spec"], "retcode": 1},
            "gpu-c": {"out": "no_return", "ret": "Minion did not return. [No response]", "retcode": 1},
        },
        "nvgpu.doctor": {"gpu-b": {"ret": returns["doctor_stale_spec"], "retcode": 1}},
    }
    client.cmd.side_effect = lambda tgt, fun, **kwargs: answers[fun]
    runner = load("_runners/nvgpu.py")
    runner.__opts__ = {"conf_file": "/etc/salt/master"}
    salt.client.get_local_client = lambda *args, **kwargs: client
    ckminions = create_autospec(salt.utils.minions.CkMinions)
    ckminions.return_value.check_minions.return_value = {"minions": ["gpu-a", "gpu-b", "gpu-c"], "missing": []}
    salt.utils.minions.CkMinions = ckminions
    save("report", runner.report(tgt="gpu-*", user=USER))


if __name__ == "__main__":
    capture_report(capture_node())
