"""
Execution module: the health of each GPU of a node, read-only.

A node with eight GPUs is usually broken one GPU at a time: a GPU falls off the bus, logs an
Xid error, or has uncorrectable ECC memory errors and rows waiting to be remapped, while the
node as a whole still runs CUDA on its first GPU. This module finds such a GPU by index, UUID
and PCI address, from what the node already records:

- the GPUs on the PCI bus (sysfs) against the GPUs the driver sees (``nvidia-smi``);
- the Xid errors in the kernel log since boot (``/dev/kmsg``, what ``dmesg`` reads);
- ECC errors and retired or remapped memory (``nvidia-smi --query-gpu``).

It loads no module and changes nothing; ``nvgpu.doctor`` includes its checks, and
``nvgpu.run_vector_add gpus=each`` takes its list of GPUs. Where DCGM is installed,
:py:func:`dcgm_diag` runs its quick diagnostic (``dcgmi diag -r 1``) on request.

:depends: nvidia-smi (the driver's nvidia-driver-cuda package)
"""

import nvgpu_failures
import nvgpu_node
import salt.utils.path
from salt.exceptions import CommandExecutionError

__virtualname__ = "nvgpu_health"

LAYER = "gpu"


def __virtual__():
    if __grains__.get("kernel") != "Linux":
        return (False, "The nvgpu_health execution module only runs on Linux minions")
    return __virtualname__


def _smi(fields):
    """Rows of ``nvidia-smi --query-gpu=FIELDS``; CommandExecutionError with nvidia-smi's words."""
    smi = salt.utils.path.which("nvidia-smi")
    if not smi:
        raise CommandExecutionError(
            f"nvidia-smi not found in PATH: {nvgpu_failures.DRIVER_PACKAGE_HINT} (nvidia-smi is in nvidia-driver-cuda)"
        )
    argv = [smi, "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"]
    ret = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True, timeout=60)
    if ret["retcode"] != 0:
        said = " ".join(((ret.get("stdout") or "") + " " + (ret.get("stderr") or "")).split())
        raise CommandExecutionError(f"`{' '.join(argv)}` failed ({ret['retcode']}): {said}")
    return nvgpu_node.parse_smi_csv(ret["stdout"], fields)


def _gpu(row):
    return {"index": row["index"], "uuid": row["uuid"], "name": row["name"], "pci": row["pci.bus_id"]}


def gpus():
    """
    The GPUs the driver sees, in nvidia-smi's order: ``[{"index", "uuid", "name", "pci"}]``
    (``pci`` as sysfs spells it, ``0000:3b:00.0``). Raises CommandExecutionError with
    nvidia-smi's words where it cannot list them (no driver, driver/library mismatch).

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_health.gpus
    """
    return [_gpu(row) for row in _smi(nvgpu_node.SMI_GPU_FIELDS)]


def _label(gpu):
    if gpu.get("index") is None:
        return f"the GPU at {gpu['pci']}"
    return f"GPU {gpu['index']} ({gpu['uuid']}, {gpu['pci']})"


def _check(name, status, evidence, fix=None):
    return {"name": name, "layer": LAYER, "status": status, "evidence": evidence,
            "fix": fix if status in ("fail", "warn") else None}


def _fault(gpu, check, cause, fix):
    gpu["healthy"] = False
    gpu["causes"].append({"check": check, "cause": cause, "fix": fix})


