"""
Outputter ``nvgpu``: nvgpu's answers as tables a person reads at a glance.

.. code-block:: bash

    salt-call --out=nvgpu nvgpu.doctor
    salt '*' --out=nvgpu nvgpu.run_vector_add user=alice
    salt-run --out=nvgpu nvgpu.report

It knows three shapes. The doctor's (``nvgpu.doctor``, ``nvgpu_doctor.run``): a row per
check (status, layer, check, evidence, fix), a row per GPU where it checked them, and a
summary naming the first failing layer. The vector add's (``nvgpu.run_vector_add``, also
``runtime=host``): a line per run, root or rootless, with the layer, cause, fix and the
tool's own words under a failure, and a row per GPU with ``gpus=each``. The fleet
report's (``salt-run nvgpu.report``): the counts, the failing groups with their fix,
driver x stream x GPU model, and a line per node. Anything else, and any minion whose
answer is none of them (an error, another function), goes to Salt's ``nested``
outputter. ``--out=json`` and ``--out=yaml`` are untouched: this only formats.

Colours follow Salt's ``color`` option (off when the output is not a terminal, or with
``--no-color``); long evidence is wrapped to the terminal's width on a failing or warning
check, and cut to one line on the others.
"""

import shutil
import textwrap
from collections.abc import Mapping

import salt.utils.color

__virtualname__ = "nvgpu"

# The narrowest text column that still reads as a sentence: on a terminal too narrow for
# it next to the other columns, the text goes under its row instead.
MIN_TEXT_WIDTH = 28
# Every table sits under its heading (the minion, a report section) by this much.
INDENT = "    "
# Lines of a tool's own words kept under a failed run, and lines of a problem's evidence
# or of a group's node list: enough to read what is wrong, not a page per GPU (the rest
# is in --out=json; the fix is always whole).
SAID_LINES = 3
CLIP_LINES = 6
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
    # One run has its command; a run per GPU (gpus=each) its GPUs.
    return isinstance(value, Mapping) and "passed" in value and ("command" in value or isinstance(value.get("gpus"), list))


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


def _wrap(text, width, first=""):
    """``text`` wrapped to ``width``, the first line led by ``first``, the others indented as far."""
    return textwrap.wrap(_one_line(text), width=max(width, len(first) + 8), initial_indent=first,
                         subsequent_indent=" " * len(first), break_on_hyphens=False) or [first.rstrip()]


def _clip(lines):
    """At most ``CLIP_LINES`` lines, the last one saying that there was more."""
    if len(lines) <= CLIP_LINES:
        return lines
    return lines[: CLIP_LINES - 1] + [lines[CLIP_LINES - 1].rstrip(" .;,") + " ..."]


def _problem(causes, fixes, nodes=None):
    """
    A row's text parts for a problem: its cause or causes (each clipped), each distinct
    fix after ``fix:`` and, for a group, after ``on:`` where.
    """
    causes = [causes] if isinstance(causes, str) or causes is None else causes
    fixes = [fixes] if isinstance(fixes, str) or fixes is None else fixes
    parts = [("clip", "", cause or "") for cause in causes]
    parts += [("wrap", "fix: ", fix) for fix in dict.fromkeys(fixes) if fix]
    if nodes:
        parts.append(("clip", "on: ", nodes))
    return parts


def _table(style, header, label, rows, width, paint=0):
    """
    The lines of a table ``width`` columns wide, indented by ``INDENT``: ``header`` (the
    column names) and ``label`` (the last column's), then ``rows`` of ``(cells, color,
    parts)``. Cells are sized to their column's longest, the ``paint``-th in ``color``; the
    last column holds ``parts``, each ``(how, lead, text)``: ``cut`` to one line, or
    ``wrap`` (``clip``: to at most ``CLIP_LINES``) under its ``lead`` (``fix: ``), in what
    the cells leave of the width; where that is less than ``MIN_TEXT_WIDTH``, under the
    row instead.
    """
    fixed = [max(len(cells[i]) for cells in [header] + [row[0] for row in rows]) for i in range(len(header))]
    used = len(INDENT) + sum(fixed) + len(GAP) * len(fixed)
    stacked = width - used < MIN_TEXT_WIDTH
    text_width = width - len(INDENT) * 2 if stacked else width - used
    text_indent = INDENT * 2 if stacked else " " * used

    def cells_line(cells, color, paint):
        return INDENT + "".join((style.paint(cell, color, w) if i == paint else cell.ljust(w)) + GAP
                                for i, (cell, w) in enumerate(zip(cells, fixed)))

    out = [(cells_line(header, None, None) + ("" if stacked else label)).rstrip()]
    for cells, color, parts in rows:
        lines = []
        for how, lead, text in parts:
            if how == "cut":
                lines.append(_cut(text, text_width))
            else:
                wrapped = _wrap(text, text_width, lead)
                lines += _clip(wrapped) if how == "clip" else wrapped
        head = cells_line(cells, color, paint)
        if stacked or not lines:
            out.append(head.rstrip())
        else:
            out.append((head + lines.pop(0)).rstrip())
        out.extend((text_indent + line).rstrip() for line in lines)
    return out


