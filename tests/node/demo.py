"""`make demo`: converge a GPU node with the gpu formula, converge it again, validate it.

It works on a fresh simulated RHEL 8 GPU node (tests/node), built from Debian's packages;
a real RHEL node is set up with Salt's own packages instead (README, "Install next to Salt").

Prints the per-stage results of each run and ends with one line a script can read:
    nvgpu-demo: result=PASSED node=... states=N changed=N rerun_changed=0 ...
"""

import json
import shlex
import sys
import time
from collections import Counter

import yaml

from tests.node import REPO, Node, build_assets, site_pillar
from tests.node.assets import merge_stages

ROOTLESS_USER = {"name": "gpuuser", "uid": 2001}
STDERR_TAIL = 15  # lines of a failed vector add's output shown in the summary


def simulated_node():
    assets = build_assets()
    node = Node.create(assets, name="demo")
    pillar = yaml.safe_load((REPO / "pillar.example").read_text())
    site = site_pillar(assets, rootless_users=[ROOTLESS_USER])["gpu"]
    node.write_pillar({"gpu": merge_stages(pillar["gpu"], site)})
    node.name = f"simulated RHEL 8.9 ({node.root})"
    return node, assets.image


def apply(node, label):
    """state.apply gpu; prints one line per stage; returns (ok, states, changed)."""
    started = time.monotonic()
    result = node.salt_call("state.apply", "gpu")
    seconds = time.monotonic() - started
    if not isinstance(result.data, dict):
        print(f"{label}: state.apply gpu did not run (exit {result.retcode}):\n{result.stdout}{result.stderr}")
        return False, 0, 0
    stages, changed, failed = {}, Counter(), []
    for state_id, ret in sorted(result.data.items(), key=lambda kv: kv[1].get("__run_num__", 0)):
        stage = ret.get("__sls__", "?")
        stages.setdefault(stage, Counter())["states"] += 1
        if ret["changes"]:
            stages[stage]["changed"] += 1
            changed["all"] += 1
        if ret["result"] is not True:
            stages[stage]["failed"] += 1
            failed.append(f"  FAILED {state_id.split('_|-')[1]}: {ret['comment']}")
    print(f"{label}: state.apply gpu, {len(result.data)} states in {seconds:.1f} s, exit {result.retcode}")
    for stage, counts in stages.items():
        print(f"  {stage:<14} {counts['states']:>3} states  {counts['changed']:>3} changed  {counts['failed']:>2} failed")
    if failed:
        print("\n".join(failed))
    return result.retcode == 0 and not failed, len(result.data), changed["all"]


def vector_add(node, image, user=None):
    args = ["nvgpu.run_vector_add", f"image={image}"] + ([f"user={user}"] if user else [])
    result = node.salt_call(*args)
    data = result.data if isinstance(result.data, dict) else {}
    who = user or "root"
    if data.get("passed"):
        print(f"vector add as {who}: PASSED ({data['elements']} elements, {data['blocks']} blocks of "
              f"{data['threads']} threads, mode {data.get('mode')}, {data['duration_s']:.2f} s)")
    else:
        print(f"vector add as {who}: FAILED (exit {result.retcode}): {data.get('diagnosis') or result.stderr}")
        # What to run by hand, and what it said: enough to act on without re-running.
        if data.get("command"):
            print(f"  command: {shlex.join(data['command'])}")
        tail = (data.get("stderr") or data.get("stdout") or result.stderr or "").strip().splitlines()[-STDERR_TAIL:]
        if tail:
            print("  last lines it printed:\n" + "\n".join(f"    {line}" for line in tail))
    return bool(data.get("passed"))


def main():
    node, image = simulated_node()
    print(f"node: {node.name}")
    started = time.monotonic()
    ok1, states, changed = apply(node, "first run")
    ok2, _, rerun_changed = apply(node, "second run")
    modules = node.salt_call("nvgpu.load_modules").data
    print(f"nvgpu.load_modules: {json.dumps(modules)}")
    files = node.salt_call("nvgpu.list_container_files").data
    if isinstance(files, dict):
        print("nvgpu.list_container_files: " + ", ".join(f"{k}={len(v)}" for k, v in files.items()))
    root = vector_add(node, image)
    rootless = vector_add(node, image, ROOTLESS_USER["name"])
    passed = ok1 and ok2 and rerun_changed == 0 and root and rootless
    print(f"nvgpu-demo: result={'PASSED' if passed else 'FAILED'} states={states} changed={changed} "
          f"rerun_changed={rerun_changed} root={'PASSED' if root else 'FAILED'} "
          f"rootless={'PASSED' if rootless else 'FAILED'} duration_s={time.monotonic() - started:.1f}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
