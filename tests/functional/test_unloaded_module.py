"""A domain module that did not load is named, with its reason, in one line.

Real salt-call over this checkout's modules, on a Python where neither tomllib nor tomli
can be imported (a sitecustomize blocks both), so nvgpu_toolkit's ``__virtual__`` returns
False as it does on a Python 3.9/3.10 without tomli. Read-only calls only: the doctor and
the toolkit state with test=True."""

import json
import subprocess

import pytest

from tests.saltcall import REPO, minion_config

SALT_CALL = REPO / ".venv" / "bin" / "salt-call"
REASON = "nvgpu_toolkit reads config.toml with tomllib (Python 3.11+) or tomli: salt-pip install tomli"


@pytest.fixture
def without_toml(tmp_path):
    (tmp_path / "conf").mkdir()
    conf = minion_config(tmp_path / "conf")
    (conf / "minion").write_text((conf / "minion").read_text() + f"states_dirs: [{REPO / '_states'}]\n")
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text('import sys\nsys.modules["tomllib"] = None\nsys.modules["tomli"] = None\n')

    def salt_call(*args):
        proc = subprocess.run([str(SALT_CALL), "--local", "-c", str(conf), "--out=json",
                               "--log-level=quiet", *args], capture_output=True, text=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(blocker)}, timeout=300)
        return proc

    return salt_call


def test_the_doctor_names_the_module_and_why(without_toml):
    proc = without_toml("nvgpu.doctor")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "KeyError" not in output and "Traceback" not in output, output
    assert "nvgpu_toolkit" in output and REASON in output, output


def test_the_toolkit_state_fails_naming_the_module_and_why(without_toml):
    proc = without_toml("state.single", "nvgpu.container_toolkit", "name=nvidia-container-toolkit", "test=True")
    ret = next(iter(json.loads(proc.stdout)["local"].values()))
    assert ret["result"] is False
    assert "Traceback" not in ret["comment"] and "KeyError" not in ret["comment"]
    assert ret["comment"].startswith("nvgpu needs nvgpu_toolkit.") and REASON in ret["comment"]
    assert len(ret["comment"].splitlines()) == 1
