"""
What nvgpu costs on the simulated RHEL 8 node (tests/node: real Salt, dnf, rpm, Podman),
side by side in one run, medians of interleaved rounds:

(a) a converged `state.apply gpu` against `state.apply bench.nop` (one test.nop): Salt's
    own cost; target <= 1.3x with validation on and gpu:validate:when: changed;
(b) every process a converged re-run starts, by program (strace -f -e trace=execve),
    next to the one-test.nop run's (Salt's grains start some of their own);
(c) nvgpu.run_vector_add as root and rootless against a bare `podman run` of the same
    image with the same flags (called through Salt's loader inside the node, so Salt's
    start-up is not in it); targets: root <= 1.05x, rootless <= 1.05x + 0.05 s; and the
    former rootless way (Salt's runas) for scale;
(d) a fresh converge, stage by stage (gpu.driver ... gpu.validate);
(e) the peak RSS of salt-call: one test.nop without the extension, with it, and the
    converged `state.apply gpu`.

Writes the "## Node" section of docs/benchmarks.md (other sections are kept) with an
SVG plot (docs/benchmarks-node.svg). Run as root on a machine that runs the node tests:
    make bench        (or: .venv/bin/python bench/node_bench.py [--rounds 7])
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.node import SALT_CALL, Node, build_assets, site_pillar  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
PLOT = REPO / "docs" / "benchmarks-node.svg"
USER = {"name": "gpuuser", "uid": 2001}
STAGES = ("driver", "runtime", "toolkit", "selinux", "users", "validate")
# The programs the issue asks about, shown first in (b).
WATCHED = ("dnf", "rpm", "podman", "conmon", "semodule", "restorecon", "getenforce", "getsebool",
           "nvidia-smi", "nvidia-ctk", "nvidia-container-cli", "nvidia-modprobe")

# (c), run by the node's Python inside the node: Salt's loader from the node's minion
# config, then per round the bare command and nvgpu's, as root and as the user.
VECTOR_ADD = r"""
import json, os, pwd, shutil, subprocess, sys, time
import salt.config, salt.loader
rounds, image, user, utils = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
sys.path.insert(0, utils)
opts = salt.config.minion_config("/etc/salt/minion")
opts["grains"] = salt.loader.grains(opts)
mods = salt.loader.minion_mods(opts, utils=salt.loader.utils(opts))
import nvgpu_node
pw = pwd.getpwnam(user)
podman = shutil.which("podman")
flags = ["run", "--rm", "--pull=missing", "--network=none"]
cdi = ["--device", "nvidia.com/gpu=all", image]
rootless = ["--user", f"{pw.pw_uid}:{pw.pw_gid}", "--security-opt=no-new-privileges", "--cap-drop=ALL",
            "--security-opt", "label=type:nvidia_container_t"]
as_user, user_kwargs = nvgpu_node.as_user([podman, *flags, *rootless, *cdi], user,
                                          {"uid": pw.pw_uid, "gid": pw.pw_gid, "home": pw.pw_dir})
samples = {}
def timed(name, fn):
    start = time.perf_counter()
    out = fn()
    samples.setdefault(name, []).append(time.perf_counter() - start)
    assert "Test PASSED" in out, (name, out)
