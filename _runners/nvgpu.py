"""
The fleet report, run on the Salt master: which GPU nodes are fine, which fail and why
(grouped by layer and cause, with the fix), which need a reboot, which did not answer,
and which driver versions, streams and GPU models run where.

``salt-run nvgpu.report`` asks every targeted minion, in one job, for its ``nvgpu``
grains, its driver stream (``dnf_module.info``), its loaded driver and a check: by
default ``nvgpu.doctor`` (read-only, about a second, a return of a few kB), or with
``check=vector_add`` the CUDA vector add in a container (pulls the validation image:
run in Salt batches, 10% of the nodes at a time unless ``batch=`` says otherwise, so a
fleet does not pull from one registry at once), then ``nvgpu.doctor`` on the nodes that
failed, whose first failing check is the root cause (the vector add's diagnosis is kept
as the ``symptom``).

The return's shape is in :py:func:`report`'s docstring (``salt-run -d nvgpu.report``).
"""

import collections
import os
import re
import time

import nvgpu_failures
import nvgpu_fleet_page
import salt.client
import salt.utils.minions

__virtualname__ = "nvgpu"

CHECKS = {"doctor": "nvgpu.doctor", "vector_add": "nvgpu.run_vector_add"}
DRIVER_MODULE = "nvidia-driver"
# What each node reports about itself, in the same job as the check (each is cheap:
# cached grains, one file read under /etc/dnf/modules.d, one under /sys).
FACTS = ("grains.item", "dnf_module.info", "nvgpu.driver_version")
FACT_ARGS = (["nvgpu"], [DRIVER_MODULE], [])
VECTOR_ADD_BATCH = "10%"
USERS_KEY, IMAGE_KEY = "gpu:rootless_users", "gpu:validate:image"
VERSION = re.compile(r"\d+(\.\d+)+")
STATUSES = ("ok", "failing", "reboot_required", "no_return")
REBOOT_FIX = "drain the node and reboot it (salt NODE system.reboot): the driver it needs loads at boot"
LAYER_ORDER = {layer: index for index, layer in enumerate(("salt",) + nvgpu_failures.LAYERS)}


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------------------
# Asking the minions
# ---------------------------------------------------------------------------


def _kwarg(**kwargs):
    """A function's keyword arguments inside a job's argument list, as Salt's CLI sends them."""
    return dict(kwargs, __kwarg__=True)


def _ask(client, tgt, tgt_type, funs, args, batch, timeout):
    """
    Run the functions ``funs`` (one job, every function in it) on the minions and return
    ``{minion: {fun: return}}`` for the minions that answered. With ``batch`` (``10%``,
    ``5``) Salt runs it on that many minions at a time (its batch mode pings first, so a
    dead minion gets no job and no return); else on all at once, waiting Salt's
    ``timeout`` for a minion that says nothing.
    """
    extra = {"timeout": timeout} if timeout else {}
    answers = {}
    if batch:
        for ret in client.cmd_batch(tgt, list(funs), arg=list(args), tgt_type=tgt_type, batch=str(batch), **extra):
            answers.update(ret)
    else:
        full = client.cmd(tgt, list(funs), arg=list(args), tgt_type=tgt_type, full_return=True, **extra)
        # Salt's word for a minion that did not answer in time: {"out": "no_return", ...}, or no dict.
        answers = {minion: ret.get("ret") for minion, ret in full.items()
                   if isinstance(ret, dict) and ret.get("out") != "no_return"}
    return {minion: _by_function(ret, funs) for minion, ret in answers.items() if ret not in (None, {})}


def _by_function(ret, funs):
    """A multi-function return as ``{fun: value}`` (a minion with ``multifunc_ordered`` returns a list)."""
    if isinstance(ret, list) and len(ret) == len(funs):
        return dict(zip(funs, ret))
    if isinstance(ret, dict):
        return ret
    # One string for the whole job: e.g. the minion could not run it at all.
    return {fun: ret for fun in funs}


# ---------------------------------------------------------------------------
# What a node said
# ---------------------------------------------------------------------------


