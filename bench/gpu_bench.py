"""
What the GPU checks cost on a real GPU node, against the floor of what they do:

- host: nvgpu_cuda.vector_add (what `nvgpu.run_vector_add runtime=host` runs) against the floor
  of any CUDA program, cuInit + context creation, timed inside a fresh process in the same round;
  target <= 1.3x;
- container: nvgpu.run_vector_add mode=cdi against a bare `podman run --rm --device
  nvidia.com/gpu=all IMAGE` of the same image (root, and rootless for the same user, the
  bare one started as nvgpu starts it, setpriv, but without Salt); targets: root <= 1.05x,
  rootless <= 1.05x + 0.05 s;
- both next to `nvidia-smi -L`, and the whole `salt-call --local` of each for scale.

Rounds are interleaved (every measurement once per round) and medians reported. Functions are
called through Salt's loader in this process, so Salt's start-up is not in the module figures.

Run as root on a GPU node after tests/gpu/prepare_podman.sh, with Salt importable:
    python3 bench/gpu_bench.py [--rounds 7] [--image IMAGE] [--user USER] [--json FILE]
"""

import argparse
import json
import os
import pathlib
import pwd
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "_utils"))
import nvgpu_node  # noqa: E402

from tests.saltcall import minion_config  # noqa: E402

FLOOR = r"""
import ctypes, json, time
t0 = time.perf_counter()
cuda = ctypes.CDLL("libcuda.so.1")
t1 = time.perf_counter()
assert cuda.cuInit(0) == 0
dev, ctx = ctypes.c_int(), ctypes.c_void_p()
assert cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
assert cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev) == 0
t2 = time.perf_counter()
cuda.cuCtxDestroy_v2(ctx)
print(json.dumps({"dlopen_s": t1 - t0, "init_ctx_s": t2 - t1}))
"""


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def loader(conf_dir):
    import salt.config
    import salt.loader

    opts = salt.config.minion_config(str(conf_dir / "minion"))
    opts["grains"] = salt.loader.grains(opts)
    utils = salt.loader.utils(opts)
    return salt.loader.minion_mods(opts, utils=utils)