def bare(argv, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    return proc.stdout + proc.stderr
for _ in range(rounds):
    timed("root: bare podman run", lambda: bare([podman, *flags, *cdi]))
    timed("root: nvgpu.run_vector_add", lambda: mods["nvgpu.run_vector_add"](image=image, mode="cdi")["stdout"])
    timed("rootless: bare podman run (as the user, setpriv)",
          lambda: bare(as_user, env=user_kwargs["env"], cwd=user_kwargs["cwd"]))
    timed("rootless: nvgpu.run_vector_add",
          lambda: mods["nvgpu.run_vector_add"](image=image, mode="cdi", user=user)["stdout"])
    timed("rootless: the former way, Salt's runas",
          lambda: mods["cmd.run_all"]([podman, *flags, *rootless, *cdi], runas=user, clean_env=True,
                                      env={"HOME": pw.pw_dir}, cwd=pw.pw_dir, python_shell=False)["stdout"])
print(json.dumps(samples))
"""

# (e): the peak RSS of salt-call (the largest process it waited for: itself).
RSS = r"""
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
assert proc.returncode == 0, proc.stdout + proc.stderr
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def salt_argv(*args, config=None):
    return [str(SALT_CALL), "--local", "--out=json", "--log-level=quiet",
            *(["-c", config] if config else []), *args]


def timed_run(node, argv):
    start = time.perf_counter()
    proc = node.run(argv)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[-3:]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc


def states_of(proc):
    data = json.loads(proc.stdout)["local"]
    return {v["__id__"]: v for v in data.values()}


def median(values):
    return statistics.median(values)


# ---------------------------------------------------------------------------- the parts


def converged_vs_nop(node, rounds):
    """(a): every variant once per round, in the same order; seconds per variant."""
    variants = {
        "state.apply gpu (validate, when: changed)": salt_argv("state.apply", "gpu"),
        "state.apply gpu (validate, when: always)": salt_argv(
            "state.apply", "gpu", "pillar=" + json.dumps({"gpu": {"validate": {"when": "always"}}})),
        "state.apply gpu (validate enabled: false)": salt_argv(
            "state.apply", "gpu", "pillar=" + json.dumps({"gpu": {"validate": {"enabled": False}}})),
        "state.apply bench.nop (one test.nop)": salt_argv("state.apply", "bench.nop"),
        "state.show_sls gpu (rendering only)": salt_argv("state.show_sls", "gpu"),
        "state.show_sls bench.nop (rendering only)": salt_argv("state.show_sls", "bench.nop"),
    }
    samples = {name: [] for name in variants}
    state_ms = {}
    for _ in range(rounds):
        for name, argv in variants.items():
            seconds, proc = timed_run(node, argv)
            if name.startswith("state.apply gpu"):
                states = states_of(proc)
                # Inside the run: what the states themselves took (Salt's duration, ms).
                for sid, state in states.items():
                    state_ms.setdefault(name, {}).setdefault(sid, []).append(state["duration"])
                assert not [s for s in states.values() if s["changes"]], "not converged"
                if "changed" in name:
                    assert all("skipped" in states[s]["comment"] for s in states if s.startswith("gpu-validate")), \
                        "a validation ran on a converged node"
            samples[name].append(seconds)
    return samples, state_ms


def process_counts(node):
    """(b): {program: [gpu converged, nop]}."""
    res, gpu = node.salt_call_traced("state.apply", "gpu")
    assert res.retcode == 0, res.stdout[-2000:]
    res, nop = node.salt_call_traced("state.apply", "bench.nop")
    assert res.retcode == 0, res.stdout[-2000:]
    return {name: [gpu.get(name, 0), nop.get(name, 0)] for name in set(gpu) | set(nop)}


def vector_add(node, rounds, image):
    """(c): samples from inside the node."""
    proc = node.run([sys.executable, "-c", VECTOR_ADD, str(rounds), image, USER["name"], str(REPO / "_utils")], timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fresh_converge(assets, pillar):
    """(d): a fresh node, gpu.<stage> after gpu.<stage> (each includes what it needs)."""
    node = Node.create(assets, name="bench-fresh")
    try:
        node.write_pillar(pillar)
        seconds = {}
        for stage in STAGES:
            seconds[f"gpu.{stage}"], _ = timed_run(node, salt_argv("state.apply", f"gpu.{stage}"))
        seconds["state.apply gpu again (converged)"], _ = timed_run(node, salt_argv("state.apply", "gpu"))
        return seconds
    finally:
        node.destroy()


def peak_rss(node):
    """(e): KiB."""
    # The same masterless minion without nvgpu's module, state, grain and utils dirs.
    node.write_file("/etc/salt/bench-noext/minion", "file_client: local\nfile_roots:\n  base:\n"
                    f"    - {REPO}\npillar_roots:\n  base: [/etc/salt/pillar]\n")
    runs = {
        "salt-call state.apply bench.nop, without nvgpu": salt_argv("state.apply", "bench.nop",
                                                                    config="/etc/salt/bench-noext"),
        "salt-call state.apply bench.nop, with nvgpu": salt_argv("state.apply", "bench.nop"),
        "salt-call state.apply gpu (converged)": salt_argv("state.apply", "gpu"),
    }
    return {name: int(node.run([sys.executable, "-c", RSS, *argv], check=True).stdout.strip())
            for name, argv in runs.items()}


# ---------------------------------------------------------------------------- report


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in pathlib.Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return f"{cpu}, {os.cpu_count()} CPUs, {mem / 2**20:.0f} GiB, kernel {platform.release()}"


def svg(bars):
    """A horizontal bar chart of [(label, seconds)], as SVG text."""
    width, left, height, top = 760, 330, 22, 30
    top_value = max(value for _, value in bars) * 1.1
    scale = (width - left - 70) / top_value
    rows = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + height * len(bars) + 10}" '
            'font-family="sans-serif" font-size="12">',
            '<text x="10" y="18" font-weight="bold">nvgpu on the simulated node: medians, seconds</text>']
    for i, (label, value) in enumerate(bars):
        y = top + i * height
        colour = "#4878a8" if "nvgpu" in label or "gpu (" in label else "#a0a0a0"
        rows.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{label}</text>')
        rows.append(f'<rect x="{left}" y="{y + 3}" width="{value * scale:.1f}" height="{height - 6}" fill="{colour}"/>')
        rows.append(f'<text x="{left + value * scale + 4:.1f}" y="{y + 14}">{value:.3f}</text>')
    rows.append("</svg>")
    return "\n".join(rows) + "\n"


