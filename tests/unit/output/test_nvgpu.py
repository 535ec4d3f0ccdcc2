"""
The ``nvgpu`` outputter (_output/nvgpu.py), loaded by Salt's own outputter loader (as
``--out=nvgpu`` loads it, with Salt's real ``nested`` next to it), fed the real returns
in ``returns/``: salt-call's JSON of nvgpu.doctor and nvgpu.run_vector_add on a simulated
node, healthy and with a stale CDI spec, and the fleet report built from them
(``capture_returns.py`` made them).
"""

import json
import pathlib
import re

import pytest
import salt.config
import salt.loader
import salt.utils.color

from tests.unit.loader import REPO

RETURNS = pathlib.Path(__file__).resolve().parent / "returns"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def real(name):
    return json.loads((RETURNS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def opts():
    opts = salt.config.minion_config(None)
    opts["outputter_dirs"] = [str(REPO / "_output")]
    return opts


def show(opts, data, color=False, width=100):
    """What ``--out=nvgpu`` prints for ``data`` on a terminal ``width`` columns wide."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", str(width))
        outputters = salt.loader.outputters(dict(opts, color=color))
        return outputters["nvgpu"](data)


def nested(opts, data):
    return salt.loader.outputters(dict(opts, color=False))["nested"](data)


def unwrapped(text):
    """The words of the text in order, whatever the line breaks and padding."""
    return " ".join(text.split())


def row(text, name):
    """The lines of the table row of check (or node) ``name``: its line and the continued ones."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(rf"\s{re.escape(name)}(\s|$)", line))
    indent = len(lines[start]) - len(lines[start].lstrip())
    follow = []
    for line in lines[start + 1:]:
        if len(line) - len(line.lstrip()) <= indent + 8:
            break
        follow.append(line)
    return [lines[start]] + follow


# ---------------------------------------------------------------------------- the doctor


@pytest.fixture(scope="module")
def stale():
    return real("doctor_stale_spec")


def test_the_failing_check_row(opts, stale):
    text = show(opts, {"local": stale})
    failing = next(c for c in stale["checks"] if c["status"] == "fail")
    lines = row(text, failing["name"])
    assert lines[0].split()[:3] == ["FAIL", failing["layer"], failing["name"]]
    words = unwrapped(" ".join(line.strip() for line in lines))
    # Wrapped, not cut: all of the evidence, then all of the fix.
    assert f"{failing['name']} {unwrapped(failing['evidence'])} fix: {unwrapped(failing['fix'])}" in words


def checks_table(text):
    """The doctor's lines from its table's head to the last check (the GPUs' table follows a blank line)."""
    lines = text.split("\n\n", 1)[0].splitlines()[1:]
    return lines[: next((i for i, line in enumerate(lines) if not line.startswith(" ")), len(lines))]


def gpu_tally(doctor):
    bad = sum(1 for gpu in doctor["gpus"] if not gpu["healthy"])
    return f"GPUs: {len(doctor['gpus']) - bad} ok" + (f", {bad} fail" if bad else "")


def test_every_check_has_a_row_in_order_with_its_status(opts, stale):
    text = show(opts, {"local": stale})
    assert text.splitlines()[0] == "local:"
    table = checks_table(text)
    assert table[0].split() == ["STATUS", "LAYER", "CHECK", "EVIDENCE", "/", "FIX"]
    starts = [line.split()[:3] for line in table[1:] if not line.startswith(" " * 12)]
    expected = [[c["status"].upper() if c["status"] in ("fail", "warn") else c["status"], c["layer"], c["name"]]
                for c in stale["checks"]]
    assert starts == expected


def test_the_summary_names_the_first_failing_layer_and_check_and_counts(opts, stale):
    summary = show(opts, {"local": stale}, width=200).splitlines()[-1]
    first = next(c for c in stale["checks"] if c["status"] == "fail")
    counts = {s: sum(1 for c in stale["checks"] if c["status"] == s) for s in ("ok", "fail", "warn", "skip")}
    assert summary.startswith(f"local: doctor: FAILED at layer {stale['first_failing_layer']} "
                              f"(first failing check: {first['name']}); ")
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    assert summary.endswith(f"; {tally}; {gpu_tally(stale)}") and counts["fail"] == 1


def test_a_summary_too_wide_for_the_terminal_puts_its_counts_on_a_line_of_their_own(opts, stale):
    one_line = show(opts, {"local": stale}, width=200).splitlines()[-1]
    lines = show(opts, {"local": stale}, width=len(one_line) - 1).splitlines()
    head, counts = one_line.split("; ", 1)
    assert lines[-2:] == [head + ";", "    " + counts]


def test_a_healthy_node(opts):
    healthy = real("doctor_healthy")
    text = show(opts, {"gpu-7": healthy})
    assert text.splitlines()[-1].startswith("gpu-7: doctor: healthy; ")
    assert "FAIL" not in text and "fix:" not in text
    assert len(checks_table(text)) == 1 + len(healthy["checks"])  # the table's head, a line per check
    gpus = text.split("\n\n", 1)[1].splitlines()[1:-1]
    assert [line.split()[:2] for line in gpus] == [[str(g["index"]), g["uuid"]] for g in healthy["gpus"]]
    assert all(line.endswith("  ok") for line in gpus)


@pytest.mark.parametrize("width", [80, 100, 160])
def test_fits_the_terminal_width(opts, stale, width):
    text = show(opts, {"local": stale}, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    ok = next(c for c in stale["checks"] if c["status"] == "ok" and len(c["evidence"]) > 60)
    line = row(text, ok["name"])
    # A passing check keeps to one line: its evidence cut short where it is too long.
    assert len(line) == 1
    assert line[0].endswith("...") == (line[0].index(ok["evidence"][:10]) + len(ok["evidence"]) > width)


def test_on_a_narrow_terminal_the_text_goes_under_its_row(opts, stale):
    text = show(opts, {"local": stale}, width=60)
    lines = text.splitlines()
    assert max(len(line) for line in checks_table(text)) <= 60
    failing = next(c for c in stale["checks"] if c["status"] == "fail")
    (at,) = [i for i, line in enumerate(lines) if line.split()[:3] == ["FAIL", failing["layer"], failing["name"]]]
    assert lines[at].rstrip().endswith(failing["name"])  # nothing beside it
    under = []
    for line in lines[at + 1:]:
        if not line.startswith(" " * 8):
            break
        under.append(line)
    assert f"{unwrapped(failing['evidence'])} fix: {unwrapped(failing['fix'])}" == unwrapped(" ".join(under))


def test_a_warning_is_shown_with_its_fix(opts, stale):
    warned = dict(stale, checks=[dict(c, status="warn", fix="dkms autoinstall -k 5.14.0-503") if c["name"] == "nvidia-ko"
                                 else c for c in stale["checks"]])
    lines = row(show(opts, {"local": warned}), "nvidia-ko")
    assert lines[0].split()[:3] == ["WARN", "driver", "nvidia-ko"]
    assert "fix: dkms autoinstall -k 5.14.0-503" in "\n".join(lines)


def test_colours_only_with_the_color_option(opts, stale):
    plain = show(opts, {"local": stale}, color=False)
    coloured = show(opts, {"local": stale}, color=True)
    assert "\x1b" not in plain
    assert ANSI.sub("", coloured) == plain
    colors = salt.utils.color.get_colors(True)
    red, green, end = colors["LIGHT_RED"], colors["GREEN"], colors["ENDC"]
    assert f"    {red}FAIL{end}    toolkit" in coloured
    assert f"    {green}ok{end}      driver" in coloured
    assert f"{red}FAILED at layer toolkit{end}" in coloured


# ---------------------------------------------------------------------------- the vector add


def test_vector_add_runs_root_and_rootless(opts):
    text = show(opts, {"gpu-1": real("vector_add_root"), "gpu-2": real("vector_add_rootless")})
    root, rootless = text.splitlines()
    assert root.startswith("gpu-1: vector add passed as root, mode cdi, ")
    assert root.endswith(" s, 50000 elements, 196 blocks of 256 threads")
    assert rootless.startswith("gpu-2: vector add passed as gpuuser (rootless), mode cdi, ")


def test_a_failed_run_shows_layer_cause_fix_and_the_tools_words(opts):
    run = real("vector_add_rootless_stale_spec")
    text = show(opts, {"local": run}, width=90)
    lines = text.splitlines()
    assert lines[0].startswith("local: vector add FAILED as gpuuser (rootless), mode cdi, ")
    assert lines[0].endswith(f"exit code {run['retcode']}")
    words = unwrapped(text)
    diagnosis = run["diagnosis"]
    assert f"layer {diagnosis['layer']} cause {unwrapped(diagnosis['cause'])} fix {unwrapped(diagnosis['fix'])} said " \
        in words
    assert unwrapped(run["stderr"].strip().splitlines()[-1]) in words
    assert max(len(line) for line in lines[1:]) <= 90


def test_podmans_pull_progress_is_not_what_it_said(opts):
    run = real("vector_add_rootless_stale_spec")
    run["stderr"] = "Trying to pull localhost:5000/nvgpu/cuda-vector-add:v0.1...\n" + run["stderr"]
    text = show(opts, {"local": run})
    assert "Trying to pull" not in text and "runc create failed" in text


def test_the_host_run(opts):
    run = real("vector_add_host")
    first = show(opts, {"local": run}).splitlines()[0]
    assert first.startswith("local: vector add FAILED on the host (CUDA driver API, no container), ")


def gpu_word(line, gpu):
    """A GPU row's result: after its index, UUID and name."""
    return line.split()[2 + len(gpu["name"].split())]


def test_a_row_per_gpu(opts):
    run = real("vector_add_each_gpu_ecc")  # 8 GPUs, GPU 3 with an uncorrectable ECC error
    text = show(opts, {"local": run}, width=140)
    lines = text.splitlines()
    assert lines[0] == f"local: vector add FAILED as root, mode cdi, {run['duration_s']} s"
    for gpu in run["gpus"]:
        (line,) = [line for line in lines if gpu["uuid"] in line]
        assert line.split()[:2] == [str(gpu["index"]), gpu["uuid"]] and gpu["name"] in line
        assert gpu_word(line, gpu) == ("passed" if gpu["passed"] else "FAILED")
    (failed,) = run["failed_gpus"]
    assert [gpu["index"] for gpu in run["gpus"] if not gpu["passed"]] == [failed["index"]] == [3]
    assert f"{unwrapped(failed['cause'])} fix: {unwrapped(failed['fix'])}" in unwrapped(text)
    # Under its GPU, not again under the run (the run's diagnosis repeats it).
    assert unwrapped(text).count(unwrapped(failed["cause"])) == 1


def test_the_doctors_gpus(opts):
    doctor = real("doctor_gpu_ecc")  # the same machine
    # 100 columns: too narrow for the causes beside the UUIDs and names, so they go under the row.
    text = show(opts, {"local": doctor}, width=100)
    gpus = text.split("\n\n", 1)[1].splitlines()
    (bad,) = [gpu for gpu in doctor["gpus"] if not gpu["healthy"]]
    for gpu in doctor["gpus"]:
        (line,) = [line for line in gpus if gpu["uuid"] in line]
        assert line.split()[-1] == gpu_word(line, gpu) == ("ok" if gpu["healthy"] else "FAIL")
    at = next(i for i, line in enumerate(gpus) if bad["uuid"] in line)
    under = unwrapped(" ".join(line for line in gpus[at + 1:-1] if line.startswith(" " * 8)))
    causes = [f"{c['check']}: {c['cause']}" for c in bad["causes"]]
    fixes = list(dict.fromkeys(c["fix"] for c in bad["causes"]))
    assert len(bad["causes"]) > len(fixes) == 1  # one fix for the three causes: said once
    assert under == " ".join(unwrapped(c) for c in causes) + f" fix: {unwrapped(fixes[0])}"
    assert text.splitlines()[-1].endswith(f"; {gpu_tally(doctor)}") and gpu_tally(doctor) == "GPUs: 7 ok, 1 fail"


def test_a_gpu_off_the_bus_is_named_by_its_pci_address(opts):
    doctor = real("doctor_gpu_off_bus")
    (lost,) = [gpu for gpu in doctor["gpus"] if gpu["index"] is None]
    text = show(opts, {"local": doctor}, width=140)
    (line,) = [line for line in text.splitlines() if f"PCI {lost['pci']}" in line]
    assert line.split()[:5] == ["-", "PCI", lost["pci"], "-", "FAIL"]
    assert f"gpus-on-bus: {lost['causes'][0]['cause']}"[:30] in line


def test_long_evidence_is_clipped_and_the_fix_kept_whole(opts):
    doctor = real("doctor_gpu_ecc")
    memory = next(c for c in doctor["checks"] if c["name"] == "gpu-memory")
    text = show(opts, {"local": doctor}, width=100)
    lines = row(text, "gpu-memory")
    evidence = [line for line in lines if "fix:" not in line]
    evidence = evidence[: next((i for i, line in enumerate(lines) if "fix:" in line), len(lines))]
    assert len(evidence) == 6 and evidence[-1].endswith(" ...")
    assert unwrapped(" ".join(evidence))[len("FAIL gpu gpu-memory "):-4] in unwrapped(memory["evidence"])
    fix = unwrapped(" ".join(lines[len(evidence):]))
    assert fix == f"fix: {unwrapped(memory['fix'])}"



# ---------------------------------------------------------------------------- the fleet report


def test_the_reports_summary_and_failing_groups(opts):
    report = real("report")
    text = show(opts, report, width=120)
    summary = report["summary"]
    assert text.splitlines()[0] == (
        f"fleet report ({report['check']}, {report['duration_s']} s): {summary['nodes']} nodes: {summary['ok']} ok, "
        f"{summary['failing']} failing, {summary['reboot_required']} reboot required, {summary['no_return']} no return")
    section = text.split("\nfailing:\n", 1)[1].split("\n\n", 1)[0]
    assert section.splitlines()[0].split() == ["STATUS", "LAYER", "CHECK", "NODES", "CAUSE", "/", "FIX", "/", "NODES"]
    assert {group["status"] for group in report["groups"]} == {"failing", "reboot_required"}
    for group in report["groups"]:
        lines = row(section, group["check"])
        word = {"failing": "FAILING", "reboot_required": "REBOOT"}[group["status"]]
        assert lines[0].split()[:4] == [word, group["layer"], group["check"], str(group["count"])]
        words = unwrapped(" ".join(lines))
        # The cause (clipped where long), then the whole fix, then the group's nodes.
        assert words.index(unwrapped(group["cause"])[:60]) < words.index(f"fix: {unwrapped(group['fix'])} on: ")
        assert words.endswith(f"fix: {unwrapped(group['fix'])} on: {', '.join(group['nodes'])}")


def test_the_reports_failing_gpus(opts):
    report = real("report")
    assert report["gpu_groups"]
    section = show(opts, report, width=120).split("\nfailing GPUs:\n", 1)[1].split("\n\n", 1)[0]
    words = unwrapped(section)
    assert words.startswith("LAYER CHECK GPUS CAUSE / FIX / GPUS ")
    for group in report["gpu_groups"]:
        where = ", ".join(f"{gpu['node']} GPU {gpu['index']} ({gpu['uuid']})" for gpu in group["gpus"])
        assert (f"{group['layer']} {group['check'] or '-'} {group['count']} {unwrapped(group['cause'])} "
                f"fix: {unwrapped(group['fix'])} on: {where}") in words


def test_the_reports_drivers_and_nodes(opts):
    report = real("report")
    text = show(opts, report, width=120)
    drivers = text.split("\ndrivers:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert drivers[0].split()[:3] == ["DRIVER", "STREAM", "GPU"]
    for version, line in zip(report["versions"], drivers[1:]):
        assert line.split()[:2] == [version["driver_version"], version["stream"]]
        assert version["gpu_model"] in line
        assert line.split()[-4:] == [str(version[k]) for k in ("nodes", "ok", "failing", "reboot_required")]
    nodes = text.split("\nnodes:\n", 1)[1].splitlines()
    assert len(nodes) == 1 + len(report["nodes"])  # one line per node
    words = {"ok": "ok", "failing": "FAILING", "reboot_required": "REBOOT", "no_return": "NO RETURN"}
    assert {node["status"] for node in report["nodes"].values()} == set(words)
    for minion, node in report["nodes"].items():
        (line,) = [line for line in nodes if line.split()[0] == minion]
        assert line.split(None, 1)[1].startswith(words[node["status"]])
        if node["status"] in ("failing", "no_return"):
            where = "/".join(part for part in (node["layer"], node["check"]) if part)
            assert f"{where}: {node['cause']}"[:30] in line
    assert len(max(nodes, key=len)) <= 120



# ---------------------------------------------------------------------------- anything else


@pytest.mark.parametrize("data", [
    {"local": True},
    {"local": {"kernelrelease": "4.18.0"}},
    {"local": ["a", "b"]},
    "a string",
    {"summary": "not a report"},
])
def test_other_data_is_printed_as_nested_prints_it(opts, data):
    assert show(opts, data) == nested(opts, data)


def test_a_minion_that_did_not_run_it_is_printed_as_nested_next_to_the_others(opts):
    error = "'nvgpu.doctor' is not available."
    text = show(opts, {"gpu-1": real("doctor_healthy"), "gpu-2": error})
    assert text.endswith(nested(opts, {"gpu-2": error}))
    assert "gpu-1: doctor: healthy" in text