def run(argv, passed=False, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0 or (passed and "Test PASSED" not in proc.stdout):
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stdout} {proc.stderr}")
    return proc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--image", default="localhost/nvgpu/cuda-vector-add:v0.1")
    parser.add_argument("--user", default="nvgpu-rootless", help="rootless user ('' to skip)")
    parser.add_argument("--no-containers", action="store_true")
    parser.add_argument("--json", help="also write every sample and the medians here")
    args = parser.parse_args()

    conf_dir = minion_config(pathlib.Path(tempfile.mkdtemp(prefix="nvgpu-bench-")))
    mods = loader(conf_dir)
    salt_call = [sys.executable, "-c", "import salt.scripts; salt.scripts.salt_call()",
                 "--local", "-c", str(conf_dir), "--out=json", "--log-level=quiet"]
    podman = "podman"
    cdi = ["--device", "nvidia.com/gpu=all"]
    user = None
    if args.user and not args.no_containers:
        pw = pwd.getpwnam(args.user)
        user = (args.user, pw.pw_uid, pw.pw_gid, pw.pw_dir)

    samples = {}

    def add(name, seconds):
        samples.setdefault(name, []).append(seconds)

    for _ in range(args.rounds):
        wall, proc = timed(lambda: run([sys.executable, "-I", "-S", "-c", FLOOR]))
        floor = json.loads(proc.stdout)
        add("floor: cuInit + context (in process)", floor["init_ctx_s"])
        add("floor: python + dlopen + cuInit + context (process wall)", wall)

        wall, ret = timed(lambda: mods["nvgpu_cuda.vector_add"]())
        assert ret["passed"], ret
        add("host: nvgpu_cuda.vector_add (wall)", wall)
        add("host: its own cuInit + context", ret["timings"]["init_s"])

        wall, _ = timed(lambda: run(["nvidia-smi", "-L"]))
        add("nvidia-smi -L", wall)

        wall, proc = timed(lambda: subprocess.run(salt_call + ["nvgpu.run_vector_add", "runtime=host"],
                                                  capture_output=True, text=True))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        add("salt-call nvgpu.run_vector_add runtime=host (whole command)", wall)

        if args.no_containers:
            continue
        wall, _ = timed(lambda: run([podman, "run", "--rm", *cdi, args.image], passed=True))
        add("container root: bare podman run", wall)
        wall, ret = timed(lambda: mods["nvgpu.run_vector_add"](image=args.image, mode="cdi"))
        assert ret["passed"], ret
        add("container root: nvgpu.run_vector_add mode=cdi", wall)
        if user:
            name, uid, gid, home = user
            # The same podman command as the user, started the way nvgpu starts it (setpriv:
            # the user's uid, gid and groups; HOME, USER, LOGNAME, a clean PATH, the runtime
            # dir) but without Salt: the difference is nvgpu's own cost.
            bare, how = nvgpu_node.as_user(
                [podman, "run", "--rm", "--user", f"{uid}:{gid}", "--security-opt=no-new-privileges",
                 "--cap-drop=ALL", "--security-opt", "label=type:" + mods["nvgpu_selinux.container_type"](),
                 *cdi, args.image], name, {"uid": uid, "gid": gid, "home": home})
            wall, _ = timed(lambda bare=bare, how=how: run(bare, passed=True, cwd=how["cwd"], env=how["env"]))
            add("container rootless: bare podman run", wall)
            wall, ret = timed(
                lambda name=name: mods["nvgpu.run_vector_add"](image=args.image, mode="cdi", user=name)
            )
            assert ret["passed"], ret
            add("container rootless: nvgpu.run_vector_add mode=cdi", wall)

    med = {name: statistics.median(values) for name, values in samples.items()}
    width = max(len(name) for name in med)
    print(f"GPU bench, {args.rounds} interleaved rounds, medians (min..max):")
    for name, values in samples.items():
        print(f"  {name:<{width}}  {med[name]:7.3f} s  ({min(values):.3f}..{max(values):.3f})")

    verdicts = {}
    host = med["host: nvgpu_cuda.vector_add (wall)"]
    floor = med["floor: cuInit + context (in process)"]
    verdicts["host / floor (target <= 1.3)"] = host / floor
    verdicts["host / floor process wall"] = host / med["floor: python + dlopen + cuInit + context (process wall)"]
    verdicts["host / nvidia-smi -L"] = host / med["nvidia-smi -L"]
    for who in ("root", "rootless"):
        bare = med.get(f"container {who}: bare podman run")
        ours = med.get(f"container {who}: nvgpu.run_vector_add mode=cdi")
        if bare and ours:
            slack = 0.05 if who == "rootless" else 0.0
            verdicts[f"container {who}: nvgpu / bare (target <= 1.05 + {slack} s / bare = "
                     f"{1.05 + slack / bare:.3f})"] = ours / bare
            verdicts[f"container {who}: nvgpu - bare, s"] = ours - bare
            verdicts[f"container {who}: nvgpu / nvidia-smi -L"] = ours / med["nvidia-smi -L"]
    print("Ratios:")
    for name, value in verdicts.items():
        print(f"  {name}: {value:.3f}")
    ok_host = host <= 1.3 * floor
    ok_containers = all(
        med[f"container {who}: nvgpu.run_vector_add mode=cdi"]
        <= 1.05 * med[f"container {who}: bare podman run"] + (0.05 if who == "rootless" else 0.0)
        for who in ("root", "rootless") if f"container {who}: bare podman run" in med
    )
    print(f"Targets: host {'met' if ok_host else 'MISSED'}, containers {'met' if ok_containers else 'MISSED'}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"rounds": args.rounds, "samples": samples, "medians": med, "ratios": verdicts,
             "targets_met": {"host": ok_host, "containers": ok_containers},
             "node": {"driver": pathlib.Path("/sys/module/nvidia/version").read_text().strip(),
                      "gpus": run(["nvidia-smi", "-L"]).stdout.strip()}}, indent=1))
    return 0 if ok_host and ok_containers else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