def _on_bus(seen, on_pci, smi_error):
    """The gpus-on-bus check; the GPUs on the bus that the driver does not see, as entries."""
    if smi_error:
        found = nvgpu_failures.diagnose_text(smi_error)
        if found and found["layer"] == "kernel-modules":
            # The driver itself cannot answer (its module and libraries of two versions after an
            # upgrade): the doctor's kernel-modules checks name that; nothing is known of the GPUs.
            return _check("gpus-on-bus", "skip", f"the driver cannot be asked: {smi_error}"), []
        return _check("gpus-on-bus", "fail", f"the driver lists no GPUs: {smi_error}",
                      (nvgpu_failures.diagnose_text(smi_error) or {}).get("fix") or nvgpu_failures.GPU_OFF_BUS_FIX), []
    missing = [address for address in on_pci if address not in {gpu["pci"] for gpu in seen}]
    evidence = (f"the driver sees {len(seen)} GPU(s) (nvidia-smi); the PCI bus has {len(on_pci)} "
                f"({nvgpu_node.SYS_PCI_DEVICES}, vendor {nvgpu_node.NVIDIA_PCI_VENDOR}, display class)")
    lost = [{"index": None, "uuid": None, "name": None, "pci": address, "healthy": False, "causes": []}
            for address in missing]
    if missing:
        for gpu in lost:
            _fault(gpu, "gpus-on-bus", "on the PCI bus but not seen by the driver (fell off the bus or "
                   "failed to initialise)", nvgpu_failures.GPU_OFF_BUS_FIX)
        return _check("gpus-on-bus", "fail", f"{evidence}: not seen by the driver: {', '.join(missing)}",
                      nvgpu_failures.GPU_OFF_BUS_FIX), lost
    if not seen:
        return _check("gpus-on-bus", "fail", f"{evidence}: no GPU", nvgpu_failures.GPU_OFF_BUS_FIX), lost
    return _check("gpus-on-bus", "ok", evidence), lost


def _xids(by_pci):
    try:
        messages = nvgpu_node.read_kmsg()
    except OSError as err:
        return _check("xid", "skip", f"cannot read the kernel log {nvgpu_node.KMSG}: {err.strerror or err}")
    xids = nvgpu_node.parse_xids(messages)
    if not xids:
        return _check("xid", "ok", f"no Xid error in the kernel log since boot ({len(messages)} messages in "
                      f"{nvgpu_node.KMSG})")
    worst, lines, fixes = "warn", [], []
    for pci in sorted({xid["pci"] for xid in xids}, key=str):
        gpu = by_pci.get(pci) or {"index": None, "uuid": None, "pci": pci}
        for number in sorted({xid["xid"] for xid in xids if xid["pci"] == pci}):
            found = [xid for xid in xids if xid["pci"] == pci and xid["xid"] == number]
            status, meaning = nvgpu_failures.xid_meaning(number)
            lines.append(f"{_label(gpu)}: Xid {number} x{len(found)}, {meaning} (last: {found[-1]['text']})")
            if status == "fail":
                worst = "fail"
                fix = nvgpu_failures.DRAIN_RESET_FIX.format(index=gpu["index"] if gpu["index"] is not None else "N")
                fix = f"{fix}; {nvgpu_failures.RMA_FIX}"
                fixes.append(f"{_label(gpu)}: {fix}")
                if "causes" in gpu:
                    _fault(gpu, "xid", f"Xid {number}: {meaning}", fix)
    fix = "; ".join(dict.fromkeys(fixes)) or "see what ran on the GPU then (usually an application fault)"
    return _check("xid", worst, "; ".join(lines), fix)


def _memory(rows, by_pci):
    if rows is None:
        return _check("gpu-memory", "skip", "nvidia-smi could not report ECC and remapped memory")
    bad, lines = [], []
    for row in rows:
        gpu = by_pci[row["pci.bus_id"]]
        found = []
        errors = row.get("ecc.errors.uncorrected.volatile.total")
        if errors and errors.isdigit() and int(errors) > 0:
            found.append(f"{errors} uncorrectable ECC error(s) since the last reset")
        if row.get("retired_pages.pending") == "Yes":
            found.append("retired pages pending (a reset retires them)")
        if row.get("remapped_rows.pending") == "Yes":
            found.append("rows pending remapping (a reset remaps them)")
        if row.get("remapped_rows.failure") == "Yes":
            found.append("row remapping failed (no spare rows left)")
        lines.append(f"{_label(gpu)}: ECC {row.get('ecc.mode.current') or 'n/a'}, uncorrectable "
                     f"{errors if errors is not None else 'n/a'}, retired pending "
                     f"{row.get('retired_pages.pending') or 'n/a'}, remapped pending "
                     f"{row.get('remapped_rows.pending') or 'n/a'}, remap failure "
                     f"{row.get('remapped_rows.failure') or 'n/a'}")
        if found:
            if row.get("remapped_rows.failure") == "Yes":
                fix = nvgpu_failures.NO_SPARE_ROWS_FIX
            else:
                fix = f"{nvgpu_failures.DRAIN_RESET_FIX.format(index=gpu['index'])}; {nvgpu_failures.RMA_FIX}"
            _fault(gpu, "gpu-memory", "; ".join(found), fix)
            bad.append(f"{_label(gpu)}: {fix}")
    if bad:
        return _check("gpu-memory", "fail", "; ".join(lines), "; ".join(bad))
    return _check("gpu-memory", "ok", "; ".join(lines))