def section(args, a, a_states, b, c, d, e, load):
    ma = {name: median(v) for name, v in a.items()}
    mc = {name: median(v) for name, v in c.items()}
    nop = ma["state.apply bench.nop (one test.nop)"]
    lines = ["## Node", "",
             f"`make bench` (bench/node_bench.py, {args.rounds} interleaved rounds, medians) on the simulated "
             "RHEL 8 node (tests/node: real Salt 3008, dnf, rpm, Podman with runc, stand-in NVIDIA tools), "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
             f"Machine: {machine()}, load average {load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end "
             "(the machine is shared: min..max show how much the load moved single runs). "
             "Each figure is a whole `salt-call --local` inside the node "
             "(its mount namespace included) unless it says otherwise.", "",
             "![node benchmark](benchmarks-node.svg)", "",
             "### (a) A converged highstate against one test.nop", "",
             "| run | median s | min..max | / nop (median of the rounds' ratios) |", "|---|---:|---:|---:|"]
    for name, values in a.items():
        lines.append(f"| {name} | {ma[name]:.3f} | {min(values):.3f}..{max(values):.3f} | "
                     f"{median([x / y for x, y in zip(values, a['state.apply bench.nop (one test.nop)'])]):.2f}x |")
    # The ratio of each round's two runs, then the median: a load that drifts during the
    # run moves both runs of a round alike.
    def paired(ours, base, data):
        return median([x / y for x, y in zip(data[ours], data[base])])

    ratio = paired("state.apply gpu (validate, when: changed)", "state.apply bench.nop (one test.nop)", a)
    changed = {sid: median(v) for sid, v in a_states["state.apply gpu (validate, when: changed)"].items()}
    in_states = sum(changed.values()) / 1000
    render = ma["state.show_sls gpu (rendering only)"] - ma["state.show_sls bench.nop (rendering only)"]
    extra = ma["state.apply gpu (validate, when: changed)"] - nop
    top = sorted(changed.items(), key=lambda kv: -kv[1])[:6]
    lines += ["", f"Target: at most 1.3x with validation on and `when: changed`: **{ratio:.2f}x, "
              f"{'met' if ratio <= 1.3 else 'missed'}**.", "",
              f"Where the converged run's extra {extra:.3f} s over one test.nop goes (medians): rendering the "
              f"formula (`state.show_sls gpu` minus `state.show_sls bench.nop`) {render:.3f} s; the states "
              f"themselves (sum of Salt's per-state durations) {in_states:.3f} s, the largest: "
              + ", ".join(f"{sid} {ms:.0f} ms" for sid, ms in top) + "; the rest (loading the state "
              f"modules they use, Salt's bookkeeping) {extra - render - in_states:.3f} s.", "",
              "### (b) Processes a converged re-run starts, by program", "",
              "strace -f -e trace=execve around salt-call; a process that execs again (setpriv, a wrapper) "
              "counts once, by its last program; \"(containers)\" counts the containers Podman started.", "",
              "| program | state.apply gpu | state.apply bench.nop |", "|---|---:|---:|"]
    for name in WATCHED:
        b.setdefault(name, [0, 0])
    order = sorted(b, key=lambda n: (n not in ("(containers)",) + WATCHED, -b[n][0], n))
    for name in order:
        lines.append(f"| {name} | {b[name][0]} | {b[name][1]} |")
    total = [sum(v[0] for n, v in b.items() if n != "(containers)"), sum(v[1] for n, v in b.items()
                                                                         if n != "(containers)")]
    lines += [f"| **all processes** | **{total[0]}** | **{total[1]}** |", "",
              "### (c) nvgpu.run_vector_add against a bare podman run of the same image", "",
              "Called through Salt's loader inside the node (no Salt start-up); mode cdi, same flags "
              "(`--rm --pull=missing --network=none`, rootless: the guide's flags).", "",
              "| run | median s | min..max |", "|---|---:|---:|"]
    for name, values in c.items():
        lines.append(f"| {name} | {mc[name]:.3f} | {min(values):.3f}..{max(values):.3f} |")
    root = paired("root: nvgpu.run_vector_add", "root: bare podman run", c)
    bare_rootless = mc["rootless: bare podman run (as the user, setpriv)"]
    rootless = mc["rootless: nvgpu.run_vector_add"]
    rootless_ratio = paired("rootless: nvgpu.run_vector_add", "rootless: bare podman run (as the user, setpriv)", c)
    rootless_extra = median([x - y for x, y in zip(c["rootless: nvgpu.run_vector_add"],
                                                   c["rootless: bare podman run (as the user, setpriv)"])])
    runas_extra = median([x - y for x, y in zip(c["rootless: the former way, Salt's runas"],
                                                c["rootless: bare podman run (as the user, setpriv)"])])
    rootless_ok = rootless <= 1.05 * bare_rootless + 0.05
    lines += ["", "Medians of the rounds' ratios and differences: "
              f"root **{root:.3f}x** bare (target <= 1.05x: {'met' if root <= 1.05 else 'missed'}); "
              f"rootless **{rootless_ratio:.3f}x**, {rootless_extra:+.3f} s "
              f"(target <= 1.05x + 0.05 s: {'met' if rootless_ok else 'missed'}); the former way, Salt's "
              f"runas: {runas_extra:+.3f} s over bare.", "",
              "### (d) A fresh converge, stage by stage", "",
              "| state.apply | s |", "|---|---:|"]
    for name, seconds in d.items():
        lines.append(f"| {name} | {seconds:.2f} |")
    lines += ["", "### (e) Peak RSS of salt-call", "", "| run | peak RSS MiB |", "|---|---:|"]
    for name, kib in e.items():
        lines.append(f"| {name} | {kib / 1024:.1f} |")
    bars = [(name.replace(" (one test.nop)", ""), ma[name]) for name in a] + [(name, mc[name]) for name in c]
    return "\n".join(lines) + "\n", svg(bars), {"a": ratio, "root": root, "rootless": rootless_ratio,
                                                 "rootless_extra_s": rootless_extra, "runas_extra_s": runas_extra}


