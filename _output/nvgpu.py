"""
Outputter ``nvgpu``: nvgpu's answers as tables a person reads at a glance.

.. code-block:: bash

    salt-call --out=nvgpu nvgpu.doctor
    salt '*' --out=nvgpu nvgpu.run_vector_add user=alice
    salt-run --out=nvgpu nvgpu.report

It knows three shapes: the doctor's (``nvgpu.doctor``, ``nvgpu_doctor.run``): one row per
check with its status, layer, evidence and fix, then the first failing layer; the vector
add's (``nvgpu.run_vector_add``, also ``runtime=host``): one line per run, the diagnosis
under a failure, a row per GPU where the run has them; and the fleet report's
(``salt-run nvgpu.report``). Anything else, and any minion whose answer is not one of
them, goes to Salt's ``nested`` outputter. ``--out=json`` and ``--out=yaml`` are
untouched: this only formats.

Colours follow Salt's ``color`` option (off when the output is not a terminal, or with
``--no-color``); long evidence is wrapped to the terminal's width on a failing or warning
check, and cut to one line on the others.
"""

import shutil
import textwrap
from collections.abc import Mapping

import salt.utils.color

__virtualname__ = "nvgpu"

# The narrowest text column that still reads as a sentence: below it the table grows
# wider than the terminal instead of breaking every word.
MIN_TEXT_WIDTH = 28
# Lines of a tool's own words kept under a failed run (the rest is in --out=json).
SAID_LINES = 3
GAP = "  "
# Skip is plain: a check that does not apply is neither good nor bad news.
STATUS_COLORS = {"ok": "GREEN", "fail": "LIGHT_RED", "warn": "LIGHT_YELLOW", "skip": None}


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------


def _is_doctor(value):
    return (isinstance(value, Mapping) and "ok" in value and isinstance(value.get("checks"), list)
            and all(isinstance(c, Mapping) and "status" in c for c in value["checks"]))


def _is_vector_add(value):
    return isinstance(value, Mapping) and "passed" in value and "command" in value


def _is_report(value):
    return isinstance(value, Mapping) and isinstance(value.get("summary"), Mapping) \
        and isinstance(value.get("nodes"), Mapping)


def _renderer(value):
    for test, render in ((_is_doctor, _doctor), (_is_vector_add, _vector_add)):
        if test(value):
            return render
    return None


# ---------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------


class _Style:
    """The colours of Salt's ``color`` option (empty strings when it is off)."""

    def __init__(self, colors):
        self.colors = colors

    def paint(self, text, color, width=0):
        """``text`` in ``color``, padded to ``width`` outside the colour codes."""
        pad = " " * max(0, width - len(text))
        code = self.colors.get(color, "")
        return f"{code}{text}{self.colors.get('ENDC', '') if code else ''}{pad}"


def _status_word(status):
    """A problem shouts (FAIL, WARN) so that it stands out without colours too."""
    return status.upper() if status in ("fail", "warn") else str(status)


def _one_line(text):
    return " ".join(str(text).split())


def _cut(text, width):
    text = _one_line(text)
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def _wrap(text, width, first="", rest=""):
    return textwrap.wrap(_one_line(text), width=max(width, len(first) + 8), initial_indent=first,
                         subsequent_indent=rest, break_on_hyphens=False) or [first.rstrip()]


def _table(style, rows, paint=0):
    """
    Rows of ``(cells, color, lines)``: the cells sized to their column's longest, the
    ``paint``-th in ``color``, then ``lines``, the last column's lines (fitted to the width
    ``_text_width`` gave). Returns the lines of the table.
    """
    fixed = [max(len(cells[i]) for cells, _, _ in rows) for i in range(len(rows[0][0]))]
    indent = " " * (sum(fixed) + len(GAP) * len(fixed))
    out = []
    for cells, color, lines in rows:
        head = "".join((style.paint(cell, color, w) if i == paint else cell.ljust(w)) + GAP
                       for i, (cell, w) in enumerate(zip(cells, fixed)))
        lines = lines or [""]
        out.append((head + lines[0]).rstrip())
        out.extend((indent + line).rstrip() for line in lines[1:])
    return out


