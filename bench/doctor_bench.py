"""
What `nvgpu.doctor` costs on a healthy node, next to `salt-call test.ping` (Salt's own
start-up, the floor of any salt-call): a simulated RHEL node (tests/node) converged with
the formula (550 stream, cdi mode, one rootless user), then interleaved rounds of

    salt-call --local nvgpu.doctor      and      salt-call --local test.ping

each inside the node (the same namespace set-up for both), medians reported, the ratio,
and the difference: what the doctor's checks themselves cost.

Run as root from the checkout, with the venv's Python (it builds the node assets first):
    .venv/bin/python bench/doctor_bench.py [--rounds 7] [--json FILE]
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.functional.test_formula import converge  # noqa: E402
from tests.node import SALT_CALL, Node, build_assets, site_pillar  # noqa: E402

COMMANDS = {
    "doctor": [str(SALT_CALL), "--local", "--out=json", "--log-level=quiet", "nvgpu.doctor"],
    "test.ping": [str(SALT_CALL), "--local", "--out=json", "--log-level=quiet", "test.ping"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    assets = build_assets()
    node = Node.create(assets)
    try:
        pillar = site_pillar(assets, driver={"stream": "550-dkms"},
                             rootless_users=[{"name": "gpuuser", "uid": 2001}])
        node.write_pillar(pillar)
        converge(node, pillar)
        healthy = json.loads(node.run(COMMANDS["doctor"]).stdout)["local"]
        assert healthy["ok"], [c for c in healthy["checks"] if c["status"] != "ok"]
        times = {name: [] for name in COMMANDS}
        for _ in range(args.rounds):
            for name, argv in COMMANDS.items():
                start = time.perf_counter()
                proc = node.run(argv)
                times[name].append(time.perf_counter() - start)
                assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
    finally:
        node.destroy()

    medians = {name: statistics.median(values) for name, values in times.items()}
    figures = {
        "rounds": args.rounds,
        "checks": len(healthy["checks"]),
        "doctor_s": round(medians["doctor"], 3),
        "test_ping_s": round(medians["test.ping"], 3),
        "ratio": round(medians["doctor"] / medians["test.ping"], 2),
        "doctor_own_s": round(medians["doctor"] - medians["test.ping"], 3),
    }
    print(f"{'':12}{'median s':>10}{'min s':>8}{'max s':>8}   ({args.rounds} interleaved rounds)")
    for name, values in times.items():
        print(f"{name:12}{medians[name]:>10.3f}{min(values):>8.3f}{max(values):>8.3f}")
    print(f"doctor / test.ping = {figures['ratio']}x; the doctor's {figures['checks']} checks add "
          f"{figures['doctor_own_s']:.3f} s to Salt's start-up")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