def write_doc(text):
    """Replace (or add) the "## Node" section of docs/benchmarks.md, keeping the others."""
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nFigures measured by the benchmark scripts.\n"
    found = re.search(r"^## Node\n.*?(?=^## |\Z)", doc, flags=re.M | re.S)
    if found:
        doc = doc[:found.start()] + text + ("\n" if found.end() < len(doc) else "") + doc[found.end():]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    DOC.write_text(doc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md as it is")
    args = parser.parse_args()
    load = os.getloadavg()
    assets = build_assets()
    pillar = site_pillar(assets, rootless_users=[USER])
    print("(d) fresh converge, stage by stage ...", flush=True)
    d = fresh_converge(assets, pillar)
    node = Node.create(assets, name="bench")
    try:
        node.write_pillar(pillar)
        for _ in range(2):  # converge, then a run that records nothing new
            timed_run(node, salt_argv("state.apply", "gpu"))
        print("(a) converged vs one test.nop ...", flush=True)
        a, a_states = converged_vs_nop(node, args.rounds)
        print("(b) process counts ...", flush=True)
        b = process_counts(node)
        print("(c) vector add vs bare podman ...", flush=True)
        c = vector_add(node, args.rounds, assets.image)
        print("(e) peak RSS ...", flush=True)
        e = peak_rss(node)
    finally:
        node.destroy()
    text, plot, verdict = section(args, a, a_states, b, c, d, e, load)
    print(text)
    print(json.dumps(verdict))
    if not args.no_doc:
        write_doc(text)
        PLOT.write_text(plot)
        print(f"wrote {DOC.relative_to(REPO)} and {PLOT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
