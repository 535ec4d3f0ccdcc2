"""The fleet report's HTML page (_utils/nvgpu_fleet_page.py): what it shows, in which order, escaped."""

import re

import nvgpu_fleet_page


def report(**nodes):
    statuses = [n["status"] for n in nodes.values()]
    summary = {"nodes": len(nodes), **{s: statuses.count(s) for s in nvgpu_fleet_page.STATUS_LABELS}}
    return {"check": "doctor", "summary": summary, "groups": [], "versions": [], "nodes": nodes, "duration_s": 1.5}


def test_chart_has_a_bar_per_driver_version_stacked_by_status():
    page = nvgpu_fleet_page.render(report(
        a={"status": "ok", "driver_version": "580.105.08"}, b={"status": "failing", "driver_version": "580.105.08"},
        c={"status": "ok", "driver_version": "550.127.08"}, d={"status": "no_return"},
        e={"status": "failing", "driver_version": None}))
    titles = re.findall(r"<title>([^<]*)</title>", page)
    assert titles[1:] == ["550.127.08: 1 ok", "580.105.08: 1 ok", "580.105.08: 1 failing", "no driver: 1 failing",
                          "no return: 1 no return"]
    assert '<p class="none" id="no-failing">No failing node.</p>' in page


def test_everything_from_the_report_is_escaped_and_nothing_is_fetched():
    evil = '<img src="https://example.com/x">'
    page = nvgpu_fleet_page.render(dict(report(**{evil: {"status": "failing", "driver_version": evil,
                                                       "layer": "toolkit", "cause": evil, "fix": evil}}),
                                        groups=[{"status": "failing", "layer": "toolkit", "check": evil,
                                                 "cause": evil, "fix": evil, "count": 1, "nodes": [evil]}]))
    assert evil not in page and "&lt;img src=&quot;https://example.com/x&quot;&gt;" in page
    assert not re.search(r"<(img|script|link|iframe)\b", page)
    assert "default-src 'none'" in page


def test_summary_then_failing_groups_then_versions_then_nodes():
    page = nvgpu_fleet_page.render(report(a={"status": "ok"}))
    order = [page.index(f'<section id="{name}"') for name in ("summary", "failing", "versions", "nodes")]
    assert order == sorted(order)
    assert "<title>GPU fleet: 1 of 1 ok</title>" in page
