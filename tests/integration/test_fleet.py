"""
A real salt-master and four real minions, each on its own simulated node with its own
pillar, driven the way the README's fleet section says, command for command:

- gpu-a: the 550-dkms stream and a rootless user, alice;
- gpu-b: the latest-dkms stream;
- gpu-c: latest-dkms, and a pillar that pins a toolkit version its mirror does not carry
  (nvidia-container-toolkit-1.18.0; the mirror has 1.17.8): its toolkit stage fails for
  real, in dnf, and the node is left without nvidia-ctk;
- gpu-d: accepted by the master, then stopped: it answers nothing.

The fleet converges once (the README's `salt 'gpu-*' state.apply gpu`); every test
reads that run and the reports that follow it. The last test repairs gpu-c.
"""

import json
import os
import shlex
import shutil
import subprocess
import time
import zlib
from types import SimpleNamespace

import pytest

from tests.integration.conftest import node_minion, write_pillar
from tests.node import REPO, site_pillar

pytestmark = pytest.mark.node

README_MARK = "tests/integration/test_fleet.py runs the commands of the next block as they are written."
PINNED = "nvidia-container-toolkit-1.18.0"
A100 = "NVIDIA A100-SXM4-80GB"  # the stand-in GPU (tests/node/standins/nvstandin)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--window-size=1100,1000"]


def readme_fleet_steps():
    """The command lines of the README block that follows README_MARK."""
    text = (REPO / "README.md").read_text()
    block = text[text.index(README_MARK):]
    block = block[block.index("```sh\n") + len("```sh\n"):]
    return [line for line in block[:block.index("```")].splitlines() if line.strip()]


def run_line(salt_master, line):
    """
    Run one `salt ...` or `salt-run ...` command line as written (comments dropped) through
    the factories' CLIs, which add only --config-dir, --out=json and a log level. `salt`
    gets --timeout set to the master's `timeout`, the value it uses when none is given (the
    factory would otherwise pass its own process timeout as Salt's).
    """
    argv = shlex.split(line, comments=True)
    if argv[0] == "salt-run":
        return salt_master.salt_run_cli(timeout=900).run(*argv[1:])
    assert argv[0] == "salt", line
    target = next(arg for arg in argv[1:] if not arg.startswith("-"))
    rest = argv[1:]
    rest.remove(target)
    cli = salt_master.salt_cli(timeout=900)
    return cli.run(f"--timeout={salt_master.config['timeout']}", *rest, minion_tgt=target)


@pytest.fixture(scope="module")
def fleet(salt_master, node_factory, node_assets, pillar_dir):
    pillars = {
        "gpu-a": site_pillar(node_assets, driver={"stream": "550-dkms"},
                             rootless_users=[{"name": "alice", "uid": 2101}]),
        "gpu-b": site_pillar(node_assets, driver={"stream": "latest-dkms"}),
        "gpu-c": site_pillar(node_assets, driver={"stream": "latest-dkms"}, toolkit={"package": PINNED}),
        "gpu-d": site_pillar(node_assets),
    }
    write_pillar(pillar_dir, pillars)
    minions = {name: node_minion(salt_master, node_factory(name), name) for name in pillars}
    for minion in minions.values():
        minion.start(start_timeout=120)
    minions["gpu-d"].terminate()
    yield SimpleNamespace(minions=minions, pillars=pillars)
    for minion in minions.values():
        minion.terminate()


@pytest.fixture(scope="module")
def steps(fleet, salt_master):
    """The README's fleet steps, run once as written: {command line: (result, seconds)}."""
    results = {}
    for line in readme_fleet_steps():
        started = time.monotonic()
        results[line] = (run_line(salt_master, line), time.monotonic() - started)
        print(f"{results[line][1]:6.1f} s  {line}")
    return results


def step(steps, command):
    """The result of the README step that is `command` (comments and quoting aside)."""
    (found,) = [result for line, (result, _) in steps.items()
                if shlex.split(line, comments=True) == shlex.split(command)]
    return found


def test_readme_fleet_steps_work_as_written(steps):
    assert [shlex.split(line, comments=True)[:3] for line in steps] == [
        ["salt", "gpu-*", "saltutil.sync_all"], ["salt-run", "saltutil.sync_all"], ["salt", "gpu-*", "state.apply"],
        ["salt", "gpu-*", "nvgpu.doctor"], ["salt-run", "nvgpu.report", "tgt=gpu-*"],
        ["salt-run", "nvgpu.report", "tgt=gpu-*"]]
    for line, (result, _) in steps.items():
        assert "is not available" not in result.stdout + result.stderr, line
    synced = step(steps, "salt 'gpu-*' saltutil.sync_all")
    for minion in ("gpu-a", "gpu-b", "gpu-c"):
        assert "modules.nvgpu" in synced.data[minion]["modules"]
    assert "runners.nvgpu" in step(steps, "salt-run saltutil.sync_all").data["runners"]
    # The tables of --out=nvgpu (the outputter is its own helper's; here: it ran, on these nodes).
    doctor = step(steps, "salt 'gpu-*' nvgpu.doctor --out=nvgpu").stdout
    assert "gpu-c" in doctor and "nvidia-ctk is not in PATH" in doctor
    report = step(steps, "salt-run nvgpu.report tgt='gpu-*' --out=nvgpu")
    assert report.returncode == 0 and "gpu-c" in report.stdout and "gpu-d" in report.stdout


