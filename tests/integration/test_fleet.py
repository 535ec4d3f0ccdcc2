"""A real salt-master driving two simulated GPU nodes, each with its own pillar."""

import time

import pytest

from tests.integration.conftest import node_minion, write_pillar
from tests.node import site_pillar

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def fleet(salt_master, node_factory, node_assets, pillar_dir):
    """Two minions: gpu-a on the 550-dkms stream with a rootless user, gpu-b on latest-dkms."""
    write_pillar(pillar_dir, {
        "gpu-a": site_pillar(node_assets, driver={"stream": "550-dkms"},
                             rootless_users=[{"name": "alice", "uid": 2101}]),
        "gpu-b": site_pillar(node_assets, driver={"stream": "latest-dkms"}),
    })
    minions = [node_minion(salt_master, node_factory(name), name) for name in ("gpu-a", "gpu-b")]
    for minion in minions:
        minion.start(start_timeout=120)
    yield minions
    for minion in minions:
        minion.terminate()


def test_state_apply_gpu_converges_every_minion(fleet, salt_cli):
    ids = [m.id for m in fleet]
    synced = salt_cli.run("saltutil.sync_all", minion_tgt="gpu-*")
    assert synced.returncode == 0, synced.stderr
    for minion_id in ids:
        assert "modules.nvgpu" in synced.data[minion_id]["modules"]

    for minion_id in ids:
        ret = salt_cli.run("state.apply", "gpu", minion_tgt=minion_id, _timeout=900)
        assert ret.returncode == 0, ret.stdout
        failed = {k: v["comment"] for k, v in ret.data.items() if v["result"] is not True}
        assert not failed
        validations = [v for k, v in ret.data.items() if "vector_add" in k or "validate" in k]
        assert validations and all("PASSED" in v["comment"] for v in validations)

    # Each node is on the stream its own pillar asked for.
    streams = salt_cli.run("dnf_module.info", "nvidia-driver", minion_tgt="gpu-*")
    assert streams.data["gpu-a"]["stream"] == "550-dkms"
    assert streams.data["gpu-b"]["stream"] == "latest-dkms"
    versions = salt_cli.run("nvgpu.driver_version", minion_tgt="gpu-*")
    assert versions.data == {"gpu-a": "550.127.08", "gpu-b": "580.105.08"}


def test_run_vector_add_returns_per_minion_results(fleet, salt_cli, node_assets):
    ret = salt_cli.run("nvgpu.run_vector_add", f"image={node_assets.image}", minion_tgt="gpu-*")
    assert sorted(ret.data) == ["gpu-a", "gpu-b"]
    for result in ret.data.values():
        assert result["passed"] is True
        assert (result["elements"], result["blocks"], result["threads"]) == (50000, 196, 256)
        assert result["diagnosis"] is None

    rootless = salt_cli.run("nvgpu.run_vector_add", f"image={node_assets.image}", "user=alice", minion_tgt="gpu-a")
    assert rootless.data["passed"] is True
    assert "--privileged" not in rootless.data["command"]
    assert rootless.data["user"] == "alice"


def test_a_failing_node_is_reported_with_its_diagnosis(fleet, salt_cli, node_assets):
    # gpu-b loses its CDI spec (say, someone cleaned /etc/cdi): auto mode is still cdi
    # there (Podman 4.3), and Podman finds no nvidia.com/gpu device.
    removed = salt_cli.run("file.remove", "/etc/cdi/nvidia.yaml", minion_tgt="gpu-b")
    assert removed.data is True
    ret = salt_cli.run("nvgpu.run_vector_add", f"image={node_assets.image}", minion_tgt="gpu-*")
    assert ret.data["gpu-a"]["passed"] is True
    assert ret.data["gpu-b"]["passed"] is False
    assert "unresolvable CDI devices" in ret.data["gpu-b"]["stderr"]
    assert "no CDI spec" in ret.data["gpu-b"]["diagnosis"]["cause"]
    assert ret.data["gpu-b"]["diagnosis"]["layer"] == "toolkit"
    assert ret.returncode != 0

    # The next state.apply repairs it.
    repaired = salt_cli.run("state.apply", "gpu", minion_tgt="gpu-b", _timeout=900)
    assert repaired.returncode == 0
    changed = [k for k, v in repaired.data.items() if v["changes"]]
    assert any("container_toolkit" in k for k in changed)
    again = salt_cli.run("nvgpu.run_vector_add", f"image={node_assets.image}", minion_tgt="gpu-b")
    assert again.data["passed"] is True