def _text_width(width, *columns):
    """The width left for the last column after the fixed ones (each a list of strings)."""
    used = sum(max(len(c) for c in column) + len(GAP) for column in columns)
    return max(MIN_TEXT_WIDTH, width - used)


def _problem_lines(text_width, evidence, fix):
    lines = _wrap(evidence or "", text_width)
    if fix:
        lines += _wrap(fix, text_width, first="fix: ", rest="     ")
    return lines


# ---------------------------------------------------------------------------
# The doctor
# ---------------------------------------------------------------------------


def _doctor(style, minion, data, width):
    checks = data["checks"]
    header = ("STATUS", "LAYER", "CHECK")
    cells = [(_status_word(c.get("status")), str(c.get("layer") or "-"), str(c.get("name") or "-")) for c in checks]
    text_width = _text_width(width - 4, *zip(header, *cells))
    rows = [(header, None, ["EVIDENCE / FIX"])]
    for check, cell in zip(checks, cells):
        if check.get("status") in ("fail", "warn"):
            lines = _problem_lines(text_width, check.get("evidence"), check.get("fix"))
        else:
            lines = [_cut(check.get("evidence") or "", text_width)]
        rows.append((cell, STATUS_COLORS.get(check.get("status")), lines))

    counts = {status: sum(1 for c in checks if c.get("status") == status) for status in STATUS_COLORS}
    tally = ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no checks"
    first = next((c for c in checks if c.get("status") == "fail"), None)
    if data.get("ok"):
        word, after = "healthy", ""
    elif first is not None:
        word = f"FAILED at layer {data.get('first_failing_layer') or first.get('layer')}"
        after = f" (first failing check: {first.get('name')})"
    else:
        word, after = "FAILED", ""
    verdict = style.paint(word, "GREEN" if data.get("ok") else "LIGHT_RED") + after
    name = style.paint(str(minion), "CYAN")
    summary = [f"{name}: doctor: {verdict}; {tally}"]
    if len(f"{minion}: doctor: {word}{after}; {tally}") > width:
        # Too wide for the terminal: the counts go on a line of their own.
        summary = [f"{name}: doctor: {verdict};", f"    {tally}"]
    return [f"{name}:"] + ["    " + line for line in _table(style, rows)] + summary


# ---------------------------------------------------------------------------
# The vector add
# ---------------------------------------------------------------------------


def _said(run):
    """The tool's last words: the lines of stderr (else stdout) that say what went wrong."""
    text = (run.get("stderr") or "").strip() or (run.get("stdout") or "").strip()
    # Podman's progress lines come before the error and say nothing about it.
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith(("Trying to pull", "Getting image source", "Copying ",
                                                      "Writing manifest", "Storing signatures"))]
    return lines[-SAID_LINES:]


def _who(run):
    if run.get("mode") is None and (run.get("command") or [""])[0] == "cuda-driver-api":
        return "on the host (CUDA driver API, no container)"
    user = run.get("user")
    who = f"as {user} (rootless)" if user else "as root"
    return f"{who}, mode {run['mode']}" if run.get("mode") else who


def _run_line(style, run):
    passed = bool(run.get("passed"))
    verdict = style.paint("passed", "GREEN") if passed else style.paint("FAILED", "LIGHT_RED")
    facts = [_who(run)]
    if run.get("duration_s") is not None:
        facts.append(f"{run['duration_s']} s")
    if passed and run.get("elements"):
        facts.append(f"{run['elements']} elements, {run.get('blocks')} blocks of {run.get('threads')} threads")
    if not passed and run.get("retcode") not in (None, 0):
        facts.append(f"exit code {run['retcode']}")
    return f"vector add {verdict} {', '.join(facts)}"


def _diagnosis_lines(diagnosis, said, width):
    """Layer, cause, fix and the tool's words, as a small two-column table."""
    labeled = []
    if isinstance(diagnosis, Mapping):
        labeled += [(key, diagnosis[key]) for key in ("layer", "cause", "fix") if diagnosis.get(key)]
    labeled += [("said", line) for line in said]
    out = []
    for label, text in labeled:
        out += _wrap(text, width, first=f"{label:<5} ", rest=" " * 6)
    return out