def test_state_apply_across_the_fleet(steps):
    applied = step(steps, "salt 'gpu-*' state.apply gpu")
    assert applied.returncode != 0  # gpu-c failed, gpu-d did not return
    for minion in ("gpu-a", "gpu-b"):
        failed = {k: v["comment"] for k, v in applied.data[minion].items() if v["result"] is not True}
        assert not failed, (minion, failed)
        validations = [v["comment"] for k, v in applied.data[minion].items() if "vector_add" in k]
        assert validations and all("PASSED" in comment for comment in validations), validations
    alice = [v["comment"] for k, v in applied.data["gpu-a"].items() if "vector_add" in k and "alice" in k]
    assert alice and "PASSED" in alice[0]

    # gpu-c: the toolkit stage fails in dnf, and only what needs it fails after it.
    failed = {k.split("_|-")[1]: v["comment"] for k, v in applied.data["gpu-c"].items() if v["result"] is False}
    assert "gpu-toolkit-installed" in failed and PINNED in failed["gpu-toolkit-installed"], failed
    for sid, comment in failed.items():
        assert sid == "gpu-toolkit-installed" or comment.startswith("One or more requisite failed"), (sid, comment)
    assert "gpu-container-toolkit" in failed
    assert "gpu-d" not in applied.data or "did not return" in str(applied.data["gpu-d"])


def test_the_report_counts_groups_and_fixes(with_one_down, salt_master):
    report = with_one_down.report
    assert report["check"] == "doctor"
    assert report["summary"] == {"nodes": 4, "ok": 2, "failing": 1, "reboot_required": 0, "no_return": 1}
    # gpu-c's cause is the doctor's first failing check there, the fix names the pinned package.
    doctor = run_line(salt_master, "salt gpu-c nvgpu.doctor").data  # one minion: its return
    first = next(check for check in doctor["checks"] if check["status"] == "fail")
    assert (first["name"], first["layer"]) == ("toolkit", "toolkit")
    assert report["groups"] == [{"status": "failing", "layer": "toolkit", "check": "toolkit",
                                 "cause": first["evidence"], "fix": first["fix"], "count": 1, "nodes": ["gpu-c"]}]
    assert "nvidia-ctk is not in PATH" in first["evidence"] and PINNED in first["fix"]
    assert report["versions"] == [
        {"driver_version": "550.127.08", "stream": "550-dkms", "gpu_model": A100, "nodes": 1, "ok": 1,
         "failing": 0, "reboot_required": 0},
        {"driver_version": "580.105.08", "stream": "latest-dkms", "gpu_model": A100, "nodes": 2, "ok": 1,
         "failing": 1, "reboot_required": 0}]
    nodes = report["nodes"]
    assert {m: n["status"] for m, n in nodes.items()} == {
        "gpu-a": "ok", "gpu-b": "ok", "gpu-c": "failing", "gpu-d": "no_return"}
    assert nodes["gpu-d"]["cause"] == "the minion did not return"
    assert nodes["gpu-a"]["gpu_count"] == 1 and nodes["gpu-a"]["reboot_required"] is False


def test_vector_add_report_names_the_root_cause(steps):
    report = step(steps, "salt-run nvgpu.report tgt='gpu-*' check=vector_add users=True").data
    assert report["check"] == "vector_add"
    assert report["summary"] == {"nodes": 4, "ok": 2, "failing": 1, "reboot_required": 0, "no_return": 1}
    a, c = report["nodes"]["gpu-a"], report["nodes"]["gpu-c"]
    assert [(run["user"], run["passed"]) for run in a["runs"]] == [(None, True), ("alice", True)]
    assert [(run["user"], run["passed"]) for run in c["runs"]] == [(None, False)]
    # The container's symptom (Podman finds no CDI device) is kept; the cause is the root
    # cause, the layer the doctor finds broken first: no nvidia-ctk, since its package failed.
    assert "no CDI device" in c["symptom"]["cause"] and c["symptom"]["layer"] == "toolkit"
    assert (c["check"], c["layer"]) == ("toolkit", "toolkit")
    assert "nvidia-ctk is not in PATH" in c["cause"] and PINNED in c["fix"]
    assert [g["nodes"] for g in report["groups"]] == [["gpu-c"]]


def test_targeting_by_grains_and_pillar(steps, salt_master):
    # The formula read the grains again after loading the driver: the GPUs are there.
    by_model = run_line(salt_master, f"salt -G 'nvgpu:gpus:name:{A100}' test.ping")
    assert sorted(by_model.data) == ["gpu-a", "gpu-b", "gpu-c"]
    by_stream = run_line(salt_master, "salt -I 'gpu:driver:stream:550-dkms' test.ping")
    assert by_stream.data == {"gpu-a": True}
    waiting = run_line(salt_master, "salt -G 'nvgpu:reboot_required:True' test.ping")
    assert not waiting.data