def test_fleet_report_runner(fleet, salt_master, node_assets):
    salt_run = salt_master.salt_run_cli(timeout=900)
    synced = salt_run.run("saltutil.sync_all")
    assert "runners.nvgpu" in synced.data["runners"]

    ret = salt_run.run("nvgpu.report", "tgt=gpu-*", f"image={node_assets.image}")
    assert ret.data["summary"] == {"nodes": 2, "passed": 2, "failed": 0, "no_return": 0}

    # alice exists on gpu-a only: gpu-b's answer is an error, reported as such.
    ret = salt_run.run("nvgpu.report", "tgt=gpu-*", f"image={node_assets.image}", "user=alice")
    assert ret.data["summary"] == {"nodes": 2, "passed": 1, "failed": 1, "no_return": 0}
    assert ret.data["nodes"]["gpu-a"]["passed"] is True
    assert "did not run" in ret.data["nodes"]["gpu-b"]["cause"]
    assert "alice" in ret.data["nodes"]["gpu-b"]["cause"]


def test_the_report_names_the_root_cause(fleet, salt_master, salt_cli, node_assets):
    # gpu-b's toolkit layer breaks (its CDI spec removed): the report's cause is the first
    # check nvgpu.doctor fails there, the vector add's diagnosis is kept as the symptom.
    removed = salt_cli.run("file.remove", "/etc/cdi/nvidia.yaml", minion_tgt="gpu-b")
    assert removed.data is True
    salt_run = salt_master.salt_run_cli(timeout=900)
    ret = salt_run.run("nvgpu.report", "tgt=gpu-*", f"image={node_assets.image}")
    assert ret.data["summary"] == {"nodes": 2, "passed": 1, "failed": 1, "no_return": 0}
    node = ret.data["nodes"]["gpu-b"]
    doctor = salt_cli.run("nvgpu.doctor", minion_tgt="gpu-b")
    first = next(check for check in doctor.data["checks"] if check["status"] == "fail")
    assert first["name"] == "cdi-spec-count" and doctor.returncode != 0
    assert (node["check"], node["layer"], node["cause"], node["fix"]) == (
        first["name"], first["layer"], first["evidence"], first["fix"])
    assert "no CDI spec" in node["symptom"]["cause"]

    repaired = salt_cli.run("state.apply", "gpu", minion_tgt="gpu-b", _timeout=900)
    assert repaired.returncode == 0
    assert salt_cli.run("nvgpu.doctor", minion_tgt="gpu-b").data["ok"] is True


def test_report_with_a_minion_down_is_bounded_and_counts_it(fleet, salt_master, salt_cli, node_assets):
    # The README's steps on the master: sync, then the report (test_fleet_report_runner synced).
    salt_run = salt_master.salt_run_cli(timeout=900)
    gpu_b = next(minion for minion in fleet if minion.id == "gpu-b")
    gpu_b.terminate()

    started = time.monotonic()
    # With Salt's own wait for silent minions (the master's timeout), as `salt '*' test.ping` runs.
    salt_cli.run(f"--timeout={salt_master.config['timeout']}", "test.ping", minion_tgt="gpu-*")
    ping_s = time.monotonic() - started
    started = time.monotonic()
    ret = salt_run.run("nvgpu.report", "tgt=gpu-*", f"image={node_assets.image}")
    report_s = time.monotonic() - started

    assert ret.data["summary"] == {"nodes": 2, "passed": 1, "failed": 0, "no_return": 1}
    assert ret.data["nodes"]["gpu-b"]["cause"] == "the minion did not return"
    # Not a benchmark: a bound that tells "Salt's own wait for a silent minion plus the vector
    # add on gpu-a" from the 370 s the report used to wait for a dead minion.
    print(f"with gpu-b down: test.ping {ping_s:.1f} s, nvgpu.report {report_s:.1f} s")
    assert report_s < ping_s + 60, (report_s, ping_s)
