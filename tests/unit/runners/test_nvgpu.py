"""
The fleet report runner (_runners/nvgpu.py) with Salt's LocalClient and CkMinions
replaced by autospecced fakes: what it asks the minions, and how it sums up passes,
failures, minions that did not return and minions where the function did not run.
"""

from unittest.mock import create_autospec

import nvgpu_failures
import pytest
import salt.client
import salt.utils.minions

from tests.unit.loader import load

OPTS = {"conf_file": "/etc/salt/master.d/test.conf"}
DIAGNOSIS = {"cause": "no CDI spec", "fix": "nvidia-ctk cdi generate", "layer": "toolkit"}
# What LocalClient.cmd(full_return=True) gives for a minion that did not answer (Salt 3008).
NO_RESPONSE = {"out": "no_return", "ret": "Minion did not return. [No response]", "retcode": 1}


@pytest.fixture
def runner():
    return load("_runners/nvgpu.py")


@pytest.fixture
def configure_loader_modules(runner):
    return {runner: {"__opts__": dict(OPTS)}}


@pytest.fixture
def fleet(monkeypatch):
    """``fleet(expected, returns)``: the minions the target matches, and what cmd returns."""
    client = create_autospec(salt.client.LocalClient, instance=True)
    get_local_client = create_autospec(salt.client.get_local_client, return_value=client)
    ckminions = create_autospec(salt.utils.minions.CkMinions)
    monkeypatch.setattr(salt.client, "get_local_client", get_local_client)
    monkeypatch.setattr(salt.utils.minions, "CkMinions", ckminions)

    def make(expected, returns, silent=()):
        """``returns``: each minion's return value; ``silent``: minions Salt reports as not returning."""
        ckminions.return_value.check_minions.return_value = {"minions": list(expected), "missing": []}
        full = {minion: {"ret": ret, "retcode": 0, "jid": "20261129000000000000"} for minion, ret in returns.items()}
        full.update({minion: NO_RESPONSE for minion in silent})
        client.cmd.return_value = full

    make.client, make.get_local_client, make.ckminions = client, get_local_client, ckminions
    return make


def passed(mode="cdi", duration=0.7):
    return {"passed": True, "duration_s": duration, "mode": mode, "diagnosis": None, "retcode": 0}


def test_virtual(runner):
    assert runner.__virtual__() == "nvgpu"


def test_asks_every_targeted_minion_with_the_options(runner, fleet):
    fleet(["gpu-1"], {"gpu-1": passed()})
    runner.report(tgt="G@nvgpu:gpu_count:8", tgt_type="compound", image="localhost:5000/x:v1", user="alice",
                  mode="cdi", timeout=100)
    assert fleet.get_local_client.call_args.args == (OPTS["conf_file"],)
    assert fleet.ckminions.call_args.args == (OPTS,)
    assert fleet.ckminions.return_value.check_minions.call_args.args == ("G@nvgpu:gpu_count:8", "compound")
    assert fleet.client.cmd.call_args.args == ("G@nvgpu:gpu_count:8", "nvgpu.run_vector_add")
    assert fleet.client.cmd.call_args.kwargs == {
        "kwarg": {"mode": "cdi", "timeout": 100, "image": "localhost:5000/x:v1", "user": "alice"},
        "tgt_type": "compound",
        "full_return": True,
    }


def test_defaults_pass_no_image_and_no_user(runner, fleet):
    fleet([], {})
    assert runner.report() == {"summary": {"nodes": 0, "passed": 0, "failed": 0, "no_return": 0}, "nodes": {}}
    assert fleet.client.cmd.call_args.kwargs["kwarg"] == {"mode": "auto", "timeout": 300}
    assert fleet.client.cmd.call_args.args[0] == "*"


def test_summary_of_a_mixed_fleet(runner, fleet):
    fleet(
        ["gpu-1", "gpu-2", "gpu-3", "gpu-4", "gpu-5"],
        {
            "gpu-1": passed(),
            "gpu-2": dict(passed(mode="hook"), passed=False, retcode=126, diagnosis=DIAGNOSIS),
            "gpu-4": "'nvgpu.run_vector_add' is not available.",
            "gpu-5": dict(passed(), passed=False, diagnosis=None),
            "gpu-6": passed(duration=1.5),  # answered without being expected: counted too
        },
        silent=["gpu-7"],
    )
    ret = runner.report(tgt="gpu-*")
    assert ret["summary"] == {"nodes": 7, "passed": 2, "failed": 3, "no_return": 2}
    assert ret["nodes"] == {
        "gpu-1": {"passed": True, "duration_s": 0.7, "mode": "cdi"},
        "gpu-2": {"passed": False, "duration_s": 0.7, "mode": "hook", **DIAGNOSIS},
        "gpu-3": {"passed": False, "cause": "the minion did not return", "fix": "check that it is up: salt gpu-3 test.ping"},
        "gpu-4": {"passed": False, "cause": "nvgpu.run_vector_add did not run: 'nvgpu.run_vector_add' is not available.",
                  "fix": "salt gpu-4 saltutil.sync_all, then check the error above"},
        "gpu-5": {"passed": False, "duration_s": 0.7, "mode": "cdi", **nvgpu_failures.UNKNOWN},
        "gpu-6": {"passed": True, "duration_s": 1.5, "mode": "cdi"},
        "gpu-7": {"passed": False, "cause": "the minion did not return", "fix": "check that it is up: salt gpu-7 test.ping"},
    }
    assert list(ret["nodes"]) == sorted(ret["nodes"])


def test_a_dict_without_passed_did_not_run(runner, fleet):
    fleet(["gpu-1"], {"gpu-1": {"error": "Passed invalid arguments"}})
    node = runner.report()["nodes"]["gpu-1"]
    assert node["passed"] is False and node["cause"].startswith("nvgpu.run_vector_add did not run")


def test_unknown_stays_unchanged(runner, fleet):
    before = dict(nvgpu_failures.UNKNOWN)
    fleet(["a", "b"], {"a": {"passed": False}, "b": {"passed": False}})
    ret = runner.report()
    ret["nodes"]["a"]["cause"] = "edited"
    assert nvgpu_failures.UNKNOWN == before
    assert ret["nodes"]["b"]["cause"] == before["cause"]
