"""
`salt-call nvgpu.doctor` on the simulated node (issue 10): a converged node is healthy;
each injected fault fails exactly its check, with evidence and fix, and the fix (or
`state.apply gpu`) makes the doctor pass again; the doctor changes nothing on the node,
also with the modules unloaded. One converged node serves the tests in order: each
leaves it healthy.
"""

import json

import pytest

from tests.functional.test_formula import _config, converge
from tests.node import KERNEL_RELEASE, SALT_CALL, Node, site_pillar
from tests.node.assets import NEXT_KERNEL_RELEASE

pytestmark = pytest.mark.node

USER = "gpuuser"
LINGER = f"/var/lib/systemd/linger/{USER}"
MARK = "=====nvgpu-doctor====="


@pytest.fixture(scope="module")
def converged(node_assets):
    """A node converged with the 550 stream, in cdi mode (auto, Podman 4.9), one rootless user."""
    node = Node.create(node_assets)
    pillar = site_pillar(node_assets, driver={"stream": "550-dkms"}, rootless_users=[{"name": USER, "uid": 2001}])
    node.write_pillar(pillar)
    converge(node, pillar)
    assert node.read_file(LINGER) == "", "the formula turns lingering on for rootless users"
    node.pillar = pillar
    yield node
    node.destroy()


def unchanged(before, after):
    # _config leaves out Podman's own bookkeeping (test_formula.PODMAN_BOOKKEEPING) too.
    return _config(before) == _config(after)


def doctor(node):
    res = node.salt_call("nvgpu.doctor")
    assert isinstance(res.data, dict) and "checks" in res.data, f"{res.stdout}\n{res.stderr}"
    return res.data, res.retcode


def assert_healthy(data, retcode):
    problems = [c for c in data["checks"] if c["status"] not in ("ok", "skip")]
    assert not problems, problems
    assert data["ok"] is True and data["first_failing_layer"] is None and retcode == 0


def assert_fails(data, retcode, *names, warn=()):
    """Exactly these checks fail (the first one names the layer), and those in `warn` warn,
    each with evidence and fix."""
    failing = [c for c in data["checks"] if c["status"] in ("fail", "warn")]
    assert [c["name"] for c in failing] == [*names, *warn], failing
    for check in failing:
        assert check["status"] == ("warn" if check["name"] in warn else "fail"), check
        assert check["evidence"] and check["fix"], check
    assert data["first_failing_layer"] == failing[0]["layer"] and data["ok"] is False and retcode == 1
    return {c["name"]: c for c in failing}


def test_a_converged_node_is_healthy_and_the_doctor_changes_nothing(converged):
    before = converged.snapshot()
    data, retcode = doctor(converged)
    assert unchanged(before, converged.snapshot())
    assert_healthy(data, retcode)
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    for name in ("kernel-devel", "nvidia-ko", "nvidia-ko-newest", "secure-boot", "nouveau", "nvidia-loaded",
                 "driver-version", "device-nodes", "podman", "toolkit", "mode", "cdi-spec-count",
                 "cdi-spec-readable", "cdi-spec-driver", "cdi-refresh", f"account:{USER}", f"subuid:{USER}",
                 f"subgid:{USER}", f"runtime-dir:{USER}", "image"):
        assert statuses[name] == "ok", (name, data["checks"])
    # No NVSwitch; SELinux off on this machine's kernel.
    for name in ("fabric-manager", "selinux-labels"):
        assert statuses[name] == "skip", (name, data["checks"])


def test_modules_unloaded_fail_and_the_doctor_loads_nothing(converged):
    converged.reboot()
    before = converged.snapshot()
    data, retcode = doctor(converged)
    # Nothing loaded, no device node created: sys-module and dev are as the reboot left them.
    assert unchanged(before, converged.snapshot())
    # nvidia-persistenced, enabled, failed to start at boot without the driver.
    failing = assert_fails(data, retcode, "nvidia-loaded", "device-nodes", warn=("persistenced",))
    assert "nvidia, nvidia_uvm" in failing["nvidia-loaded"]["evidence"]
    assert "nvgpu.load_modules" in failing["nvidia-loaded"]["fix"]
    converge(converged, converged.pillar)
    assert_healthy(*doctor(converged))


def test_nouveau_loaded_again(converged):
    (converged.root / "sys-module" / "nouveau").mkdir()
    failing = assert_fails(*doctor(converged), "nouveau")
    assert "modprobe -r nouveau" in failing["nouveau"]["fix"]
    converge(converged, converged.pillar)
    assert_healthy(*doctor(converged))


