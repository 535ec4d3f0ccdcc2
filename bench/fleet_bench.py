"""
What the fleet report costs next to the cheapest thing a master can ask: `salt-run
nvgpu.report` (the doctor on every node, one job) against `salt -L ... test.ping`, on the
same master, for 1, 2, 4, 8 and 16 minions.

One real salt-master on this machine and 16 real salt-minions, each inside its own
simulated RHEL 8 node (tests/node). The nodes are not converged (no driver, no Podman):
the doctor runs every check there all the same (read-only: rpm, /sys, files, semodule),
fails at the driver layer, and returns its full list of checks, so its cost and return
size are a real node's; only the vector add (check=vector_add) needs a converged node,
and it is not measured here (it is the image pull and a container, see docs/gpu.md).

Both commands are run as a person runs them (a CLI process each, start-up included),
interleaved (per round, every size, the two in alternating order), with a median over
the rounds; the ratio is report / ping. The figures, a table and an SVG plot go into
docs/benchmarks.md under "## Fleet" (other sections of that file are kept).

Run as root (the nodes need mount namespaces), nothing else using ports 44505/44506:
    .venv/bin/python bench/fleet_bench.py [--sizes 1,2,4,8,16] [--rounds 5] [--no-write]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.node import HOME, KERNEL_RELEASE, Node, build_assets  # noqa: E402

BIN = Path(sys.executable).parent
WORK = HOME / "fleet-bench"
PUBLISH_PORT, RET_PORT = 44505, 44506
DOC = REPO / "docs" / "benchmarks.md"
PLOT = REPO / "docs" / "fleet-bench.svg"


def write_config(path, config):
    path.mkdir(parents=True, exist_ok=True)
    (path / ("master" if "open_mode" in config else "minion")).write_text(yaml.safe_dump(config))


def start_master():
    conf = WORK / "master"
    write_config(conf, {
        "root_dir": str(conf), "interface": "127.0.0.1", "publish_port": PUBLISH_PORT, "ret_port": RET_PORT,
        "open_mode": True, "auto_accept": True, "user": "root",
        "file_roots": {"base": [str(REPO / "salt"), str(REPO)]}, "log_level_logfile": "warning",
    })
    return conf, subprocess.Popen([str(BIN / "salt-master"), "-c", str(conf), "-l", "quiet"],
                                  start_new_session=True)


def start_minion(node, minion_id):
    conf = WORK / "minions" / minion_id
    write_config(conf, {
        "id": minion_id, "root_dir": str(conf), "master": "127.0.0.1", "master_port": RET_PORT,
        "publish_port": PUBLISH_PORT, "user": "root", "grains": {"kernelrelease": KERNEL_RELEASE},
        "log_level_logfile": "warning", "acceptance_wait_time": 1, "random_reauth_delay": 0,
    })
    argv = node.command_prefix() + [str(BIN / "salt-minion"), "-c", str(conf), "-l", "quiet"]
    return subprocess.Popen(argv, start_new_session=True)


def cli(master_conf, *argv, timeout=600):
    """Run a Salt CLI with the bench master's config: (seconds, parsed JSON or None, process)."""
    started = time.perf_counter()
    proc = subprocess.run([str(BIN / argv[0]), "-c", str(master_conf), "--out=json", "--out-indent=-1",
                           *argv[1:]], capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    try:
        data = json.loads(proc.stdout.replace("}\n{", ", ")) if proc.stdout.strip() else None
    except ValueError:
        data = None
    return seconds, data, proc


def wait_for(master_conf, ids, limit=600):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, data, _ = cli(master_conf, "salt", "-L", ",".join(ids), "test.ping", "--timeout=5")
        if isinstance(data, dict) and all(data.get(i) is True for i in ids):
            return
        time.sleep(2)
    raise SystemExit(f"minions did not come up in {limit} s: {ids}")


def minions_cpu():
    """CPU seconds the bench's minions have used, their finished jobs and commands included:
    utime+stime+cutime+cstime of every salt-minion process of this bench (a job's process
    and what it ran count in its parent's c-times once reaped)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"salt-minion" not in cmdline or str(WORK).encode() not in cmdline:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])
    return total / ticks


def measure(master_conf, ids, sizes, rounds):
    """{size: {"ping": [s], "report": [s], "report_own": [s], "bytes": [n], "ping_cpu": [s],
    "report_cpu": [s]}} over interleaved rounds."""
    results = {n: {"ping": [], "report": [], "report_own": [], "bytes": [], "ping_cpu": [], "report_cpu": []}
               for n in sizes}
    for r in range(rounds):
        for n in sizes:
            target = ",".join(ids[:n])
            order = ("ping", "report") if r % 2 == 0 else ("report", "ping")
            for what in order:
                cpu = minions_cpu()
                if what == "ping":
                    seconds, data, proc = cli(master_conf, "salt", "-L", target, "test.ping")
                    assert isinstance(data, dict) and len(data) == n, proc.stdout[-500:] + proc.stderr[-500:]
                else:
                    seconds, data, proc = cli(master_conf, "salt-run", "nvgpu.report", f"tgt={target}",
                                              "tgt_type=list")
                    assert isinstance(data, dict) and data["summary"]["nodes"] == n, proc.stdout[-800:]
                    assert data["summary"]["no_return"] == 0, data["summary"]
                    results[n]["report_own"].append(data["duration_s"])
                    results[n]["bytes"].append(len(json.dumps(data)))
                results[n][what].append(seconds)
                time.sleep(1)  # the minions reap the job's process: its CPU reaches the parent
                results[n][f"{what}_cpu"].append(minions_cpu() - cpu)
            print(f"round {r + 1}/{rounds} n={n:2d}: ping {results[n]['ping'][-1]:.2f} s, "
                  f"report {results[n]['report'][-1]:.2f} s", flush=True)
    return results


def doctor_return_bytes(master_conf, minion_id):
    _, data, _ = cli(master_conf, "salt", minion_id, "nvgpu.doctor")
    return len(json.dumps(data[minion_id]))


def svg_plot(rows):
    """Medians of both commands (left axis, seconds) against minions, and the ratio as labels."""
    width, height, left, bottom, top, right = 560, 300, 50, 40, 20, 20
    xs = [row["n"] for row in rows]
    ymax = max(max(row["report"], row["ping"]) for row in rows) * 1.15
    span = max(xs) - min(xs) or 1

    def px(n):
        return left + (n - min(xs)) / span * (width - left - right)

    def py(seconds):
        return height - bottom - seconds / ymax * (height - bottom - top)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="#fff"/>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#333"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>']
    for i in range(6):
        value = ymax * i / 5
        out.append(f'<text x="{left - 6}" y="{py(value) + 4:.1f}" text-anchor="end">{value:.1f}</text>'
                   f'<line x1="{left}" y1="{py(value):.1f}" x2="{width - right}" y2="{py(value):.1f}" '
                   f'stroke="#eee"/>')
    for n in xs:
        out.append(f'<text x="{px(n):.1f}" y="{height - bottom + 15}" text-anchor="middle">{n}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">minions</text>')
    out.append(f'<text x="12" y="{top + 90}" transform="rotate(-90 12 {top + 90})">seconds (median)</text>')
    for key, color in (("ping", "#1565c0"), ("report", "#c62828")):
        points = " ".join(f"{px(row['n']):.1f},{py(row[key]):.1f}" for row in rows)
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{px(row["n"]):.1f}" cy="{py(row[key]):.1f}" r="3" fill="{color}"/>' for row in rows]
    for row in rows:
        out.append(f'<text x="{px(row["n"]):.1f}" y="{py(row["report"]) - 8:.1f}" text-anchor="middle" '
                   f'fill="#c62828">{row["ratio"]:.2f}x</text>')
    x, y = width - right - 230, height - bottom - 40   # lower right: below both lines
    for color, label in (("#1565c0", "salt -L ... test.ping"), ("#c62828", "salt-run nvgpu.report (ratio above)")):
        out.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{x + 16}" y="{y + 9}">{label}</text>')
        y += 16
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_doc(section):
    """Replace the "## Fleet" section of docs/benchmarks.md (up to the next "## "), keep the rest."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    start = text.find("\n## Fleet\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start + 1] + section + ("" if end < 0 else "\n" + text[end + 1:])
    DOC.write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ as they are")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    ids = [f"bench-{i:02d}" for i in range(1, max(sizes) + 1)]

    shutil.rmtree(WORK, ignore_errors=True)
    assets = build_assets()
    nodes = [Node.create(assets, name=minion_id) for minion_id in ids]
    procs = []
    try:
        master_conf, master = start_master()
        procs.append(master)
        time.sleep(3)
        procs += [start_minion(node, minion_id) for node, minion_id in zip(nodes, ids)]
        wait_for(master_conf, ids)
        _, synced, proc = cli(master_conf, "salt", "-L", ",".join(ids), "saltutil.sync_all")
        assert synced and all("modules.nvgpu" in synced[i]["modules"] for i in ids), proc.stdout[-800:]
        _, synced, _ = cli(master_conf, "salt-run", "saltutil.sync_all")
        assert "runners.nvgpu" in synced["runners"]
        # Warm-up: the first call of each loads modules on the master and the minions.
        cli(master_conf, "salt-run", "nvgpu.report", f"tgt={','.join(ids)}", "tgt_type=list")
        doctor_bytes = doctor_return_bytes(master_conf, ids[0])
        started = time.time()
        results = measure(master_conf, ids, sizes, args.rounds)
        took = time.time() - started
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for node in nodes:
            node.destroy()

    rows = []
    for n in sizes:
        ping, report = statistics.median(results[n]["ping"]), statistics.median(results[n]["report"])
        rows.append({"n": n, "ping": ping, "report": report, "ratio": report / ping,
                     "own": statistics.median(results[n]["report_own"]),
                     "ping_cpu": statistics.median(results[n]["ping_cpu"]),
                     "report_cpu": statistics.median(results[n]["report_cpu"]),
                     "bytes": int(statistics.median(results[n]["bytes"]))})
    table = ["| minions | `test.ping` (s) | `nvgpu.report` (s) | ratio | report minus ping (s) | "
             "report's own time (s) | minions' CPU, ping / report (s) | report JSON (bytes) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    table += [f"| {r['n']} | {r['ping']:.2f} | {r['report']:.2f} | {r['ratio']:.2f} | {r['report'] - r['ping']:.2f} "
              f"| {r['own']:.2f} | {r['ping_cpu']:.2f} / {r['report_cpu']:.2f} | {r['bytes']} |" for r in rows]
    print("\n".join(table))
    print(f"one node's nvgpu.doctor return: {doctor_bytes} bytes of JSON; measuring took {took:.0f} s")
    if args.no_write:
        return
    PLOT.write_text(svg_plot(rows))
    write_doc(fleet_section(rows, table, doctor_bytes, args.rounds, took))
    print(f"wrote {DOC.relative_to(REPO)} and {PLOT.relative_to(REPO)}")


def fleet_section(rows, table, doctor_bytes, rounds, took):
    cores = os.cpu_count()
    first, last = rows[0], rows[-1]
    extra = last["report_cpu"] - last["ping_cpu"]
    return f"""## Fleet

`bench/fleet_bench.py`: `salt-run nvgpu.report` (check=doctor, the default) against
`salt -L ... test.ping` on the same master, for {", ".join(str(r["n"]) for r in rows)} minions; each minion
inside its own simulated RHEL 8 node, not converged (the doctor runs all its checks there
and fails at the driver layer: its cost and return size are a real node's). Each figure is
the median of {rounds} interleaved rounds of a whole CLI call (process start-up included), on
this machine ({cores} CPU cores, shared with other work while it ran; {took:.0f} s of measuring).

{chr(10).join(table)}

![nvgpu.report and test.ping against the number of minions](fleet-bench.svg)

One node's `nvgpu.doctor` return is {doctor_bytes} bytes of JSON. From {first["n"]} to {last["n"]} minions
`test.ping` went from {first["ping"]:.2f} s to {last["ping"]:.2f} s and the report from {first["report"]:.2f} s
to {last["report"]:.2f} s: the ratio from {first["ratio"]:.2f} to {last["ratio"]:.2f}. What the report adds
over `test.ping` grows with the minions here for a reason of this machine, measured in the
minions' CPU column (every bench minion's CPU over the call, their idle ticking included,
which `test.ping`'s figure shows): at {last["n"]} minions one report costs them {extra:.2f} s of CPU more
than `test.ping` ({extra / last["n"]:.2f} s per node: the doctor's commands, rpm, semodule, its job
process), and all {last["n"]} simulated nodes share this machine's {cores} cores, so their doctors
queue for at least {extra / cores:.2f} s. On a fleet each node's doctor runs on that node's own
CPU, and what remains of the growth is the master's side: the publish and {last["n"]} returns of a
few kB each.

{PROJECTION}"""


PROJECTION = """### Past this machine: 1,000 and 10,000 minions (on paper)

What a report costs at scale is three things, and each has a knob:

- **The master's event bus and its return processing.** Every return is one message the
  master decrypts, deserialises, writes to its job cache and puts on the event bus, where the
  runner's LocalClient picks it up. `test.ping` pays the same per-minion cost; what differs
  is the size of each return and how many jobs the report publishes. The doctor's report is
  **one job** (facts and doctor together, a multi-function job) and the minions answer at
  once: at 1,000 minions that is 1,000 returns of a few kB arriving within about the doctor's
  time (~1 s), well within what one master's worker threads (`worker_threads`, default 5,
  raise to 16-32 for big fleets) process; at 10,000 the burst of returns is what the master
  feels first, as with any `salt '*'` job. Past a few thousand minions per master, Salt's
  answer is **syndic**: each syndic master runs the job for its share and forwards the
  returns; the runner on the master of masters sees the same returns, so `nvgpu.report`
  needs no change. `batch=10%` (or an absolute number) also spreads the doctor's returns
  over time where the master is short of CPU.
- **Return size.** The doctor's return is the list of its checks with their evidence
  (measured above, a few kB per node); the report keeps per node only the first failing
  check, and per group the nodes' names. At 10,000 nodes that is tens of MB through the
  master for the doctor, and a report of a few MB (dominated by the per-node rows, which a
  page or `--out=json` user wants). The vector add's return (stdout, stderr, the command) is
  of the same order.
- **The registry.** `check=vector_add` pulls the validation image on nodes that lack it:
  at 1,000 nodes at once, 1,000 pulls of the same layers from one registry. That is why it
  runs in Salt batches of 10% by default (100 nodes at a time at 1,000, 1,000 at 10,000:
  pass `batch=200` to cap it in absolute numbers), why the image comes from each node's
  pillar `gpu:validate:image` (a site's own mirror), and why the default check is the
  doctor, which pulls nothing. After the first run the image is local (`pull=missing`) and
  a vector add costs a container start.

The report waits for a silent minion only as long as Salt does (`timeout`, then its job
check, `gather_job_timeout`): one dead node among thousands costs those seconds once, not a
wait per node.
"""


if __name__ == "__main__":
    main()
