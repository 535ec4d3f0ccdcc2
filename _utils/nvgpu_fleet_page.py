"""
The fleet report (``salt-run nvgpu.report html=PATH``) as one HTML page a person opens
or mails around: the summary at the top, the failing groups with their fixes next, the
driver x stream x GPU model table, then every node.

Self-contained: inline CSS and an inline SVG chart (nodes by driver version and
status), no script, no external reference; a Content-Security-Policy forbids the page
any network access. Every value from the report is HTML-escaped.
"""

import html
import time

STATUS_LABELS = {"ok": "ok", "failing": "failing", "reboot_required": "reboot required", "no_return": "no return"}
COLORS = {"ok": "#2e7d32", "failing": "#c62828", "reboot_required": "#ef6c00", "no_return": "#757575"}
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;color:#1b1b1b;
background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;margin-bottom:16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #ddd;border-left:6px solid #999;border-radius:6px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:28px;line-height:1.1}
.card.ok{border-left-color:#2e7d32}.card.failing{border-left-color:#c62828}
.card.reboot_required{border-left-color:#ef6c00}.card.no_return{border-left-color:#757575}
table{border-collapse:collapse;background:#fff;width:100%;margin:6px 0}
th,td{border:1px solid #ddd;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
td:first-child,td:nth-child(2){white-space:nowrap}
code{font:12px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;background:#f3f3f3;padding:1px 3px;border-radius:3px;
white-space:pre-wrap;word-break:break-word}
.group{background:#fff;border:1px solid #ddd;border-left:6px solid #c62828;border-radius:6px;padding:10px 14px;
margin:10px 0}
.group.reboot_required{border-left-color:#ef6c00}
.group h3{margin:0 0 6px;font-size:15px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;white-space:nowrap}
.none{color:#2e7d32;font-weight:600}
"""


def _e(value):
    return html.escape("" if value is None else str(value), quote=True)


def _badge(status):
    label = _e(STATUS_LABELS.get(status, status))
    return f'<span class="badge" style="background:{COLORS.get(status, "#555")}">{label}</span>'


def chart(nodes):
    """An SVG bar chart: one bar per driver version, stacked by status, with counts."""
    rows = {}
    for node in nodes.values():
        version = node.get("driver_version") or ("no return" if node.get("status") == "no_return" else "no driver")
        row = rows.setdefault(version, dict.fromkeys(STATUS_LABELS, 0))
        row[node.get("status", "failing")] = row.get(node.get("status", "failing"), 0) + 1
    versions = sorted(rows, key=lambda v: (v in ("no return", "no driver"), v))
    most = max((sum(row.values()) for row in rows.values()), default=1)
    label_w, bar_w, bar_h, gap, top = 130, 520, 22, 10, 30
    height = top + len(versions) * (bar_h + gap) + 10
    width = label_w + bar_w + 60
    parts = [f'<svg width="{width}" height="{height}" role="img" '
             f'viewBox="0 0 {width} {height}" aria-label="nodes by driver version and status">',
             '<style>text{font:12px system-ui,"DejaVu Sans",sans-serif;fill:#1b1b1b}</style>']
    x = label_w
    for status, label in STATUS_LABELS.items():
        parts.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{COLORS[status]}"/>'
                     f'<text x="{x + 16}" y="16">{_e(label)}</text>')
        x += 16 + 8 * len(label) + 18
    for i, version in enumerate(versions):
        y = top + i * (bar_h + gap)
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(version)}</text>')
        x = label_w
        for status in STATUS_LABELS:
            count = rows[version].get(status, 0)
            if not count:
                continue
            w = max(1.0, bar_w * count / most)
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{COLORS[status]}">'
                         f'<title>{_e(version)}: {count} {_e(STATUS_LABELS[status])}</title></rect>')
            if w >= 18:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 15}" text-anchor="middle" '
                             f'style="fill:#fff;font-weight:600">{count}</text>')
            x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 15}">{sum(rows[version].values())}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _groups(report):
    groups = report.get("groups") or []
    if not groups:
        return '<p class="none" id="no-failing">No failing node.</p>'
    out = []
    for group in groups:
        nodes = ", ".join(_e(n) for n in group.get("nodes", []))
        check = f' &middot; check <code>{_e(group["check"])}</code>' if group.get("check") else ""
        out.append(
            f'<div class="group {_e(group.get("status"))}">'
            f'<h3>{_badge(group.get("status"))} {group.get("count", 0)} node(s) &middot; layer '
            f'<code>{_e(group.get("layer"))}</code>{check}</h3>'
            f'<div><b>Cause:</b> {_e(group.get("cause"))}</div>'
            f'<div><b>Fix:</b> <code>{_e(group.get("fix"))}</code></div>'
            f'<div><b>Nodes:</b> {nodes}</div></div>')
    for group in report.get("gpu_groups") or []:
        gpus = ", ".join(f'{_e(g.get("node"))} GPU {_e(g.get("index"))}' for g in group.get("gpus", []))
        out.append(
            f'<div class="group"><h3>{group.get("count", 0)} GPU(s) &middot; layer '
            f'<code>{_e(group.get("layer"))}</code></h3>'
            f'<div><b>Cause:</b> {_e(group.get("cause"))}</div>'
            f'<div><b>Fix:</b> <code>{_e(group.get("fix"))}</code></div><div><b>GPUs:</b> {gpus}</div></div>')
    return "".join(out)


def _versions(report):
    rows = "".join(
        f"<tr><td>{_e(r.get('driver_version') or '-')}</td><td>{_e(r.get('stream') or '-')}</td>"
        f"<td>{_e(r.get('gpu_model') or '-')}</td><td>{r.get('nodes', 0)}</td><td>{r.get('ok', 0)}</td>"
        f"<td>{r.get('failing', 0)}</td><td>{r.get('reboot_required', 0)}</td></tr>"
        for r in report.get("versions") or [])
    return ("<table><tr><th>driver</th><th>stream</th><th>GPU model</th><th>nodes</th><th>ok</th><th>failing</th>"
            f"<th>reboot required</th></tr>{rows}</table>")


def _nodes(report):
    rows = []
    for minion, node in (report.get("nodes") or {}).items():
        gpus = node.get("gpu_model") or "-"
        if node.get("gpu_count"):
            gpus = f"{node['gpu_count']} x {gpus}"
        problem = ""
        if node.get("cause"):
            who = f" (as {_e(node['user'])})" if node.get("user") else ""
            problem = (f"<code>{_e(node.get('layer'))}</code>{' / ' + _e(node['check']) if node.get('check') else ''}"
                       f"{who}: {_e(node.get('cause'))}<br><b>Fix:</b> <code>{_e(node.get('fix'))}</code>")
            if node.get("symptom"):
                problem += f"<br><b>Symptom:</b> {_e(node['symptom'].get('cause'))}"
        rows.append(f'<tr id="node-{_e(minion)}"><td>{_e(minion)}</td><td>{_badge(node.get("status"))}</td>'
                    f"<td>{_e(node.get('driver_version') or '-')}</td><td>{_e(node.get('stream') or '-')}</td>"
                    f"<td>{_e(gpus)}</td><td>{problem}</td></tr>")
    return ("<table><tr><th>node</th><th>status</th><th>driver</th><th>stream</th><th>GPUs</th>"
            f"<th>cause and fix</th></tr>{''.join(rows)}</table>")


def render(report, now=None):
    """The report as one HTML page (a str)."""
    summary = report.get("summary") or {}
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
    cards = "".join(
        f'<div class="card {status}" id="count-{status}"><b>{summary.get(status, 0)}</b>{_e(label)}</div>'
        for status, label in STATUS_LABELS.items())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>GPU fleet: {summary.get('ok', 0)} of {summary.get('nodes', 0)} ok</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>GPU fleet report</h1><div class=\"meta\">{summary.get('nodes', 0)} nodes &middot; check "
        f"<code>{_e(report.get('check'))}</code> &middot; {_e(when)} &middot; took {_e(report.get('duration_s'))} s</div>"
        f'<section id="summary"><div class="cards">{cards}</div>'
        f'<div style="margin-top:14px">{chart(report.get("nodes") or {})}</div></section>'
        f'<section id="failing"><h2>Failing, by layer and cause</h2>{_groups(report)}</section>'
        f'<section id="versions"><h2>Driver versions, streams and GPU models</h2>{_versions(report)}</section>'
        f'<section id="nodes"><h2>Every node</h2>{_nodes(report)}</section>'
        "</body></html>\n"
    )