def _facts(said):
    """The node's driver, stream, GPUs and reboot flag from its facts (anything unreadable is None)."""
    grains = said.get("grains.item")
    grain = grains.get("nvgpu") if isinstance(grains, dict) else None
    grain = grain if isinstance(grain, dict) else {}
    gpus = [gpu for gpu in grain.get("gpus") or [] if isinstance(gpu, dict)]
    models = sorted({str(gpu["name"]) for gpu in gpus if gpu.get("name")})
    stream = said.get("dnf_module.info")
    loaded = said.get("nvgpu.driver_version")
    return {
        # A version, not the text of a function that could not run.
        "driver_version": loaded if isinstance(loaded, str) and VERSION.fullmatch(loaded) else grain.get("driver_version"),
        "stream": stream.get("stream") if isinstance(stream, dict) else None,
        "gpu_model": " + ".join(models) or None,
        "gpu_count": len(gpus) or grain.get("gpu_count") or None,
        "reboot_required": grain.get("reboot_required") is True,
    }


def _did_not_run(minion, fun, value):
    return {"layer": "salt", "check": None, "cause": f"{fun} did not run: {value}",
            "fix": f"salt {minion} saltutil.sync_all (the master: salt-run saltutil.sync_all), then check the error"}


def _first_failing(doctor):
    """The doctor's first failing check as ``{layer, check, cause, fix}``, or None."""
    checks = doctor.get("checks") if isinstance(doctor, dict) else None
    for check in checks or []:
        if isinstance(check, dict) and check.get("status") == "fail":
            return {"layer": check.get("layer"), "check": check.get("name"), "cause": check.get("evidence"),
                    "fix": check.get("fix")}
    return None


def _failing_gpus(value):
    """
    The failing GPUs a check names, each ``{index, uuid, layer, check, cause, fix}``: from
    ``run_vector_add gpus=each`` (its ``failed_gpus``) or from the doctor's per-GPU health
    (``gpus``: those not ``healthy``, one entry per cause).
    """
    if not isinstance(value, dict):
        return []
    failing = []
    for gpu in value.get("failed_gpus") or []:
        if isinstance(gpu, dict):
            failing.append({"index": gpu.get("index"), "uuid": gpu.get("uuid"), "layer": gpu.get("layer") or "gpu",
                            "check": None, "cause": gpu.get("cause") or nvgpu_failures.UNKNOWN["cause"],
                            "fix": gpu.get("fix") or nvgpu_failures.GPU_FIX})
    for gpu in value.get("gpus") or []:
        if not isinstance(gpu, dict) or gpu.get("healthy") is not False:
            continue
        for cause in [c for c in gpu.get("causes") or [] if isinstance(c, dict)] or [{}]:
            failing.append({"index": gpu.get("index"), "uuid": gpu.get("uuid"), "layer": "gpu",
                            "check": cause.get("check"), "cause": cause.get("cause") or "the GPU is not healthy",
                            "fix": cause.get("fix") or nvgpu_failures.GPU_FIX})
    return failing


def _doctor_node(minion, said):
    doctor = said.get(CHECKS["doctor"])
    if not isinstance(doctor, dict) or "checks" not in doctor:
        return _did_not_run(minion, CHECKS["doctor"], doctor)
    found = _first_failing(doctor)
    node = dict(found) if found else {}
    if doctor.get("ok") is False and not found:
        node = {"layer": doctor.get("first_failing_layer") or "unknown", "check": None,
                "cause": "nvgpu.doctor says the node is not ok but names no failing check",
                "fix": f"salt {minion} nvgpu.doctor"}
    return node


def _vector_add_run(minion, value, user):
    """One vector add's answer: ``(run, problem or {})``."""
    if not isinstance(value, dict) or "passed" not in value:
        return {"user": user, "passed": False, "duration_s": None}, _did_not_run(minion, CHECKS["vector_add"], value)
    run = {"user": user, "passed": value["passed"] is True, "duration_s": value.get("duration_s")}
    if run["passed"]:
        return run, {}
    diagnosis = value.get("diagnosis") if isinstance(value.get("diagnosis"), dict) else nvgpu_failures.UNKNOWN
    return run, {"layer": diagnosis.get("layer"), "check": None, "cause": diagnosis.get("cause"),
                 "fix": diagnosis.get("fix"), "user": user}


def _root_causes(client, nodes, timeout):
    """
    Ask ``nvgpu.doctor`` on the nodes whose vector add failed (read-only: no batches
    needed); where it names a failing check, that check becomes the node's cause and the
    vector add's diagnosis its ``symptom``.
    """
    failed = sorted(m for m, node in nodes.items() if node.get("runs") and node.get("layer") != "salt"
                    and not all(run["passed"] for run in node["runs"]))
    if not failed:
        return
    said = _ask(client, failed, "list", [CHECKS["doctor"]], [[]], None, timeout)
    for minion in failed:
        found = _first_failing(said.get(minion, {}).get(CHECKS["doctor"]))
        if found:
            node = nodes[minion]
            node["symptom"] = {key: node[key] for key in ("cause", "fix", "layer")}
            node.update(found)