def _dcgm():
    if salt.utils.path.which("dcgmi"):
        return _check("dcgm", "skip", "DCGM is installed: for a deeper check of every GPU run `dcgmi diag -r 1` "
                      "(salt-call nvgpu_health.dcgm_diag); not run by the doctor, which only reads")
    return _check("dcgm", "skip", "dcgmi is not installed: no DCGM diagnostic to offer (optional)")


def check(loaded=None):
    """
    The health of each GPU, read-only: the doctor's per-GPU checks (``gpus-on-bus``, ``xid``,
    ``gpu-memory``, ``dcgm``), each ``{"name", "layer": "gpu", "status", "evidence", "fix"}``,
    and per GPU whether it is healthy and why not.

    loaded
        Whether the nvidia module is loaded (default: read from /sys/module). Without it
        nothing is asked of the driver (nvidia-smi run as root would load it).

    Returns ``{"checks": [...], "gpus": [{"index", "uuid", "name", "pci", "healthy",
    "causes": [{"check", "cause", "fix"}]}], "healthy": int, "failing": int}``; a GPU on the
    bus that the driver does not see has index, uuid and name None.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_health.check
    """
    if loaded is None:
        loaded = nvgpu_node.module_loaded("nvidia")
    names = ("gpus-on-bus", "xid", "gpu-memory")
    if not loaded:
        checks = [_check(name, "skip", "the nvidia module is not loaded") for name in names]
        return {"checks": checks + [_dcgm()], "gpus": [], "healthy": 0, "failing": 0}
    rows, memory_rows, smi_error = None, None, None
    try:
        rows = _smi(nvgpu_node.SMI_HEALTH_FIELDS)
    except CommandExecutionError as err:
        if "is not a valid field" in str(err):  # an older driver without the row remapper fields
            try:
                rows = _smi(nvgpu_node.SMI_GPU_FIELDS)
            except CommandExecutionError as again:
                smi_error = str(again)
        else:
            smi_error = str(err)
    else:
        memory_rows = rows
    seen = [dict(_gpu(row), healthy=True, causes=[]) for row in rows or []]
    on_bus, lost = _on_bus(seen, nvgpu_node.pci_gpus(), smi_error)
    every = seen + lost
    by_pci = {gpu["pci"]: gpu for gpu in every}
    checks = [on_bus, _xids(by_pci)]
    checks.append(_memory(memory_rows, by_pci))
    checks.append(_dcgm())
    failing = sum(1 for gpu in every if not gpu["healthy"])
    return {"checks": checks, "gpus": every, "healthy": len(every) - failing, "failing": failing}


def dcgm_diag(level=1, timeout=600):
    """
    Run DCGM's diagnostic on every GPU: ``dcgmi diag -r LEVEL`` (1: quick, seconds; 2: medium,
    about 2 minutes; 3: long). It runs work on the GPUs: run it on a drained node. Needs DCGM
    (datacenter-gpu-manager) and its host engine running.

    Returns ``{"passed": bool, "command": [argv], "retcode": int, "output": str}``.

    CLI Example:

    .. code-block:: bash

        salt '*' nvgpu_health.dcgm_diag
        salt '*' nvgpu_health.dcgm_diag level=2
    """
    if level not in (1, 2, 3, 4):
        raise CommandExecutionError(f"level must be 1, 2, 3 or 4, not {level!r}")
    dcgmi = salt.utils.path.which("dcgmi")
    if not dcgmi:
        raise CommandExecutionError("dcgmi not found in PATH: install datacenter-gpu-manager and "
                                    "systemctl enable --now nvidia-dcgm")
    argv = [dcgmi, "diag", "-r", str(level)]
    ret = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True, timeout=timeout)
    passed = ret["retcode"] == 0
    if not passed:
        __context__["retcode"] = 1
    return {"passed": passed, "command": argv, "retcode": ret["retcode"],
            "output": ((ret.get("stdout") or "") + (ret.get("stderr") or "")).strip()}