def doctors_in_one_boot(node, *steps):
    """
    Each shell step, then the doctor, all in one command: /run (and /var/run) is a fresh
    tmpfs per command in the node, so what a step puts there lives only that long.
    Returns [(data, retcode)] of each doctor.
    """
    run = f"{SALT_CALL} --local --out=json --log-level=quiet nvgpu.doctor; echo {MARK}$?"
    proc = node.run(["sh", "-c", "; ".join(f"{step} && {run}" for step in steps)])
    parts = proc.stdout.split(MARK)
    assert len(parts) == len(steps) + 1, proc
    results = []
    for i, part in enumerate(parts[:-1]):
        text = part.split("\n", 1)[1] if i else part
        retcode = int(parts[i + 1].split("\n", 1)[0].strip())
        results.append((json.loads(text)["local"], retcode))
    return results


def test_a_second_cdi_spec_in_var_run(converged):
    first, second = doctors_in_one_boot(
        converged, "mkdir -p /var/run/cdi && cp /etc/cdi/nvidia.yaml /var/run/cdi/nvidia.yaml",
        "rm /var/run/cdi/nvidia.yaml")
    failing = assert_fails(*first, "cdi-spec-count")
    assert "/etc/cdi/nvidia.yaml, /var/run/cdi/nvidia.yaml" in failing["cdi-spec-count"]["evidence"]
    assert failing["cdi-spec-count"]["fix"].startswith("keep one: rm /var/run/cdi/nvidia.yaml")
    assert_healthy(*second)


def test_no_runtime_dir_nor_lingering_under_systemd(converged):
    # systemd as init (its /run/systemd/system), no session for the user, lingering off;
    # then what `loginctl enable-linger` writes.
    first, second = doctors_in_one_boot(
        converged, f"mkdir -p /run/systemd/system && rm {LINGER}", f"touch {LINGER}")
    data, retcode = first
    problems = [c for c in data["checks"] if c["status"] not in ("ok", "skip")]
    assert [(c["name"], c["status"]) for c in problems] == [(f"runtime-dir:{USER}", "warn")], problems
    assert "/run/user/2001" in problems[0]["evidence"] and problems[0]["fix"] == f"loginctl enable-linger {USER}"
    assert data["ok"] is True and retcode == 0
    check = next(c for c in second[0]["checks"] if c["name"] == f"runtime-dir:{USER}")
    assert check["status"] == "ok" and "lingering is on" in check["evidence"]


def test_a_stale_cdi_spec(converged):
    spec = converged.read_file("/etc/cdi/nvidia.yaml")
    converged.write_file("/etc/cdi/nvidia.yaml", spec.replace("550.127.08", "550.54.14"))
    failing = assert_fails(*doctor(converged), "cdi-spec-driver")
    assert "550.54.14" in failing["cdi-spec-driver"]["evidence"]
    converge(converged, converged.pillar)
    assert_healthy(*doctor(converged))


def test_out_nvgpu_prints_the_checks_as_a_table(converged):
    """`--out=nvgpu`: the same answer as --out=json, as a table; the failing check with its fix."""
    spec = converged.read_file("/etc/cdi/nvidia.yaml")
    converged.write_file("/etc/cdi/nvidia.yaml", spec.replace("550.127.08", "550.54.14"))
    try:
        data, retcode = doctor(converged)
        table = converged.run([SALT_CALL, "--local", "--out=nvgpu", "--log-level=quiet", "nvgpu.doctor"],
                              env={"COLUMNS": "100"})
    finally:
        converged.write_file("/etc/cdi/nvidia.yaml", spec)
    assert table.returncode == retcode == 1, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "local:" and "\x1b" not in table.stdout  # no colours into a pipe
    assert max(len(line) for line in lines) <= 100
    end = next(i for i, line in enumerate(lines) if line.startswith("local: doctor: "))
    checks = "\n".join(lines[2:end]).split("\n\n", 1)[0].splitlines()  # the GPUs' table follows a blank line
    rows = [line.split()[:3] for line in checks if line[4] != " "]
    assert rows == [[c["status"].upper() if c["status"] in ("fail", "warn") else c["status"], c["layer"], c["name"]]
                    for c in data["checks"]]
    (failing,) = [c for c in data["checks"] if c["status"] == "fail"]
    assert failing["name"] == "cdi-spec-driver"
    words = " ".join(table.stdout.split())
    assert f"FAIL toolkit cdi-spec-driver {failing['evidence']} fix: {failing['fix']}" in words
    # The summary, its counts on a line of their own where the terminal is too narrow for both.
    summary = " ".join(line.strip() for line in lines[end:])
    assert summary.startswith("local: doctor: FAILED at layer toolkit (first failing check: cdi-spec-driver); ")
    assert data["gpus"]
    for gpu in data["gpus"]:
        assert [str(gpu["index"]), gpu["uuid"], "ok"] in [[*line.split()[:2], line.split()[-1]] for line in lines if line]
    assert_healthy(*doctor(converged))