# ---------------------------------------------------------------------------
# Summing up
# ---------------------------------------------------------------------------


def _status(node):
    if node.get("reboot_required"):
        return "reboot_required"
    return "failing" if node.get("cause") else "ok"


def _groups(nodes):
    """Failing and reboot-required nodes by (status, layer, check or cause); most nodes first."""
    grouped = collections.OrderedDict()
    for minion, node in nodes.items():
        if node["status"] == "reboot_required":
            key = ("reboot_required", "driver", "reboot_required", "")
            cause = "grain nvgpu:reboot_required is True" + (f"; {node['cause']}" if node.get("cause") else "")
            fix, layer, check = REBOOT_FIX, "driver", "reboot_required"
        elif node["status"] == "failing":
            # A doctor's check names the cause (its evidence carries node-specific words);
            # a diagnosis from the knowledge base is the same text on every node.
            key = ("failing", node["layer"], node.get("check") or "", "" if node.get("check") else node["cause"])
            cause, fix, layer, check = node["cause"], node["fix"], node["layer"], node.get("check")
        else:
            continue
        group = grouped.setdefault(key, {"status": key[0], "layer": layer, "check": check, "causes": [],
                                         "fixes": [], "nodes": []})
        group["causes"].append(cause)
        group["fixes"].append(fix)
        group["nodes"].append(minion)
    groups = []
    for group in grouped.values():
        causes, fixes = group.pop("causes"), group.pop("fixes")
        # The words most of the group's nodes said (each node's own are in its row).
        group["cause"] = collections.Counter(causes).most_common(1)[0][0]
        group["fix"] = collections.Counter(fixes).most_common(1)[0][0]
        group["count"] = len(group["nodes"])
        groups.append(group)
    groups.sort(key=lambda g: (g["status"] != "failing", -g["count"], LAYER_ORDER.get(g["layer"], 99), g["cause"]))
    return groups


def _gpu_groups(nodes):
    """Failing GPUs by (layer, the doctor's check or the cause); most GPUs first."""
    grouped = collections.OrderedDict()
    for minion, node in nodes.items():
        for gpu in node.get("gpus_failing") or []:
            key = (gpu["layer"], gpu["check"] or "", "" if gpu["check"] else gpu["cause"])
            group = grouped.setdefault(key, {"layer": gpu["layer"], "check": gpu["check"], "causes": [], "fixes": [],
                                             "gpus": []})
            group["causes"].append(gpu["cause"])
            group["fixes"].append(gpu["fix"])
            group["gpus"].append({"node": minion, "index": gpu["index"], "uuid": gpu["uuid"]})
    groups = []
    for group in grouped.values():
        causes, fixes = group.pop("causes"), group.pop("fixes")
        group.update(cause=collections.Counter(causes).most_common(1)[0][0],
                     fix=collections.Counter(fixes).most_common(1)[0][0], count=len(group["gpus"]))
        groups.append(group)
    groups.sort(key=lambda g: (-g["count"], LAYER_ORDER.get(g["layer"], 99), g["cause"]))
    return groups


def _versions(nodes):
    rows = {}
    for node in nodes.values():
        if node["status"] == "no_return":
            continue
        key = (node["driver_version"], node["stream"], node["gpu_model"])
        row = rows.setdefault(key, {"driver_version": key[0], "stream": key[1], "gpu_model": key[2],
                                    "nodes": 0, "ok": 0, "failing": 0, "reboot_required": 0})
        row["nodes"] += 1
        row[node["status"]] += 1
    return sorted(rows.values(), key=lambda r: tuple(str(v or "") for v in (r["driver_version"], r["stream"],
                                                                            r["gpu_model"])))


