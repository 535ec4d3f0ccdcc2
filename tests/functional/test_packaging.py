"""The two ways users install nvgpu, each through real salt-call on a provisioned node:
the classic one (this checkout in file_roots, then saltutil.sync_all) and the Salt
extension one (pip install . into a fresh venv, no file_roots at all)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.node import HOME, REPO

pytestmark = pytest.mark.node

SALT_VENV = Path(sys.executable).parent.parent


def minion_config(node, path, **options):
    """A salt-call config dir in the node with nothing but `options` set."""
    node.write_file(f"{path}/minion", yaml.safe_dump({"file_client": "local", **options}))


def salt_call(node, python, config, *args):
    return node.run([python, "-c", "from salt.scripts import salt_call; salt_call()", "--local", "-c", config,
                     "--out=json", "--log-level=quiet", *args])


def list_libraries(node, python, config):
    return salt_call(node, python, config, "nvgpu.list_container_files", "kind=libraries")


def check_outputter(node, python, config):
    """`--out=nvgpu` prints the doctor's answer as the outputter's table, not as nested data."""
    proc = node.run([python, "-c", "from salt.scripts import salt_call; salt_call()", "--local", "-c", config,
                     "--out=nvgpu", "--log-level=quiet", "nvgpu.doctor"])
    lines = proc.stdout.splitlines()
    assert lines[:2] and lines[0] == "local:", proc.stdout + proc.stderr
    assert lines[1].split() == ["STATUS", "LAYER", "CHECK", "EVIDENCE", "/", "FIX"], proc.stdout
    assert lines[2].split()[1:3] == ["driver", "kernel-devel"], proc.stdout
    assert any(line.startswith("local: doctor: ") for line in lines[-2:]), proc.stdout  # the summary


def check_shared_layer(node, python, config):
    """A function of each further module and a state, all of which import the shared layer."""
    spec = salt_call(node, python, config, "nvgpu_toolkit.cdi_spec")
    assert spec.returncode == 0, spec.stderr
    assert '"exists": false' in spec.stdout
    stream = salt_call(node, python, config, "dnf_module.info", "nvidia-driver")
    assert stream.returncode == 0, stream.stderr
    assert '"state": "enabled"' in stream.stdout
    pending = salt_call(node, python, config, "state.single", "nvgpu.container_toolkit", "name=toolkit",
                        "mode=cdi", "test=True")
    assert '"cdi_spec"' in pending.stdout, pending.stdout + pending.stderr


def test_classic_file_roots_and_sync_all(node):
    node.provision(stream="550-dkms", toolkit=True, loaded=True)
    minion_config(node, "/etc/salt-classic", file_roots={"base": [str(REPO)]})
    before = list_libraries(node, sys.executable, "/etc/salt-classic")
    assert before.returncode != 0  # nothing synced yet: nvgpu is unknown

    synced = node.run([sys.executable, "-c", "from salt.scripts import salt_call; salt_call()", "--local",
                       "-c", "/etc/salt-classic", "--out=yaml", "saltutil.sync_all"], check=True)
    synced = yaml.safe_load(synced.stdout)["local"]
    assert "modules.nvgpu" in synced["modules"]
    assert "modules.nvgpu_cuda" in synced["modules"]
    assert "states.nvgpu" in synced["states"]
    assert "utils.nvgpu_node" in synced["utils"]
    assert "output.nvgpu" in synced["output"]

    after = list_libraries(node, sys.executable, "/etc/salt-classic")
    assert after.returncode == 0, after.stderr
    assert "/usr/lib64/libcuda.so.550.127.08" in after.stdout
    check_shared_layer(node, sys.executable, "/etc/salt-classic")
    check_outputter(node, sys.executable, "/etc/salt-classic")


def test_pip_install_makes_a_salt_extension(node, tmp_path_factory):
    # A fresh venv that sees the pinned Salt through a .pth file (no network needed)
    # and gets nvgpu only from `pip install .`.
    venv = HOME / "pip-venv"
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    salt_site = next(SALT_VENV.glob("lib/python3*/site-packages"))
    (site / "salt-from-project-venv.pth").write_text(f"{salt_site}\n")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(["cp", "-a", str(REPO / "setup.cfg"), str(REPO / "pyproject.toml"), str(REPO / "README.md"),
                    str(REPO / "saltext"), str(REPO / "_modules"), str(REPO / "_states"), str(REPO / "_grains"),
                    str(REPO / "_runners"), str(REPO / "_output"), str(REPO / "_utils"), str(build)], check=True)
    installed = subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-deps", str(build)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    for installed_file in ("modules/nvgpu.py", "modules/nvgpu_cuda.py", "states/nvgpu.py", "grains/nvgpu.py",
                           "runners/nvgpu.py", "output/nvgpu.py", "utils/nvgpu_node.py", "utils/nvgpu_failures.py"):
        assert (site / "saltext/nvgpu" / installed_file).exists()

    node.provision(stream="latest-dkms", toolkit=True, loaded=True)
    minion_config(node, "/etc/salt-pip")  # no file_roots, no module_dirs
    proc = list_libraries(node, venv / "bin/python", "/etc/salt-pip")
    assert proc.returncode == 0, proc.stderr
    assert "/usr/lib64/libcuda.so.580.105.08" in proc.stdout
    check_shared_layer(node, venv / "bin/python", "/etc/salt-pip")
    check_outputter(node, venv / "bin/python", "/etc/salt-pip")
    subprocess.run(["rm", "-rf", str(venv)], check=True)