def test_a_removed_subuid_range(converged):
    subuid = converged.read_file("/etc/subuid")
    converged.write_file("/etc/subuid", "".join(line for line in subuid.splitlines(True)
                                                if not line.startswith(f"{USER}:")))
    failing = assert_fails(*doctor(converged), f"subuid:{USER}")
    assert "/etc/subuid" in failing[f"subuid:{USER}"]["evidence"]
    converge(converged, converged.pillar)
    assert_healthy(*doctor(converged))


def test_an_installed_driver_not_loaded_after_a_stream_switch(converged, node_assets):
    res = converged.salt_call("dnf_module.switch_to", "nvidia-driver", "latest-dkms", "profile=default")
    assert res.retcode == 0, res.stderr
    failing = assert_fails(*doctor(converged), "driver-version")
    assert "reload or reboot required" in failing["driver-version"]["evidence"]
    converged.pillar = site_pillar(node_assets, rootless_users=[{"name": USER, "uid": 2001}])
    converged.write_pillar(converged.pillar)
    converge(converged, converged.pillar)
    assert_healthy(*doctor(converged))


def test_a_newer_kernel_without_the_driver(converged):
    # As `dnf update` brings a kernel: its DKMS hook cannot build without its kernel-devel.
    converged.dnf("install", "kernel-core")
    assert converged.exists(f"/lib/modules/{NEXT_KERNEL_RELEASE}/vmlinuz")
    failing = assert_fails(*doctor(converged), "nvidia-ko-newest")
    assert f"the newest installed kernel {NEXT_KERNEL_RELEASE}" in failing["nvidia-ko-newest"]["evidence"]
    assert f"kernel-devel-{NEXT_KERNEL_RELEASE} is not installed" in failing["nvidia-ko-newest"]["evidence"]
    # The fix it names, as written.
    fix = failing["nvidia-ko-newest"]["fix"]
    assert fix.startswith(f"dnf install kernel-devel-{NEXT_KERNEL_RELEASE}, then dkms autoinstall -k ")
    converged.dnf("install", f"kernel-devel-{NEXT_KERNEL_RELEASE}")
    converged.run(["dkms", "autoinstall", "-k", NEXT_KERNEL_RELEASE], check=True)
    data, retcode = doctor(converged)
    assert_healthy(data, retcode)
    assert "the next boot's" in next(c for c in data["checks"] if c["name"] == "nvidia-ko-newest")["evidence"]
    converged.dnf("remove", "kernel-core", f"kernel-devel-{NEXT_KERNEL_RELEASE}")
    assert_healthy(*doctor(converged))


def test_secure_boot_with_the_dkms_key_not_enrolled(converged):
    converged.set_secure_boot(True)
    converged.reboot()
    data, retcode = doctor(converged)
    failing = [c for c in data["checks"] if c["status"] == "fail"]
    # The cause first; without the module, nothing is loaded and no device node exists.
    assert [c["name"] for c in failing] == ["secure-boot", "nvidia-loaded", "device-nodes"], failing
    assert data["first_failing_layer"] == "driver" and retcode == 1
    assert all(c["status"] == "ok" for c in data["checks"][:3]), data["checks"][:3]
    evidence = failing[0]["evidence"]
    assert "SecureBoot enabled" in evidence and "'DKMS module signing key' is not enrolled" in evidence
    assert "mokutil --import /var/lib/dkms/mok.pub" in failing[0]["fix"]
    # The load itself fails with the kernel's words, and its diagnosis is the same.
    res = converged.salt_call("nvgpu.load_modules")
    assert res.retcode != 0 and "Key was rejected by service" in res.stdout + res.stderr
    assert "mokutil --import" in res.stdout + res.stderr
    # The administrator enrolls DKMS's key (mokutil --import, confirmed in the MOK manager at boot).
    converged.enroll_mok(converged.read_file("/var/lib/dkms/mok.pub"))
    converge(converged, converged.pillar)
    assert_healthy(*doctor(converged))
    converged.set_secure_boot(False)


