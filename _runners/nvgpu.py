"""
Fleet-wide GPU validation report, run on the Salt master.

Runs ``nvgpu.run_vector_add`` on every targeted minion and sums the answers up: how
many nodes pass, and for each one that does not, the cause and the fix: the root cause
``nvgpu.doctor`` finds on it, else the vector add's diagnosis.
"""

import nvgpu_failures
import salt.client
import salt.utils.minions

__virtualname__ = "nvgpu"


def __virtual__():
    return __virtualname__


def _root_causes(client, nodes, failed):
    """
    Ask ``nvgpu.doctor`` on the minions whose vector add failed, and where it names a
    failing check, make that check the node's cause (the root cause, layer by layer) and
    keep the vector add's diagnosis as the ``symptom``. A minion whose doctor did not
    answer keeps the symptom as its cause.
    """
    if not failed:
        return
    returns = client.cmd(failed, "nvgpu.doctor", tgt_type="list", full_return=True)
    for minion in failed:
        full = returns.get(minion)
        if not isinstance(full, dict) or full.get("out") == "no_return" or not isinstance(full.get("ret"), dict):
            continue
        checks = full["ret"].get("checks") or []
        first = next((c for c in checks if isinstance(c, dict) and c.get("status") == "fail"), None)
        if first is None:
            continue
        node = nodes[minion]
        node["symptom"] = {key: node[key] for key in ("cause", "fix", "layer") if key in node}
        node.update(cause=first["evidence"], fix=first["fix"], layer=first["layer"], check=first["name"])


def report(tgt="*", tgt_type="glob", image=None, user=None, mode="auto", timeout=300):
    """
    Validate the GPU nodes matched by ``tgt`` and report per node.

    Returns ``{"summary": {"nodes", "passed", "failed", "no_return"}, "nodes": {id: {...}}}``
    where each node has ``passed``, ``duration_s``, ``mode``, and for a failure
    ``cause``, ``fix`` and ``layer``: the first failing check of ``nvgpu.doctor`` on that
    minion (its name under ``check``, the vector add's own diagnosis under ``symptom``),
    or the vector add's diagnosis where the doctor finds nothing. A minion that did not
    answer is reported as such.

    CLI Example:

    .. code-block:: bash

        salt-run nvgpu.report
        salt-run nvgpu.report tgt='gpu-*' user=alice
        salt-run nvgpu.report tgt='G@nvgpu:gpu_count:8' tgt_type=compound
    """
    kwarg = {"mode": mode, "timeout": timeout}
    if image:
        kwarg["image"] = image
    if user:
        kwarg["user"] = user
    expected = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)["minions"]
    client = salt.client.get_local_client(__opts__["conf_file"])
    # No timeout of our own: Salt waits its own `timeout` for a minion that says nothing
    # and keeps waiting, through its job checks, for one still running the vector add.
    returns = client.cmd(tgt, "nvgpu.run_vector_add", kwarg=kwarg, tgt_type=tgt_type, full_return=True)

    nodes, silent = {}, set()
    for minion in sorted(set(expected) | set(returns)):
        full = returns.get(minion)
        # Salt's word for a minion that did not answer in time (or False, or nothing).
        if not isinstance(full, dict) or full.get("out") == "no_return":
            silent.add(minion)
            nodes[minion] = {"passed": False, "cause": "the minion did not return",
                             "fix": f"check that it is up: salt {minion} test.ping"}
            continue
        ret = full.get("ret")
        if not isinstance(ret, dict) or "passed" not in ret:
            nodes[minion] = {"passed": False, "cause": f"nvgpu.run_vector_add did not run: {ret}",
                             "fix": f"salt {minion} saltutil.sync_all, then check the error above"}
            continue
        node = {"passed": ret["passed"], "duration_s": ret.get("duration_s"), "mode": ret.get("mode")}
        if not ret["passed"]:
            node.update(ret.get("diagnosis") or nvgpu_failures.UNKNOWN)
        nodes[minion] = node
    _root_causes(client, nodes, sorted(m for m, node in nodes.items() if "duration_s" in node and not node["passed"]))

    passed = sum(1 for node in nodes.values() if node["passed"])
    summary = {"nodes": len(nodes), "passed": passed, "failed": len(nodes) - passed - len(silent),
               "no_return": len(silent)}
    return {"summary": summary, "nodes": nodes}