def _gpu_rows(style, gpus, width):
    """One row per GPU of a per-GPU run: index, UUID, name, result, and why it failed."""
    header = ("GPU", "UUID", "NAME", "RESULT")
    cells = [(str(g.get("index", "-")), str(g.get("uuid") or "-"), str(g.get("name") or "-"),
              "passed" if g.get("passed") else "FAILED") for g in gpus]
    text_width = _text_width(width, *zip(header, *cells))
    rows = [(header, None, ["DIAGNOSIS"])]
    for gpu, cell in zip(gpus, cells):
        diagnosis = gpu.get("diagnosis") or {}
        lines = [] if gpu.get("passed") else _problem_lines(text_width, diagnosis.get("cause"), diagnosis.get("fix"))
        rows.append((cell, "GREEN" if gpu.get("passed") else "LIGHT_RED", lines))
    return _table(style, rows, paint=3)


def _vector_add(style, minion, run, width):
    lines = [f"{style.paint(str(minion), 'CYAN')}: {_run_line(style, run)}"]
    gpus = [g for g in run.get("gpus") or [] if isinstance(g, Mapping)]
    if gpus:
        lines += ["    " + line for line in _gpu_rows(style, gpus, width - 4)]
    if not run.get("passed") and not any(not g.get("passed") for g in gpus):
        lines += ["    " + line for line in _diagnosis_lines(run.get("diagnosis"), _said(run), width - 4)]
    return lines


# ---------------------------------------------------------------------------
# The fleet report
# ---------------------------------------------------------------------------


def _summary_line(summary):
    parts = [f"{value} {key.replace('_', ' ')}" for key, value in summary.items() if key != "nodes"]
    total = f"{summary['nodes']} nodes" if "nodes" in summary else "nodes"
    return f"{total}: {', '.join(parts)}" if parts else total


def _node_state(node):
    if node.get("passed"):
        return "passed", "GREEN"
    if "duration_s" not in node and node.get("cause") == "the minion did not return":
        return "NO RETURN", "LIGHT_YELLOW"
    return "FAILED", "LIGHT_RED"


def _report(style, report, width):
    lines = [f"fleet: {_summary_line(report['summary'])}"]
    nodes = {minion: node if isinstance(node, Mapping) else {"cause": str(node)}
             for minion, node in report["nodes"].items()}
    if not nodes:
        return lines
    header = ("NODE", "RESULT", "LAYER", "CHECK")
    states = {minion: _node_state(node) for minion, node in nodes.items()}
    cells = [(str(minion), states[minion][0], str(node.get("layer") or "-"), str(node.get("check") or "-"))
             for minion, node in nodes.items()]
    text_width = _text_width(width - 4, *zip(header, *cells))
    rows = [(header, None, ["CAUSE / FIX"])]
    for (minion, node), cell in zip(nodes.items(), cells):
        text = [] if node.get("passed") else _problem_lines(text_width, node.get("cause"), node.get("fix"))
        rows.append((cell, states[minion][1], text))
    return lines + ["    " + line for line in _table(style, rows, paint=1)]


# ---------------------------------------------------------------------------
# The outputter
# ---------------------------------------------------------------------------


def render(data, colors, width, nested):
    """
    The text for ``data`` (``{minion: return}``, or a fleet report), or None when it is
    none of nvgpu's shapes. ``colors``: ``salt.utils.color.get_colors``'s dict; ``width``:
    the terminal's columns; ``nested``: Salt's nested outputter, for a minion whose
    answer is something else (an error, another function's return).
    """
    style = _Style(colors)
    if _is_report(data):
        return "\n".join(_report(style, data, width))
    if not isinstance(data, Mapping) or not any(_renderer(v) for v in data.values()):
        return None
    blocks = []
    for minion, value in data.items():
        render_one = _renderer(value)
        blocks.append("\n".join(render_one(style, minion, value, width)) if render_one else nested({minion: value}))
    return "\n".join(blocks)


def output(data, **kwargs):
    """Print nvgpu's returns as tables; anything else as Salt's ``nested`` outputter does."""
    colors = salt.utils.color.get_colors(__opts__.get("color"), __opts__.get("color_theme"))

    def nested(value):
        return __salt__["nested"](value, **kwargs)

    text = render(data, colors, shutil.get_terminal_size().columns, nested)
    return nested(data) if text is None else text
