"""
What checking every GPU of a node costs against checking one (issue 14): `nvgpu.run_vector_add
gpus=each` runs one check per GPU at once, so N GPUs should cost about one check, not N.

Per round, interleaved: the host check on GPU 0 alone (`gpus=<its UUID>`) and on each GPU
(`gpus=each`), then the same in containers through CDI (root), and for scale `nvidia-smi -L`.
Medians (min..max) and the ratios each / one. Functions run through Salt's loader in this
process (Salt's start-up is not in the figures).

With --replicate N each GPU is listed N times (as N GPUs of one UUID): N checks at once on one
GPU, an upper bound of what N GPUs cost where only one GPU was lent (the N CUDA contexts and
containers share that GPU, where on N GPUs each has its own).

Run as root on a GPU node after tests/gpu/prepare_podman.sh, with Salt importable:
    python3 bench/gpu_each_bench.py [--rounds 7] [--image IMAGE] [--no-containers] [--replicate N]
                                    [--json FILE]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.gpu_bench import loader, timed  # noqa: E402
from tests.saltcall import minion_config  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--image", default="localhost/nvgpu/cuda-vector-add:v0.1")
    parser.add_argument("--no-containers", action="store_true")
    parser.add_argument("--replicate", type=int, default=1, help="list each GPU this many times")
    parser.add_argument("--json", help="also write every sample and the medians here")
    args = parser.parse_args()

    mods = loader(minion_config(pathlib.Path(tempfile.mkdtemp(prefix="nvgpu-bench-"))))
    gpus = mods["nvgpu_health.gpus"]()
    if args.replicate > 1:
        gpus = [dict(gpu, index=n * len(gpus) + gpu["index"]) for n in range(args.replicate) for gpu in gpus]
        mods["nvgpu_health.gpus"] = lambda: gpus
    first = gpus[0]["uuid"]
    runs = {"host": {"runtime": "host"}}
    if not args.no_containers:
        runs["container root (cdi)"] = {"image": args.image, "mode": "cdi"}
    samples = {}

    def add(name, seconds):
        samples.setdefault(name, []).append(seconds)

    for _ in range(args.rounds):
        for where, kwargs in runs.items():
            wall, ret = timed(lambda kwargs=kwargs: mods["nvgpu.run_vector_add"](gpus=first, **kwargs))
            assert ret["passed"], ret
            add(f"{where}: one GPU (gpus=UUID of GPU 0)", wall)
            wall, ret = timed(lambda kwargs=kwargs: mods["nvgpu.run_vector_add"](gpus="each", **kwargs))
            assert ret["passed"] and len(ret["gpus"]) == len(gpus), ret
            add(f"{where}: each of {len(gpus)} GPUs (gpus=each)", wall)
        wall, _ = timed(lambda: subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=True))
        add("nvidia-smi -L", wall)

    med = {name: statistics.median(values) for name, values in samples.items()}
    width = max(len(name) for name in med)
    kind = f" ({len(gpus) // args.replicate} real, each listed {args.replicate} times)" if args.replicate > 1 else ""
    print(f"Per-GPU bench, {len(gpus)} GPU(s){kind}, {args.rounds} interleaved rounds, medians (min..max):")
    for name, values in samples.items():
        print(f"  {name:<{width}}  {med[name]:7.3f} s  ({min(values):.3f}..{max(values):.3f})")
    ratios = {}
    for where in runs:
        one = med[f"{where}: one GPU (gpus=UUID of GPU 0)"]
        each = med[f"{where}: each of {len(gpus)} GPUs (gpus=each)"]
        ratios[f"{where}: each / one ({len(gpus)} GPUs; {len(gpus)} would be serial)"] = each / one
    print("Ratios:")
    for name, value in ratios.items():
        print(f"  {name}: {value:.3f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"rounds": args.rounds, "gpus": gpus, "samples": samples, "medians": med, "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