def _gpu_table(style, gpus, width, words, problems):
    """
    A row per GPU: index, UUID (the PCI address of a GPU the driver does not see), name,
    its word from ``words`` (``(word, good)`` per GPU), and under a bad one its
    ``problems(gpu)``, ``(cause, fix)`` pairs: each cause, then each distinct fix once.
    """
    rows = []
    for gpu, (word, good) in zip(gpus, words):
        cells = (str("-" if gpu.get("index") is None else gpu["index"]),
                 str(gpu.get("uuid") or (f"PCI {gpu['pci']}" if gpu.get("pci") else "-")),
                 str(gpu.get("name") or "-"), word)
        found = [] if good else problems(gpu)
        parts = _problem([cause for cause, _ in found], [fix for _, fix in found]) if found else []
        rows.append((cells, "GREEN" if good else "LIGHT_RED", parts))
    return _table(style, ("GPU", "UUID", "NAME", "RESULT"), "CAUSE / FIX", rows, width, paint=3)


# ---------------------------------------------------------------------------
# The doctor
# ---------------------------------------------------------------------------


def _doctor(style, minion, data, width):
    checks = data["checks"]
    rows = []
    for check in checks:
        cells = (_status_word(check.get("status")), str(check.get("layer") or "-"), str(check.get("name") or "-"))
        if check.get("status") in ("fail", "warn"):
            parts = _problem(check.get("evidence"), check.get("fix"))
        else:
            parts = [("cut", "", check.get("evidence") or "")]
        rows.append((cells, STATUS_COLORS.get(check.get("status")), parts))
    table = _table(style, ("STATUS", "LAYER", "CHECK"), "EVIDENCE / FIX", rows, width)

    counts = {status: sum(1 for c in checks if c.get("status") == status) for status in STATUS_COLORS}
    tally = ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no checks"
    gpus = [g for g in data.get("gpus") or [] if isinstance(g, Mapping)]
    if gpus:
        words = [("ok", True) if g.get("healthy") else ("FAIL", False) for g in gpus]
        table += [""] + _gpu_table(style, gpus, width, words, _health_problems)
        bad = sum(1 for _, good in words if not good)
        tally += f"; GPUs: {len(words) - bad} ok" + (f", {bad} fail" if bad else "")
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
    return [f"{name}:"] + table + summary


def _health_problems(gpu):
    return [(f"{c.get('check')}: {c.get('cause')}" if c.get("check") else c.get("cause"), c.get("fix"))
            for c in gpu.get("causes") or [] if isinstance(c, Mapping)] or [("unhealthy, no cause given", None)]


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
    if run.get("runtime") == "host" or (run.get("command") or [""])[0] == "cuda-driver-api":
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
    return [INDENT + line for label, text in labeled for line in _wrap(text, width - len(INDENT), f"{label:<5} ")]


def _run_problems(gpu):
    diagnosis = gpu.get("diagnosis") if isinstance(gpu.get("diagnosis"), Mapping) else {}
    return [(diagnosis.get("cause") or "the vector add failed on this GPU", diagnosis.get("fix"))]


def _vector_add(style, minion, run, width):
    lines = [f"{style.paint(str(minion), 'CYAN')}: {_run_line(style, run)}"]
    gpus = [g for g in run.get("gpus") or [] if isinstance(g, Mapping)]
    if gpus:
        words = [("passed", True) if g.get("passed") else ("FAILED", False) for g in gpus]
        lines += _gpu_table(style, gpus, width, words, _run_problems)
    if not run.get("passed") and not any(not g.get("passed") for g in gpus):
        lines += _diagnosis_lines(run.get("diagnosis"), _said(run), width)
    return lines


# ---------------------------------------------------------------------------
# The fleet report
# ---------------------------------------------------------------------------


# A node's status (the runner's STATUSES): its word in the tables and its colour.
NODE_STATUSES = {"ok": ("ok", "GREEN"), "failing": ("FAILING", "LIGHT_RED"),
                 "reboot_required": ("REBOOT", "LIGHT_YELLOW"), "no_return": ("NO RETURN", "LIGHT_YELLOW")}


