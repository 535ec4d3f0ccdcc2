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

    def make(expected, returns, silent=(), doctor=None, doctor_silent=()):
        """
        ``returns``: each minion's return value; ``silent``: minions Salt reports as not
        returning; ``doctor``, ``doctor_silent``: the same for the nvgpu.doctor call.
        """
        ckminions.return_value.check_minions.return_value = {"minions": list(expected), "missing": []}

        def full(rets, quiet):
            ret = {minion: {"ret": ret, "retcode": 0, "jid": "20261129000000000000"} for minion, ret in rets.items()}
            ret.update({minion: NO_RESPONSE for minion in quiet})
            return ret

        answers = {"nvgpu.run_vector_add": full(returns, silent), "nvgpu.doctor": full(doctor or {}, doctor_silent)}
        client.cmd.side_effect = lambda tgt, fun, **kwargs: answers[fun]

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
    assert fleet.client.cmd.call_count == 1  # all passed: no doctor
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


# ---------------------------------------------------------------------------- root cause


def doctor_says(*checks):
    return {"ok": not any(c["status"] == "fail" for c in checks), "checks": list(checks),
            "first_failing_layer": next((c["layer"] for c in checks if c["status"] == "fail"), None)}


def check(name, status, layer="toolkit", evidence="read", fix=None):
    return {"name": name, "layer": layer, "status": status, "evidence": evidence, "fix": fix}


SYMPTOM = {"cause": "libcuda was not injected", "fix": "install the hook", "layer": "toolkit"}


def failed(diagnosis=SYMPTOM):
    return dict(passed(), passed=False, retcode=1, diagnosis=diagnosis)


def test_the_cause_is_the_doctors_first_failing_check(runner, fleet):
    fleet(["gpu-1", "gpu-2", "gpu-3"], {"gpu-1": failed(), "gpu-2": passed(), "gpu-3": failed()},
          doctor={"gpu-1": doctor_says(
              check("nvidia-ko", "ok", "driver"),
              check("nvidia-loaded", "fail", "kernel-modules", "not loaded: nvidia, nvidia_uvm",
                    "salt-call nvgpu.load_modules"),
              check("cdi-spec-count", "fail", "toolkit", "no CDI spec", "nvidia-ctk cdi generate")),
              "gpu-3": doctor_says(check("nvidia-ko", "ok", "driver"))})
    ret = runner.report()
    # One doctor call, for the failed minions only.
    assert fleet.client.cmd.call_count == 2
    assert fleet.client.cmd.call_args.args == (["gpu-1", "gpu-3"], "nvgpu.doctor")
    assert fleet.client.cmd.call_args.kwargs == {"tgt_type": "list", "full_return": True}
    assert ret["nodes"]["gpu-1"] == {
        "passed": False, "duration_s": 0.7, "mode": "cdi", "check": "nvidia-loaded", "layer": "kernel-modules",
        "cause": "not loaded: nvidia, nvidia_uvm", "fix": "salt-call nvgpu.load_modules", "symptom": SYMPTOM,
    }
    # The doctor found nothing: the vector add's diagnosis stays the cause.
    assert ret["nodes"]["gpu-3"] == {"passed": False, "duration_s": 0.7, "mode": "cdi", **SYMPTOM}
    assert ret["summary"] == {"nodes": 3, "passed": 1, "failed": 2, "no_return": 0}


@pytest.mark.parametrize("answer", ["'nvgpu.doctor' is not available.", None])
def test_a_doctor_that_did_not_answer_keeps_the_symptom(runner, fleet, answer):
    doctor, quiet = ({"gpu-1": answer}, ()) if answer else ({}, ["gpu-1"])
    fleet(["gpu-1"], {"gpu-1": failed()}, doctor=doctor, doctor_silent=quiet)
    assert runner.report()["nodes"]["gpu-1"] == {"passed": False, "duration_s": 0.7, "mode": "cdi", **SYMPTOM}


def test_no_doctor_for_silent_or_not_run_minions(runner, fleet):
    fleet(["gpu-1", "gpu-2"], {"gpu-2": "'nvgpu.run_vector_add' is not available."}, silent=["gpu-1"])
    runner.report()
    assert fleet.client.cmd.call_count == 1


def test_without_a_diagnosis_the_symptom_is_unknown(runner, fleet):
    fleet(["gpu-1"], {"gpu-1": failed(diagnosis=None)},
          doctor={"gpu-1": doctor_says(check("nouveau", "fail", "kernel-modules", "nouveau is loaded", "modprobe -r"))})
    node = runner.report()["nodes"]["gpu-1"]
    assert node["symptom"] == nvgpu_failures.UNKNOWN and node["cause"] == "nouveau is loaded"
