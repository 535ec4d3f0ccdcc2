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
from tests.node import REPO, Node, gpus_of, site_pillar
from tests.node.assets import build_assets
from tests.unit.loader import load

# The runner imports the shared layer by name, as Salt's loader lets it.
sys.path.insert(0, str(REPO / "_utils"))

RETURNS = pathlib.Path(__file__).resolve().parent / "returns"
USER = "gpuuser"


def save(name, data):
    (RETURNS / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def call(node, *args, **kwargs):
    """What `salt-call --out=json ARGS` returned on the node."""
    return node.salt_call(*args, **kwargs).data


def facts(node):
    """What the fleet report asks every node besides its check (_runners/nvgpu.py FACTS)."""
    return {"grains.item": call(node, "grains.item", "nvgpu"),
            "dnf_module.info": call(node, "dnf_module.info", "nvidia-driver"),
            "nvgpu.driver_version": call(node, "nvgpu.driver_version")}


def capture_node():
    assets = build_assets()
    node = Node.create(assets)
    try:
        pillar = site_pillar(assets, driver={"stream": "550-dkms"}, rootless_users=[{"name": USER, "uid": 2001}])
        node.write_pillar(pillar)
        converge(node, pillar)
        image = f"image={assets.image}"
        returns = {
            "doctor_healthy": call(node, "nvgpu.doctor"),
            "vector_add_root": call(node, "nvgpu.run_vector_add", image),
            "vector_add_rootless": call(node, "nvgpu.run_vector_add", image, f"user={USER}"),
            # No stand-in libcuda for the host check here: it fails as on a node without one.
            "vector_add_host": call(node, "nvgpu.run_vector_add", "runtime=host"),
        }
        spec = node.read_file("/etc/cdi/nvidia.yaml")
        node.write_file("/etc/cdi/nvidia.yaml", spec.replace("550.127.08", "550.54.14"))
        returns["doctor_stale_spec"] = call(node, "nvgpu.doctor")
        returns["vector_add_rootless_stale_spec"] = call(node, "nvgpu.run_vector_add", image, f"user={USER}")
        returns["facts"] = facts(node)
        return {name: save(name, data) for name, data in returns.items()}
    finally:
        node.destroy()


def capture_gpus_node():
    """
    An 8-GPU node (tests/functional/test_gpus.py's machine): GPU 3 with an uncorrectable ECC
    error, nvgpu.doctor and run_vector_add gpus=each; then GPU 5 fallen off the bus, the doctor.
    """
    assets = build_assets()
    node = Node.create(assets)
    try:
        node.set_gpus(gpus_of(8, **{"3": "ecc"}))
        node.provision()
        node.run(["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"], check=True)
        returns = {
            "doctor_gpu_ecc": call(node, "nvgpu.doctor"),
            "vector_add_each_gpu_ecc": call(node, "nvgpu.run_vector_add", f"image={assets.image_pinned}",
                                                      "mode=cdi", "gpus=each", timeout=600),
        }
        returns["facts_gpu"] = facts(node)
        node.set_gpus(gpus_of(8, **{"5": "off_bus"}))
        returns["doctor_gpu_off_bus"] = call(node, "nvgpu.doctor")
        return {name: save(name, data) for name, data in returns.items()}
    finally:
        node.destroy()


def capture_report(returns, runner_path="_runners/nvgpu.py"):
    """
    The runner's report (check=doctor) on five minions: gpu-a healthy, gpu-b with the stale
    spec, gpu-c silent, gpu-d healthy but with grain nvgpu:reboot_required set (as after a
    driver upgrade), gpu-e the 8-GPU node with its bad GPU 3. Each answers the facts and
    the doctor its node answered.
    """
    facts = returns["facts"]
    reboot = dict(facts, **{"grains.item": {"nvgpu": dict(facts["grains.item"]["nvgpu"], reboot_required=True)}})
    said = {
        "gpu-a": dict(facts, **{"nvgpu.doctor": returns["doctor_healthy"]}),
        "gpu-b": dict(facts, **{"nvgpu.doctor": returns["doctor_stale_spec"]}),
        "gpu-d": dict(reboot, **{"nvgpu.doctor": returns["doctor_healthy"]}),
        "gpu-e": dict(returns["facts_gpu"], **{"nvgpu.doctor": returns["doctor_gpu_ecc"]}),
    }
    silent = {"gpu-c": {"out": "no_return", "ret": "Minion did not return. [No response]", "retcode": 1}}

    def cmd(tgt, funs, **kwargs):
        full = {minion: {"ret": {fun: answer[fun] for fun in funs}, "retcode": 0} for minion, answer in said.items()}
        return dict(full, **silent)

    client = create_autospec(salt.client.LocalClient, instance=True)
    client.cmd.side_effect = cmd
    salt.client.get_local_client = lambda *args, **kwargs: client
    ckminions = create_autospec(salt.utils.minions.CkMinions)
    ckminions.return_value.check_minions.return_value = {"minions": sorted([*said, *silent]), "missing": []}
    salt.utils.minions.CkMinions = ckminions
    runner = load(runner_path)
    runner.__opts__ = {"conf_file": "/etc/salt/master"}
    save("report", runner.report(tgt="gpu-*"))


if __name__ == "__main__":
    capture_report({**capture_node(), **capture_gpus_node()})
