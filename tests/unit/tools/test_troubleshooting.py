"""
docs/troubleshooting.md is generated (tools/troubleshooting.py) from the doctor's CHECKS and
the failure knowledge base: the page on disk is what the code says now, and each entry of
the code is on it.
"""

import nvgpu_failures

from tests.unit.loader import real
from tools import troubleshooting


def test_the_page_is_what_the_code_says():
    on_disk = troubleshooting.PAGE.read_text()
    assert on_disk == troubleshooting.render(), (
        "docs/troubleshooting.md and the code disagree: run .venv/bin/python -m tools.troubleshooting")


def test_every_check_and_every_failure_is_on_the_page():
    page = troubleshooting.render()
    for check in real("_modules/nvgpu_doctor.py").CHECKS:
        assert f"| `{check.name}` | {check.layer} |" in page
    for failure in nvgpu_failures.TEXT_FAILURES:
        assert " ".join(failure.cause.split()) in page
    for name in nvgpu_failures.CUDA_ERRORS:
        assert f"`{name}`" in page


def test_check_mode_reports_a_stale_page(tmp_path, monkeypatch, capsys):
    assert troubleshooting.main(["--check"]) == 0
    stale = tmp_path / "troubleshooting.md"
    stale.write_text(troubleshooting.render().replace("nvidia-ko-newest", "nvidia-ko-next"))
    monkeypatch.setattr(troubleshooting, "PAGE", stale)
    assert troubleshooting.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
