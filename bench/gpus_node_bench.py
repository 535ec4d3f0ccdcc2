"""
What `nvgpu.run_vector_add gpus=each` costs on an 8-GPU node against checking one GPU
(issue 14): a simulated RHEL node (tests/node) with 8 stand-in GPUs (Node.set_gpus), provisioned
by hand with a CDI spec, then interleaved rounds, inside the node, of

    salt-call nvgpu.run_vector_add mode=cdi gpus=<UUID of GPU 0>     (one container)
    salt-call nvgpu.run_vector_add mode=cdi gpus=each                 (8 containers at once)
    salt-call test.ping                                               (Salt's own start)

with the whole command's wall time and the function's own `duration_s`; medians (min..max),
the ratio each / one (8 would be eight checks one after another) and the difference.
Real Podman and runc start each container; the vector add in them is the stand-in.

Run as root from the checkout, with the venv's Python (it builds the node assets first):
    .venv/bin/python bench/gpus_node_bench.py [--rounds 5] [--gpus 8] [--json FILE]
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.node import SALT_CALL, Node, build_assets, gpus_of  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    assets = build_assets()
    node = Node.create(assets)
    image = assets.image_pinned  # this checkout's stand-in vectorAdd
    try:
        gpus = node.set_gpus(gpus_of(args.gpus))
        node.provision()
        node.run(["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"], check=True)
        base = [str(SALT_CALL), "--local", "--out=json", "--log-level=quiet"]
        vector_add = base + ["nvgpu.run_vector_add", f"image={image}", "mode=cdi", "timeout=600"]
        commands = {
            "one GPU (gpus=UUID of GPU 0)": vector_add + [f"gpus={gpus[0]['uuid']}"],
            f"each of {len(gpus)} GPUs (gpus=each)": vector_add + ["gpus=each"],
            "test.ping": base + ["test.ping"],
        }
        node.run(commands["one GPU (gpus=UUID of GPU 0)"], check=True)  # the image pulled once
        walls, inner = {name: [] for name in commands}, {name: [] for name in commands if name != "test.ping"}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                start = time.perf_counter()
                proc = node.run(argv, timeout=900)
                walls[name].append(time.perf_counter() - start)
                data = json.loads(proc.stdout)["local"]
                if name != "test.ping":
                    assert proc.returncode == 0 and data["passed"], proc.stdout + proc.stderr
                    inner[name].append(data["duration_s"])
    finally:
        node.destroy()

    def show(title, samples):
        med = {name: statistics.median(values) for name, values in samples.items()}
        print(title)
        width = max(len(name) for name in med)
        for name, values in samples.items():
            print(f"  {name:<{width}}  {med[name]:7.3f} s  ({min(values):.3f}..{max(values):.3f})")
        return med

    print(f"Per-GPU bench on a simulated {len(gpus)}-GPU node, {args.rounds} interleaved rounds, medians:")
    wall = show("whole salt-call inside the node:", walls)
    own = show("the function's own duration_s:", inner)
    one, each = ("one GPU (gpus=UUID of GPU 0)", f"each of {len(gpus)} GPUs (gpus=each)")
    ratios = {"each / one, duration_s": own[each] / own[one], "each - one, duration_s": own[each] - own[one],
              "each / one, whole command": wall[each] / wall[one],
              f"each / ({len(gpus)} x one), duration_s": own[each] / (len(gpus) * own[one])}
    print("Ratios:")
    for name, value in ratios.items():
        print(f"  {name}: {value:.3f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"rounds": args.rounds, "gpus": len(gpus), "wall": walls, "duration_s": inner, "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