def test_an_image_not_pulled_yet_is_a_warning(converged):
    image = converged.pillar["gpu"]["validate"]["image"]
    converged.run(["podman", "rmi", image], check=True)
    before = converged.snapshot()
    data, retcode = doctor(converged)
    assert unchanged(before, converged.snapshot())  # not pulled
    problems = [c for c in data["checks"] if c["status"] != "ok" and c["status"] != "skip"]
    assert [(c["name"], c["status"]) for c in problems] == [("image", "warn")], problems
    assert "the registry has it" in problems[0]["evidence"] and data["ok"] is True and retcode == 0
    converged.run(["podman", "pull", image], check=True)
    assert_healthy(*doctor(converged))


# ---------------------------------------------------------------------------
# An HGX node: NVSwitches, the fabric manager, nvidia-persistenced (tests/node's systemd)
# ---------------------------------------------------------------------------

FM = "nvidia-fabricmanager"


@pytest.fixture
def hgx(node_assets):
    """An HGX node by hand (the guide's steps): the 550 stream's fm profile, modules loaded,
    a CDI spec; the fabric manager and persistenced installed, not started."""
    node = Node.create(node_assets)
    node.add_nvswitches()
    node.dnf("install", f"kernel-devel-{KERNEL_RELEASE}", f"kernel-headers-{KERNEL_RELEASE}")
    node.add_repos()
    node.dnf("module", "install", "nvidia-driver:550-dkms/fm")
    node.run(["modprobe", "-r", "nouveau"], check=True)
    node.dnf("install", "podman", "nvidia-container-toolkit")
    node.run(["nvidia-modprobe"], check=True)
    node.run(["nvidia-modprobe", "-u"], check=True)
    node.run(["nvidia-ctk", "cdi", "generate", "--output=/etc/cdi/nvidia.yaml"], check=True)
    node.run(["podman", "pull", node_assets.image], check=True)
    node.write_pillar(site_pillar(node_assets))
    yield node
    node.destroy()


def _problems(data):
    return [(c["name"], c["status"]) for c in data["checks"] if c["status"] in ("fail", "warn")]


def test_an_hgx_node_needs_its_fabric_manager_running(hgx):
    data, retcode = doctor(hgx)
    assert _problems(data) == [("persistenced", "warn"), ("fabric-manager", "fail")], data["checks"]
    fm = next(c for c in data["checks"] if c["name"] == "fabric-manager")
    assert "4 NVSwitch" in fm["evidence"] and "inactive" in fm["evidence"] and "error 802" in fm["evidence"]
    assert data["first_failing_layer"] == "fabric" and retcode == 1
    # The fixes it names.
    hgx.run(["systemctl", "enable", "--now", FM, "nvidia-persistenced"], check=True)
    data, retcode = doctor(hgx)
    assert _problems(data) == [] and retcode == 0, data["checks"]
    fm = next(c for c in data["checks"] if c["name"] == "fabric-manager")
    assert "said: 550.127.08" in fm["evidence"] and "Completed" in fm["evidence"]


def test_an_untrained_fabric(hgx):
    hgx.run(["systemctl", "enable", "--now", FM, "nvidia-persistenced"], check=True)
    (hgx.root / "sys-module" / "nvidia" / "fabric_state").write_text("In Progress\n")
    failing = assert_fails(*doctor(hgx), "fabric-manager")
    assert "not trained (GPU 0 In Progress)" in failing["fabric-manager"]["evidence"]
    hgx.run(["systemctl", "restart", FM], check=True)
    assert_healthy(*doctor(hgx))


def test_a_driver_upgrade_leaves_the_fabric_manager_of_another_version(hgx):
    hgx.run(["systemctl", "enable", "--now", FM, "nvidia-persistenced"], check=True)
    hgx.dnf("module", "switch-to", "nvidia-driver:latest-dkms/fm")
    data, retcode = doctor(hgx)
    failing = [c for c in data["checks"] if c["status"] == "fail"]
    # The cause first (the old module still loaded); the fabric manager names the versions.
    assert [c["name"] for c in failing][:1] == ["driver-version"] and retcode == 1
    fm = next(c for c in data["checks"] if c["name"] == "fabric-manager")
    assert fm["status"] == "fail" and "said: 580.105.08" in fm["evidence"]
    assert "the loaded driver is 550.127.08" in fm["evidence"]