def report(tgt="*", tgt_type="glob", check="doctor", users=False, image=None, mode="auto", gpus=None,
           batch=None, timeout=None, html=None):
    """
    Check the GPU nodes matched by ``tgt`` and sum the fleet up.

    tgt, tgt_type
        The minions, as for ``salt``: ``tgt='gpu-*'``, or ``tgt='G@nvgpu:gpu_count:8'
        tgt_type=compound``. Default every minion.

    check
        ``doctor`` (default): ``nvgpu.doctor`` on every node, read-only, about a second
        and a few kB each; the first failing check is the node's cause.
        ``vector_add``: the CUDA vector add in a container as root (and, with ``users``,
        as each rootless user of the node's pillar), then the doctor where it failed.

    users
        With ``check=vector_add``: also run it as every user of each node's pillar
        ``gpu:rootless_users``. Default False.

    image
        With ``check=vector_add``: the validation image. Default: each node's pillar
        ``gpu:validate:image`` (its own mirror), else ``nvgpu.run_vector_add``'s default.

    mode
        With ``check=vector_add``: hook, cdi or auto (default: what the node is configured for).

    gpus
        With ``check=vector_add``: ``each`` runs it once per GPU, and the failing GPUs are
        grouped by cause across the fleet (``gpu_groups``). Default: ``run_vector_add``'s
        (all GPUs in one container). The doctor always reports each GPU's health.

    batch
        Run the check on this many minions at a time (``10%``, ``20``), Salt's batch
        mode. Default: ``10%`` for ``vector_add`` (its image pulls), all at once for
        ``doctor``. ``batch=100%`` runs everything at once.

    timeout
        Seconds Salt waits for a minion that says nothing (a minion still working is
        waited for: Salt's job checks see it running). Default: the master's ``timeout``.

    html
        Also write the report as one self-contained HTML page (no network: inline CSS
        and SVG) to this path on the master.

    The return (``--out=json`` prints it as is; ``--out=nvgpu`` renders it):

    .. code-block:: text

        {
          "check": "doctor" | "vector_add",
          "summary": {"nodes": int, "ok": int, "failing": int, "reboot_required": int,
                      "no_return": int},        # each node counted once: the four add up to nodes
          "groups": [                           # failing and reboot-required nodes, most nodes first
            {"status": "failing" | "reboot_required", "layer": str, "check": str | None,
             "cause": str, "fix": str, "count": int, "nodes": [id, ...]}],
          "gpu_groups": [                       # failing GPUs by layer and check or cause, most GPUs first:
            {"layer": str, "check": str | None,  # the doctor's per-GPU health, run_vector_add gpus=each
             "cause": str, "fix": str, "count": int,
             "gpus": [{"node": id, "index": int | None, "uuid": str | None}]}],
          "versions": [                         # nodes that answered, by driver x stream x GPU model
            {"driver_version": str | None, "stream": str | None, "gpu_model": str | None,
             "nodes": int, "ok": int, "failing": int, "reboot_required": int}],
          "nodes": {id: {
            "status": "ok" | "failing" | "reboot_required" | "no_return",
            "driver_version": str | None,       # the loaded driver (else the grain's)
            "stream": str | None,               # the enabled nvidia-driver module stream (None on
                                                # RHEL 10: no streams, the driver version tells the branch)
            "gpu_model": str | None, "gpu_count": int | None,
            "reboot_required": bool,            # grain nvgpu:reboot_required (absent: False)
            "layer": str, "check": str | None, "cause": str, "fix": str,   # when not ok
            "symptom": {"cause", "fix", "layer"},   # vector_add: its diagnosis, when the doctor found the cause
            "user": str | None,                 # vector_add: who the failing run ran as (None: root)
            "runs": [{"user": str | None, "passed": bool, "duration_s": float}],   # vector_add
            "gpus_failing": [{"index", "uuid", "layer", "check", "cause", "fix"}]}},   # where a GPU fails
          "duration_s": float,                  # the report's own wall time
          "html": path                          # with html=PATH
        }

    A node's ``status`` is ``no_return`` when its minion did not answer within Salt's
    ``timeout`` (Salt's own wait for a silent minion, so one dead node does not hold the
    report), else ``reboot_required`` when its grain says so, else ``failing`` when its check
    found a problem (or could not run), else ``ok``. Group ``layer`` is one of
    ``nvgpu_failures.LAYERS``, or ``salt`` when the check did not run on the minion.

    CLI Example:

    .. code-block:: bash

        salt-run nvgpu.report
        salt-run nvgpu.report tgt='gpu-*' html=/srv/www/gpu-fleet.html
        salt-run nvgpu.report check=vector_add users=True batch=10%
        salt-run nvgpu.report check=vector_add gpus=each
        salt-run nvgpu.report tgt='G@nvgpu:gpus:name:NVIDIA H200' tgt_type=compound --out=nvgpu
    """
    started = time.monotonic()
    if check not in CHECKS:
        raise ValueError(f"check={check!r}: use one of {', '.join(CHECKS)}")
    if batch is None and check == "vector_add":
        batch = VECTOR_ADD_BATCH
    if str(batch) == "100%":
        batch = None
    expected = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)["minions"]
    client = salt.client.get_local_client(__opts__["conf_file"])

    funs, args = list(FACTS), [list(a) for a in FACT_ARGS]
    if check == "doctor":
        funs.append(CHECKS["doctor"])
        args.append([])
        said = _ask(client, tgt, tgt_type, funs, args, batch, timeout)
    else:
        # The facts, the node's image and users in one job; then the vector adds, a job per
        # (image, user), in batches.
        funs.append("pillar.item")
        # unmask: Salt 3008 masks every pillar value in pillar.item's return unless asked not to.
        args.append([USERS_KEY, IMAGE_KEY, _kwarg(unmask=True)])
        said = _ask(client, tgt, tgt_type, funs, args, None, timeout)
        _vector_adds(client, said, users, image, mode, gpus, batch, timeout)

    nodes = {}
    for minion in sorted(set(expected) | set(said)):
        if minion not in said:
            nodes[minion] = {"status": "no_return", "driver_version": None, "stream": None, "gpu_model": None,
                             "gpu_count": None, "reboot_required": False, "layer": "salt", "check": None,
                             "cause": "the minion did not return",
                             "fix": f"check that it is up: salt {minion} test.ping"}
            continue
        node = _facts(said[minion])
        if check == "doctor":
            node.update(_doctor_node(minion, said[minion]))
            node["gpus_failing"] = _failing_gpus(said[minion].get(CHECKS["doctor"]))
        else:
            node["runs"] = []
            node["gpus_failing"] = []
            for user, value in said[minion].get("vector_adds", []):
                run, problem = _vector_add_run(minion, value, user)
                node["runs"].append(run)
                node["gpus_failing"] += _failing_gpus(value)
                if problem and "cause" not in node:
                    node.update(problem)
        if not node["gpus_failing"]:
            del node["gpus_failing"]
        nodes[minion] = node
    if check == "vector_add":
        _root_causes(client, nodes, timeout)
    for node in nodes.values():
        node.setdefault("status", _status(node))

    summary = {"nodes": len(nodes)}
    summary.update({status: sum(1 for n in nodes.values() if n["status"] == status) for status in STATUSES})
    ret = {"check": check, "summary": summary, "groups": _groups(nodes), "gpu_groups": _gpu_groups(nodes),
           "versions": _versions(nodes), "nodes": nodes}
    ret["duration_s"] = round(time.monotonic() - started, 2)
    if html:
        ret["html"] = _write_page(html, ret)
    return ret