@pytest.fixture(scope="module")
def with_one_down(steps, salt_master, tmp_path_factory):
    """test.ping and the report (with its page) timed with gpu-d stopped."""
    page = tmp_path_factory.mktemp("page") / "fleet.html"
    started = time.monotonic()
    ping = run_line(salt_master, "salt 'gpu-*' test.ping")
    ping_s = time.monotonic() - started
    started = time.monotonic()
    report = run_line(salt_master, f"salt-run nvgpu.report tgt='gpu-*' html={page}")
    report_s = time.monotonic() - started
    print(f"with gpu-d down: test.ping {ping_s:.1f} s, nvgpu.report {report_s:.1f} s")
    return SimpleNamespace(ping=ping, ping_s=ping_s, report=report.data, report_s=report_s, page=page)


def test_a_stopped_minion_is_no_return_in_bounded_time(with_one_down):
    assert sorted(with_one_down.ping.data) == ["gpu-a", "gpu-b", "gpu-c"] or \
        "did not return" in str(with_one_down.ping.data.get("gpu-d"))
    assert with_one_down.report["summary"]["no_return"] == 1
    assert with_one_down.report["nodes"]["gpu-d"]["status"] == "no_return"
    # Not a benchmark: a bound that tells "Salt's own wait for a silent minion, plus the
    # doctor" from a report that waits for the dead minion beyond Salt's timeout.
    assert with_one_down.report_s < with_one_down.ping_s + 30, (with_one_down.report_s, with_one_down.ping_s)


# ---------------------------------------------------------------------------- the page in Chromium


def chromium(*args, timeout=120):
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: make deps installs it (Makefile APT_PACKAGES)"
    return subprocess.run([binary, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=timeout)


def page_requests(path, netlog):
    """The network requests a page made while Chromium loaded it (from Chromium's NetLog:
    the URL requests whose network isolation key is the page's file:// origin; Chromium's
    own background requests have another)."""
    proc = chromium(f"--log-net-log={netlog}", "--dump-dom", path.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = [event["params"]["url"] for event in log["events"]
            if event["type"] == start_job and "file://" in event["params"].get("network_isolation_key", "")
            and not event["params"]["url"].startswith(("file:", "data:"))]
    return urls, proc.stdout


def png_pixels(path):
    """A PNG's decompressed image data (filter bytes included): enough to tell blank from drawn."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(idat)


def test_the_page_as_a_person_sees_it(with_one_down, tmp_path):
    page = with_one_down.page
    assert with_one_down.report["html"] == str(page)
    # The check below sees a page's external requests: a page with one is caught.
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://nvgpu-test.invalid/x.png"></body></html>')
    assert page_requests(control, tmp_path / "control-netlog.json")[0] == ["http://nvgpu-test.invalid/x.png"]

    requests, dom = page_requests(page, tmp_path / "netlog.json")
    assert requests == []
    # The summary first (2 ok, 1 failing, 1 no return), then the failing group, then the nodes.
    assert '<div class="card ok" id="count-ok"><b>2</b>' in dom
    assert '<div class="card failing" id="count-failing"><b>1</b>' in dom
    assert '<div class="card no_return" id="count-no_return"><b>1</b>' in dom
    failing = dom[dom.index('id="failing"'):dom.index('id="versions"')]
    assert "nvidia-ctk is not in PATH" in failing and "gpu-c" in failing and PINNED in failing
    assert dom.index('id="summary"') < dom.index('id="failing"') < dom.index('id="nodes"')
    assert "<svg" in dom

    screenshot = tmp_path / "fleet-report.png"
    proc = chromium(f"--screenshot={screenshot}", page.as_uri())
    assert proc.returncode == 0 and screenshot.exists(), proc.stderr[-2000:]
    pixels = png_pixels(screenshot)
    assert len(set(pixels)) > 50, "the screenshot is blank"
    keep = os.environ.get("NVGPU_FLEET_SCREENSHOT")
    if keep:  # how docs/fleet-report.png is made: NVGPU_FLEET_SCREENSHOT=docs/fleet-report.png
        shutil.copy(screenshot, keep)


# ---------------------------------------------------------------------------- the fix


def test_the_fix_repairs_the_failing_node(with_one_down, fleet, salt_master, pillar_dir, node_assets):
    # The report's fix for gpu-c names the pillar key: the site drops the pin.
    assert "gpu:toolkit:package" in with_one_down.report["nodes"]["gpu-c"]["fix"]
    write_pillar(pillar_dir, dict(fleet.pillars, **{"gpu-c": site_pillar(node_assets, driver={"stream": "latest-dkms"})}))
    assert run_line(salt_master, "salt gpu-c saltutil.refresh_pillar").returncode == 0
    applied = run_line(salt_master, "salt gpu-c state.apply gpu")
    assert applied.returncode == 0, applied.stdout[-3000:]
    report = run_line(salt_master, "salt-run nvgpu.report tgt='gpu-*'").data
    assert report["summary"] == {"nodes": 4, "ok": 3, "failing": 0, "reboot_required": 0, "no_return": 1}
    assert report["groups"] == []
