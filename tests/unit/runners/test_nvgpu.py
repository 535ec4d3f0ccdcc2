"""
The fleet report runner (_runners/nvgpu.py) with Salt's LocalClient and CkMinions
replaced by autospecced fakes that answer as Salt 3008 does (multi-function jobs,
``full_return``, batch generators): what it asks the minions, and how it sums the fleet
up: statuses, groups by layer and cause, versions, root causes, per-GPU groups, the page.
"""

import re
from unittest.mock import create_autospec

import nvgpu_failures
import pytest
import salt.client
import salt.utils.minions

from tests.unit.loader import load

OPTS = {"conf_file": "/etc/salt/master.d/test.conf"}
# What LocalClient.cmd(full_return=True) gives for a minion that did not answer (Salt 3008).
NO_RESPONSE = {"out": "no_return", "ret": "Minion did not return. [No response]", "retcode": 1}
FACTS = ["grains.item", "dnf_module.info", "nvgpu.driver_version"]
A100 = {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-1"}


@pytest.fixture
def runner():
    return load("_runners/nvgpu.py")


@pytest.fixture
def configure_loader_modules(runner):
    return {runner: {"__opts__": dict(OPTS)}}


class Fleet:
    """
    Minions that answer jobs as Salt does. ``nodes[minion]`` is a dict of what the node
    says per function (a callable gets the function's arguments), or None for a minion
    that is down; ``jobs`` records every job as (how, target, funs, args, kwargs).
    """

    def __init__(self, monkeypatch):
        self.client = create_autospec(salt.client.LocalClient, instance=True)
        self.get_local_client = create_autospec(salt.client.get_local_client, return_value=self.client)
        self.ckminions = create_autospec(salt.utils.minions.CkMinions)
        monkeypatch.setattr(salt.client, "get_local_client", self.get_local_client)
        monkeypatch.setattr(salt.utils.minions, "CkMinions", self.ckminions)
        self.client.cmd.side_effect = self._cmd
        self.client.cmd_batch.side_effect = self._cmd_batch
        self.nodes, self.jobs = {}, []

    def __call__(self, nodes, expected=None):
        self.nodes = nodes
        expected = list(nodes) if expected is None else expected
        self.ckminions.return_value.check_minions.return_value = {"minions": expected, "missing": []}
        return self

    def _targets(self, tgt, tgt_type):
        return list(tgt) if tgt_type == "list" else [m for m in self.nodes if re.fullmatch(tgt.replace("*", ".*"), m)]

    def _answer(self, minion, funs, args):
        said = self.nodes[minion]
        ret = {}
        for fun, arg in zip(funs, args):
            value = said.get(fun, f"'{fun}' is not available.")
            ret[fun] = value(*[a for a in arg if not isinstance(a, dict)],
                             **{k: v for a in arg if isinstance(a, dict) for k, v in a.items() if k != "__kwarg__"}) \
                if callable(value) else value
        return ret

    def _cmd(self, tgt, funs, arg, tgt_type, full_return, **kwargs):
        self.jobs.append(("cmd", tgt, funs, arg, dict(kwargs, tgt_type=tgt_type, full_return=full_return)))
        return {m: NO_RESPONSE if self.nodes[m] is None else {"ret": self._answer(m, funs, arg), "retcode": 0}
                for m in self._targets(tgt, tgt_type)}

    def _cmd_batch(self, tgt, funs, arg, tgt_type, batch, **kwargs):
        self.jobs.append(("batch", tgt, funs, arg, dict(kwargs, tgt_type=tgt_type, batch=batch)))
        for minion in self._targets(tgt, tgt_type):
            if self.nodes[minion] is not None:  # a down minion fails the batch's ping: no job, no yield
                yield {minion: self._answer(minion, funs, arg)}


@pytest.fixture
def fleet(monkeypatch):
    return Fleet(monkeypatch)


def check(name, status, layer="toolkit", evidence="read", fix=None):
    return {"name": name, "layer": layer, "status": status, "evidence": evidence, "fix": fix}


def doctor_says(*checks):
    return {"ok": not any(c["status"] == "fail" for c in checks), "checks": list(checks),
            "first_failing_layer": next((c["layer"] for c in checks if c["status"] == "fail"), None)}


HEALTHY = doctor_says(check("nvidia-ko", "ok", "driver"), check("toolkit", "ok"))
NO_CTK = doctor_says(check("nvidia-ko", "ok", "driver"),
                     check("toolkit", "fail", "toolkit", "nvidia-ctk is not in PATH",
                           "dnf install nvidia-container-toolkit"),
                     check("cdi-spec-count", "fail", "toolkit", "no CDI spec", "nvidia-ctk cdi generate"))


def node(driver="580.105.08", stream="latest-dkms", gpus=(A100,), reboot=None, doctor=HEALTHY, **more):
    grain = {"driver_version": driver, "gpus": list(gpus), "gpu_count": len(gpus)} if gpus else {}
    if reboot is not None:
        grain["reboot_required"] = reboot
    said = {"grains.item": {"nvgpu": grain}, "dnf_module.info": {"name": "nvidia-driver", "stream": stream},
            "nvgpu.driver_version": driver, "nvgpu.doctor": doctor}
    said.update(more)
    return said


def test_virtual(runner):
    assert runner.__virtual__() == "nvgpu"


def test_one_job_asks_facts_and_the_doctor_of_every_targeted_minion(runner, fleet):
    fleet({"gpu-1": node()})
    runner.report(tgt="G@nvgpu:gpu_count:8", tgt_type="compound", timeout=7)
    assert fleet.get_local_client.call_args.args == (OPTS["conf_file"],)
    assert fleet.ckminions.return_value.check_minions.call_args.args == ("G@nvgpu:gpu_count:8", "compound")
    assert fleet.jobs == [("cmd", "G@nvgpu:gpu_count:8", FACTS + ["nvgpu.doctor"],
                           [["nvgpu"], ["nvidia-driver"], [], []],
                           {"timeout": 7, "tgt_type": "compound", "full_return": True})]


def test_a_healthy_fleet(runner, fleet):
    fleet({"gpu-1": node(), "gpu-2": node(driver="550.127.08", stream="550-dkms")})
    ret = runner.report()
    assert ret["check"] == "doctor"
    assert ret["summary"] == {"nodes": 2, "ok": 2, "failing": 0, "reboot_required": 0, "no_return": 0}
    assert ret["groups"] == [] and ret["gpu_groups"] == []
    assert ret["nodes"]["gpu-2"] == {"status": "ok", "driver_version": "550.127.08", "stream": "550-dkms",
                                     "gpu_model": "NVIDIA A100-SXM4-80GB", "gpu_count": 1, "reboot_required": False}
    assert ret["versions"] == [
        {"driver_version": "550.127.08", "stream": "550-dkms", "gpu_model": "NVIDIA A100-SXM4-80GB", "nodes": 1,
         "ok": 1, "failing": 0, "reboot_required": 0},
        {"driver_version": "580.105.08", "stream": "latest-dkms", "gpu_model": "NVIDIA A100-SXM4-80GB", "nodes": 1,
         "ok": 1, "failing": 0, "reboot_required": 0}]
    assert "html" not in ret and ret["duration_s"] >= 0


def test_statuses_each_node_counted_once(runner, fleet):
    fleet({
        "gpu-1": node(),
        "gpu-2": node(doctor=NO_CTK),
        "gpu-3": node(reboot=True, doctor=doctor_says(
            check("driver-version", "fail", "kernel-modules", "loaded 550, installed 580", "reboot"))),
        "gpu-4": None,                                   # down
        "gpu-5": node(reboot=False),
        "gpu-6": {"grains.item": {"nvgpu": {}}},         # nvgpu modules not synced
    }, expected=["gpu-1", "gpu-2", "gpu-3", "gpu-4", "gpu-5", "gpu-6", "gpu-7"])  # gpu-7: a key, no answer
    ret = runner.report()
    assert ret["summary"] == {"nodes": 7, "ok": 2, "failing": 2, "reboot_required": 1, "no_return": 2}
    assert {m: n["status"] for m, n in ret["nodes"].items()} == {
        "gpu-1": "ok", "gpu-2": "failing", "gpu-3": "reboot_required", "gpu-4": "no_return", "gpu-5": "ok",
        "gpu-6": "failing", "gpu-7": "no_return"}
    assert ret["nodes"]["gpu-2"] | {} == dict(ret["nodes"]["gpu-2"], layer="toolkit", check="toolkit",
                                              cause="nvidia-ctk is not in PATH",
                                              fix="dnf install nvidia-container-toolkit")
    assert ret["nodes"]["gpu-4"]["cause"] == "the minion did not return"
    assert ret["nodes"]["gpu-4"]["fix"] == "check that it is up: salt gpu-4 test.ping"
    assert ret["nodes"]["gpu-6"]["layer"] == "salt"
    assert ret["nodes"]["gpu-6"]["cause"] == "nvgpu.doctor did not run: 'nvgpu.doctor' is not available."
    assert "saltutil.sync_all" in ret["nodes"]["gpu-6"]["fix"]
    assert ret["nodes"]["gpu-6"]["driver_version"] is None and ret["nodes"]["gpu-6"]["gpu_model"] is None
    # The no-return nodes are in no version row; the rest add up.
    assert sum(r["nodes"] for r in ret["versions"]) == 5


def test_groups_by_layer_and_cause_most_nodes_first(runner, fleet):
    selinux = doctor_says(check("selinux-policy", "fail", "selinux", "`semodule -l` lists 3 modules", "semodule -i"))
    fleet({"a": node(doctor=NO_CTK), "b": node(doctor=selinux), "c": node(doctor=NO_CTK), "d": node(),
           "e": node(reboot=True), "f": None})
    ret = runner.report()
    assert ret["groups"] == [
        {"status": "failing", "layer": "toolkit", "check": "toolkit", "cause": "nvidia-ctk is not in PATH",
         "fix": "dnf install nvidia-container-toolkit", "count": 2, "nodes": ["a", "c"]},
        {"status": "failing", "layer": "selinux", "check": "selinux-policy", "cause": "`semodule -l` lists 3 modules",
         "fix": "semodule -i", "count": 1, "nodes": ["b"]},
        {"status": "reboot_required", "layer": "driver", "check": "reboot_required",
         "cause": "grain nvgpu:reboot_required is True", "fix": ret["groups"][2]["fix"], "count": 1, "nodes": ["e"]},
    ]
    assert "reboot" in ret["groups"][2]["fix"]


def test_a_check_grouped_across_node_specific_evidence(runner, fleet):
    def missing(release):
        return doctor_says(check("kernel-devel", "fail", "driver", f"kernel-devel-{release} is not installed",
                                 f"dnf install kernel-devel-{release}"))
    fleet({"a": node(doctor=missing("4.18.0-1")), "b": node(doctor=missing("4.18.0-1")),
           "c": node(doctor=missing("4.18.0-2"))})
    (group,) = runner.report()["groups"]
    assert group["count"] == 3 and group["check"] == "kernel-devel"
    assert group["cause"] == "kernel-devel-4.18.0-1 is not installed"  # the words most nodes said


def test_a_doctor_that_fails_without_a_failing_check(runner, fleet):
    fleet({"a": node(doctor={"ok": False, "first_failing_layer": "podman", "checks": [check("podman", "warn")]})})
    n = runner.report()["nodes"]["a"]
    assert (n["status"], n["layer"], n["check"]) == ("failing", "podman", None)


def test_batch_for_the_doctor_on_request(runner, fleet):
    fleet({"a": node(), "b": None})
    ret = runner.report(batch="50%")
    assert [job[0] for job in fleet.jobs] == ["batch"]
    assert fleet.jobs[0][4]["batch"] == "50%"
    assert ret["summary"]["no_return"] == 1 and ret["nodes"]["b"]["status"] == "no_return"


def test_multifunc_ordered_minions_answer_lists(runner, fleet):
    fleet({"a": node()})
    fleet.client.cmd.side_effect = lambda tgt, funs, arg, tgt_type, full_return, **kw: {
        "a": {"ret": [fleet.nodes["a"][f] for f in funs], "retcode": [0] * len(funs)}}
    assert runner.report()["nodes"]["a"]["stream"] == "latest-dkms"


def test_a_bad_check_is_refused(runner, fleet):
    fleet({})
    with pytest.raises(ValueError, match="check='vectoradd'"):
        runner.report(check="vectoradd")


def test_empty_fleet(runner, fleet):
    fleet({})
    ret = runner.report()
    assert ret["summary"] == {"nodes": 0, "ok": 0, "failing": 0, "reboot_required": 0, "no_return": 0}
    assert ret["nodes"] == {} and ret["versions"] == []


# ---------------------------------------------------------------------------- vector add


def passed(duration=0.7, **more):
    return dict({"passed": True, "duration_s": duration, "mode": "cdi", "diagnosis": None}, **more)


SYMPTOM = {"cause": "Podman found no CDI device", "fix": "nvidia-ctk cdi generate", "layer": "toolkit"}


def failed(diagnosis=SYMPTOM, **more):
    return dict(passed(), passed=False, diagnosis=diagnosis, **more)


def vnode(users=(), image="mirror:5000/vector-add:v1", vector_add=None, **kw):
    """A node for check=vector_add; ``vector_add(user)`` is its answer for that user."""
    answer = vector_add or (lambda user: passed())
    pillar = {"gpu:rootless_users": [{"name": u, "uid": 2000 + i} for i, u in enumerate(users)],
              "gpu:validate:image": image}
    return node(**kw, **{"pillar.item": lambda *keys, unmask: {k: pillar[k] for k in keys},
                        "nvgpu.run_vector_add": lambda mode, image=None, user=None, gpus="all": answer(user)})


def test_vector_add_asks_facts_then_runs_in_batches_per_image_and_user(runner, fleet):
    fleet({"a": vnode(users=["alice"]), "b": vnode(image="other:5000/v:1"), "c": vnode(users=["alice", "bob"])})
    ret = runner.report(check="vector_add", users=True, timeout=9)
    first = fleet.jobs[0]
    assert first[:3] == ("cmd", "*", FACTS + ["pillar.item"])
    assert first[3][-1] == ["gpu:rootless_users", "gpu:validate:image", {"unmask": True, "__kwarg__": True}]
    runs = [(job[0], job[1], job[3], job[4]["batch"]) for job in fleet.jobs[1:]]
    assert runs == [
        ("batch", ["a", "c"], [[{"mode": "auto", "image": "mirror:5000/vector-add:v1", "__kwarg__": True}]], "10%"),
        ("batch", ["a", "c"], [[{"mode": "auto", "image": "mirror:5000/vector-add:v1", "user": "alice",
                                 "__kwarg__": True}]], "10%"),
        ("batch", ["c"], [[{"mode": "auto", "image": "mirror:5000/vector-add:v1", "user": "bob",
                            "__kwarg__": True}]], "10%"),
        ("batch", ["b"], [[{"mode": "auto", "image": "other:5000/v:1", "__kwarg__": True}]], "10%"),
    ]
    assert all(job[4]["timeout"] == 9 for job in fleet.jobs)
    assert ret["summary"]["ok"] == 3 and ret["check"] == "vector_add"
    assert ret["nodes"]["c"]["runs"] == [{"user": None, "passed": True, "duration_s": 0.7},
                                         {"user": "alice", "passed": True, "duration_s": 0.7},
                                         {"user": "bob", "passed": True, "duration_s": 0.7}]


def test_vector_add_image_and_batch_given(runner, fleet):
    fleet({"a": vnode()})
    runner.report(check="vector_add", image="given:1", batch="100%", mode="cdi")
    assert fleet.jobs[1][0] == "cmd"
    assert fleet.jobs[1][3] == [[{"mode": "cdi", "image": "given:1", "__kwarg__": True}]]


def test_vector_add_failure_root_caused_by_the_doctor(runner, fleet):
    fleet({"a": vnode(doctor=NO_CTK, vector_add=lambda user: failed()),
           "b": vnode(users=["alice"], vector_add=lambda user: failed(diagnosis=None) if user else passed(),
                      doctor=HEALTHY),
           "c": vnode()})
    ret = runner.report(check="vector_add", users=True)
    # The doctor only where the vector add failed, in one job, not batched.
    assert fleet.jobs[-1][:4] == ("cmd", ["a", "b"], ["nvgpu.doctor"], [[]])
    a = ret["nodes"]["a"]
    assert (a["status"], a["layer"], a["check"], a["cause"], a["fix"]) == (
        "failing", "toolkit", "toolkit", "nvidia-ctk is not in PATH", "dnf install nvidia-container-toolkit")
    assert a["symptom"] == SYMPTOM and a["user"] is None
    # The doctor found nothing on b: alice's run's diagnosis stays the cause.
    b = ret["nodes"]["b"]
    assert (b["cause"], b["layer"], b["user"]) == (nvgpu_failures.UNKNOWN["cause"], "unknown", "alice")
    assert "symptom" not in b
    assert [g["nodes"] for g in ret["groups"]] == [["a"], ["b"]]


def test_vector_add_that_did_not_run_gets_no_doctor(runner, fleet):
    fleet({"a": vnode(vector_add=lambda user: {"error": "bad"}), "b": None})
    ret = runner.report(check="vector_add")
    assert ret["nodes"]["a"]["layer"] == "salt" and "did not run" in ret["nodes"]["a"]["cause"]
    assert ret["nodes"]["b"]["status"] == "no_return"
    assert [job[2] for job in fleet.jobs] == [FACTS + ["pillar.item"], ["nvgpu.run_vector_add"]]


def test_failing_gpus_of_gpus_each_grouped_by_cause(runner, fleet):
    xid = {"cause": "Xid 79: the GPU fell off the bus", "fix": "drain, reset", "layer": "gpu"}

    def each(*bad):
        return failed(diagnosis=xid, gpus=[], failed_gpus=[
            {"index": i, "uuid": f"GPU-{i}", "name": "NVIDIA H200", "pci": "0000:1b:00.0", **xid} for i in bad])
    fleet({"a": vnode(vector_add=lambda user: each(3), doctor=HEALTHY),
           "b": vnode(vector_add=lambda user: each(5, 6), doctor=HEALTHY)})
    ret = runner.report(check="vector_add", gpus="each")
    assert fleet.jobs[1][3][0][0]["gpus"] == "each"
    assert ret["gpu_groups"] == [{"layer": "gpu", "check": None, "cause": xid["cause"], "fix": "drain, reset",
                                  "count": 3, "gpus": [{"node": "a", "index": 3, "uuid": "GPU-3"},
                                                       {"node": "b", "index": 5, "uuid": "GPU-5"},
                                                       {"node": "b", "index": 6, "uuid": "GPU-6"}]}]
    assert ret["nodes"]["a"]["gpus_failing"] == [{"index": 3, "uuid": "GPU-3", "check": None, **xid}]


def test_unhealthy_gpus_of_the_doctor_grouped_by_check(runner, fleet):
    def sick(*gpus):
        doctor = doctor_says(check("xid", "fail", "gpu", "Xid 79 on GPU 2", "drain"))
        doctor["gpus"] = [{"index": 0, "uuid": "GPU-0", "name": "H200", "pci": "p0", "healthy": True, "causes": []}]
        doctor["gpus"] += [{"index": i, "uuid": f"GPU-{i}", "name": "H200", "pci": f"p{i}", "healthy": False,
                            "causes": causes} for i, causes in gpus]
        return doctor
    xid = {"check": "xid", "cause": "Xid 79 (fell off the bus)", "fix": "drain and reset"}
    ecc = {"check": "gpu-memory", "cause": "3 retired pages", "fix": "RMA"}
    fleet({"a": node(doctor=sick((2, [xid, ecc]))), "b": node(doctor=sick((7, [dict(xid, cause="Xid 79 twice")]))),
           "c": node()})
    ret = runner.report()
    assert [(g["check"], g["count"], g["gpus"]) for g in ret["gpu_groups"]] == [
        ("xid", 2, [{"node": "a", "index": 2, "uuid": "GPU-2"}, {"node": "b", "index": 7, "uuid": "GPU-7"}]),
        ("gpu-memory", 1, [{"node": "a", "index": 2, "uuid": "GPU-2"}])]
    assert ret["gpu_groups"][1]["cause"] == "3 retired pages" and ret["gpu_groups"][1]["layer"] == "gpu"
    assert ret["nodes"]["a"]["check"] == "xid" and "gpus_failing" not in ret["nodes"]["c"]


# ---------------------------------------------------------------------------- the page


def test_html_page_written_whole(runner, fleet, tmp_path):
    fleet({"gpu-1": node(), "gpu-<2>": node(doctor=NO_CTK), "gpu-3": None})
    path = tmp_path / "fleet.html"
    ret = runner.report(html=str(path))
    assert ret["html"] == str(path)
    page = path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.html"]
    assert page.index('id="summary"') < page.index('id="failing"') < page.index('id="nodes"')
    assert "nvidia-ctk is not in PATH" in page and "gpu-&lt;2&gt;" in page and "gpu-<2>" not in page
    assert '<div class="card failing" id="count-failing"><b>1</b>' in page
    assert "<svg" in page and "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