def _vector_adds(client, said, users, image, mode, gpus, batch, timeout):
    """Run the vector add on the nodes that answered, a job per (image, user); each node's
    answers go to ``said[minion]["vector_adds"]`` as ``[(user, return)]``."""
    jobs = collections.defaultdict(list)
    for minion, facts in said.items():
        facts["vector_adds"] = []
        pillar = facts.get("pillar.item") if isinstance(facts.get("pillar.item"), dict) else {}
        node_image = image or pillar.get(IMAGE_KEY) or None
        node_image = node_image if isinstance(node_image, str) else None
        jobs[(node_image, None)].append(minion)
        if users:
            for entry in pillar.get(USERS_KEY) or []:
                name = entry.get("name") if isinstance(entry, dict) else entry
                if isinstance(name, str) and name:
                    jobs[(node_image, name)].append(minion)
    fun = CHECKS["vector_add"]
    for (node_image, user), minions in sorted(jobs.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        kwargs = {"mode": mode}
        if gpus is not None:
            kwargs["gpus"] = str(gpus)
        if node_image:
            kwargs["image"] = node_image
        if user:
            kwargs["user"] = user
        answers = _ask(client, sorted(minions), "list", [fun], [[_kwarg(**kwargs)]], batch, timeout)
        for minion in minions:
            value = answers.get(minion, {}).get(fun, "the minion did not return")
            said[minion]["vector_adds"].append((user, value))


def _write_page(path, ret):
    """Write the HTML page atomically (a reader never sees half a page); return the path."""
    path = os.path.abspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(nvgpu_fleet_page.render(ret))
    os.replace(tmp, path)
    return path