def _node_status(status):
    return NODE_STATUSES.get(status, (str(status).upper(), "LIGHT_RED"))


def _summary_line(report):
    summary = report["summary"]
    parts = [f"{value} {key.replace('_', ' ')}" for key, value in summary.items() if key != "nodes"]
    how = ", ".join(str(fact) for fact in (report.get("check"),
                                          f"{report['duration_s']} s" if report.get("duration_s") is not None else None)
                    if fact)
    return f"fleet report{f' ({how})' if how else ''}: {summary.get('nodes', 0)} nodes: {', '.join(parts)}"


def _groups(style, groups, width):
    """Failing (and reboot-required) nodes grouped by layer and cause: the fix once per group."""
    rows = []
    for group in groups:
        word, color = _node_status(group.get("status"))
        cells = (word, str(group.get("layer") or "-"), str(group.get("check") or "-"),
                 str(group.get("count", len(group.get("nodes") or []))))
        nodes = ", ".join(str(n) for n in group.get("nodes") or [])
        rows.append((cells, color, _problem(group.get("cause"), group.get("fix"), nodes)))
    return _table(style, ("STATUS", "LAYER", "CHECK", "NODES"), "CAUSE / FIX / NODES", rows, width)


def _gpu_groups(style, groups, width):
    """Failing GPUs across the fleet grouped by cause, each GPU as its node and index (UUID)."""
    rows = []
    for group in groups:
        gpus = ", ".join(f"{gpu.get('node')} GPU {'-' if gpu.get('index') is None else gpu['index']}"
                         + (f" ({gpu['uuid']})" if gpu.get("uuid") else "")
                         for gpu in group.get("gpus") or [] if isinstance(gpu, Mapping))
        cells = (str(group.get("layer") or "-"), str(group.get("check") or "-"),
                 str(group.get("count", len(group.get("gpus") or []))))
        rows.append((cells, None, _problem(group.get("cause"), group.get("fix"), gpus)))
    return _table(style, ("LAYER", "CHECK", "GPUS"), "CAUSE / FIX / GPUS", rows, width, paint=None)


def _versions(style, versions, width):
    """Nodes by driver version x stream x GPU model, with their statuses."""
    rows = [((str(v.get("driver_version") or "-"), str(v.get("stream") or "-"), str(v.get("gpu_model") or "-"),
              *(str(v.get(key, 0)) for key in ("nodes", "ok", "failing", "reboot_required"))), None, [])
            for v in versions]
    return _table(style, ("DRIVER", "STREAM", "GPU MODEL", "NODES", "OK", "FAILING", "REBOOT"), "", rows, width,
                  paint=None)


def _nodes(style, nodes, width):
    """
    A line per node, so that hundreds of them stay readable: status, driver, stream, GPUs
    and, for a node that is not ok, where and what (cut to the width: the groups above
    carry the whole cause and the fix).
    """
    rows = []
    for minion, node in nodes.items():
        word, color = _node_status(node.get("status"))
        cells = (str(minion), word, str(node.get("driver_version") or "-"), str(node.get("stream") or "-"),
                 str(node.get("gpu_count") or "-"))
        text = ""
        if node.get("cause"):
            where = "/".join(str(part) for part in (node.get("layer"), node.get("check")) if part)
            text = f"{where}: {node['cause']}" if where else str(node["cause"])
        elif node.get("status") == "reboot_required":
            text = "grain nvgpu:reboot_required is True"
        failing_gpus = [gpu for gpu in node.get("gpus_failing") or [] if isinstance(gpu, Mapping)]
        if failing_gpus:
            text += f" (GPUs {', '.join(str(gpu.get('index', '-')) for gpu in failing_gpus)})"
        rows.append((cells, color, [("cut", "", text)] if text else []))
    return _table(style, ("NODE", "STATUS", "DRIVER", "STREAM", "GPUS"), "LAYER/CHECK: CAUSE", rows, width, paint=1)


def _report(style, report, width):
    nodes = {minion: node for minion, node in report["nodes"].items() if isinstance(node, Mapping)}
    lines = [_summary_line(report)]
    for title, key, table in (("failing", "groups", _groups), ("failing GPUs", "gpu_groups", _gpu_groups),
                              ("drivers", "versions", _versions), ("nodes", "nodes", _nodes)):
        if report.get(key):
            lines += ["", f"{title}:"] + table(style, report[key] if key != "nodes" else nodes, width)
    if report.get("html"):
        lines += ["", f"page: {report['html']}"]
    return lines


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
