"""
The SELinux execution module (_modules/nvgpu_selinux.py): the mode, the policy modules,
and restorecon, through the fake ``cmd.run_all``.
"""

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.unit.fakes import FakeSalt
from tests.unit.loader import load


@pytest.fixture
def selinux():
    return load("_modules/nvgpu_selinux.py")


@pytest.fixture
def configure_loader_modules(selinux, run_all, which):
    return {
        selinux: {
            "__salt__": FakeSalt(run_all=run_all),
            "__grains__": {"kernel": "Linux"},
            "__opts__": {"test": False},
            "__context__": {},
        }
    }


def test_virtual(selinux):
    assert selinux.__virtual__() == "nvgpu_selinux"
    selinux.__grains__["kernel"] = "Windows"
    assert selinux.__virtual__()[0] is False


class TestMode:
    @pytest.mark.parametrize(
        "stdout, expected",
        [("Enforcing\n", "Enforcing"), ("Permissive\n", "Permissive"), ("Disabled\n", "Disabled"),
         ("permissive", "Permissive"), ("ENFORCING", "Enforcing")],
    )
    def test_getenforce(self, selinux, run_all, stdout, expected):
        run_all.on("getenforce", stdout=stdout)
        assert selinux.mode() == expected
        assert run_all.calls == [(["getenforce"], {"python_shell": False, "ignore_retcode": True})]

    @pytest.mark.parametrize("retcode, stdout", [(1, "Enforcing"), (0, "something else"), (0, "")])
    def test_unusable_answer_is_disabled(self, selinux, run_all, retcode, stdout):
        run_all.on("getenforce", retcode=retcode, stdout=stdout)
        assert selinux.mode() == "Disabled"

    def test_without_getenforce_is_disabled(self, selinux, which, run_all):
        which.tools.discard("getenforce")
        assert selinux.mode() == "Disabled"
        assert run_all.calls == []


def test_policy_modules_first_column(selinux, run_all):
    # RHEL 7 prints a version column, RHEL 8+ does not.
    run_all.on("semodule", "-l", stdout="abrt\t1.4.1\nnvidia-container\t0.1\n\ncontainer\nabrt\n")
    assert selinux.policy_modules() == ["abrt", "container", "nvidia-container"]


def test_policy_modules_failure(selinux, run_all):
    run_all.on("semodule", retcode=1, stderr="libsemanage.semanage_create_store: Could not read from module store")
    with pytest.raises(CommandExecutionError, match="policycoreutils"):
        selinux.policy_modules()


def test_policy_modules_read_once_per_run_until_an_install(selinux, run_all):
    listed = ["abrt\n", "abrt\nnvidia-container\n"]
    run_all.on("semodule", "-l", effect=lambda argv, kwargs: {"retcode": 0, "stdout": listed[0], "stderr": ""})
    run_all.on("semodule", "-i", effect=lambda argv, kwargs: listed.pop(0) and None)
    assert selinux.policy_modules() == selinux.policy_modules() == ["abrt"]
    selinux.install_policy("/root/nvidia-container.pp")
    assert selinux.policy_modules() == ["abrt", "nvidia-container"]
    assert run_all.argvs == [["semodule", "-l"], ["semodule", "-i", "/root/nvidia-container.pp"], ["semodule", "-l"]]


def test_install_policy(selinux, run_all):
    run_all.on("semodule", "-i")
    assert selinux.install_policy("/root/nvidia-container.pp") is True
    assert run_all.argvs == [["semodule", "-i", "/root/nvidia-container.pp"]]


def test_install_policy_failure_names_the_right_package(selinux, run_all):
    run_all.on("semodule", "-i", retcode=1, stderr="Failed to resolve typeattributeset statement")
    with pytest.raises(CommandExecutionError) as err:
        selinux.install_policy("/root/nvidia-container.pp")
    assert "Failed to resolve typeattributeset" in str(err.value)
    assert "dgx-selinux bin/RHEL8/nvidia-container.pp" in str(err.value)


class TestRestorecon:
    def test_relabel_needed_parses_both_formats(self, selinux, run_all, tmp_path):
        dev = tmp_path / "nvidia0"
        dev.write_text("")
        out = (f"Would relabel {dev} from system_u:object_r:device_t:s0 to "
               "system_u:object_r:xserver_misc_device_t:s0\n"
               "restorecon reset /usr/lib64/libcuda.so.1 context a->b\n")
        run_all.on("restorecon", stdout=out)
        assert selinux.relabel_needed([str(dev), str(tmp_path / "absent")], recursive=True) == [
            str(dev), "/usr/lib64/libcuda.so.1"]
        assert run_all.argvs == [["restorecon", "-n", "-v", "-R", str(dev)]]

    def test_relabel_needed_reads_stderr_too(self, selinux, run_all, tmp_path):
        run_all.on("restorecon", stderr=f"Would relabel {tmp_path} from a to b\n")
        assert selinux.relabel_needed(str(tmp_path)) == [str(tmp_path)]
        assert run_all.argvs == [["restorecon", "-n", "-v", str(tmp_path)]]

    def test_nothing_that_exists_runs_nothing(self, selinux, run_all, tmp_path):
        assert selinux.relabel_needed([str(tmp_path / "absent")]) == []
        assert selinux.relabel([]) == []
        assert run_all.calls == []

    def test_broken_symlink_is_still_relabelled(self, selinux, run_all, tmp_path):
        link = tmp_path / "libcuda.so.1"
        link.symlink_to(tmp_path / "gone")
        run_all.on("restorecon", stdout=f"Relabeled {link} from a to b\n")
        assert selinux.relabel(str(link)) == [str(link)]

    def test_relabel(self, selinux, run_all, tmp_path):
        run_all.on("restorecon", stdout=f"Relabeled {tmp_path} from a to b\n")
        assert selinux.relabel([str(tmp_path)], recursive=True) == [str(tmp_path)]
        assert run_all.argvs == [["restorecon", "-v", "-R", str(tmp_path)]]

    def test_failure(self, selinux, run_all, tmp_path):
        run_all.on("restorecon", retcode=255, stderr="restorecon: SELinux: Could not get canonical path")
        with pytest.raises(CommandExecutionError) as err:
            selinux.relabel([str(tmp_path)])
        assert "relabelling files failed" in str(err.value) and "sestatus" in str(err.value)


class TestBooleanAndMethod:
    """getsebool's real texts (libselinux utils/getsebool.c) decide the method of `auto`."""

    NAME = "container_use_xserver_devices"

    @pytest.mark.parametrize("stdout, expected", [
        (f"{NAME} --> on\n", "on"), (f"{NAME} --> off\n", "off"), (f"{NAME} --> off pending: on\n", "off")])
    def test_defined_boolean_is_its_active_value(self, selinux, run_all, stdout, expected):
        run_all.on("getenforce", stdout="Enforcing\n").on("getsebool", self.NAME, stdout=stdout)
        assert selinux.boolean() == expected
        assert selinux.method() == "boolean"
        assert selinux.container_type() == "container_t"

    def test_policy_without_the_boolean_means_the_module(self, selinux, run_all):
        # RHEL 8.10's container-selinux 2.229 does not define it.
        run_all.on("getenforce", stdout="Permissive\n").on(
            "getsebool", self.NAME, retcode=1, stderr=f"Error getting active value for {self.NAME}\n")
        assert selinux.boolean() is None
        assert selinux.method("auto") == "module"
        assert selinux.container_type("auto") == "nvidia_container_t"

    def test_disabled_selinux_asks_nothing(self, selinux, run_all):
        run_all.on("getenforce", stdout="Disabled\n")
        assert selinux.boolean() is None
        assert selinux.method() == "module"
        # getenforce once: the mode is read once per run (__context__).
        assert [argv for argv, _ in run_all.calls] == [["getenforce"]]

    @pytest.mark.parametrize("configured", ["boolean", "module"])
    def test_explicit_method_is_not_checked_on_the_node(self, selinux, run_all, configured):
        assert selinux.method(configured) == configured
        assert run_all.calls == []

    def test_bad_method(self, selinux):
        with pytest.raises(SaltInvocationError, match="one of auto, boolean, module"):
            selinux.method("on")

    def test_unreadable_boolean_raises_with_getsebools_words(self, selinux, run_all):
        run_all.on("getenforce", stdout="Enforcing\n").on(
            "getsebool", retcode=1, stderr="getsebool:  SELinux policy is not managed or store cannot be accessed.\n")
        with pytest.raises(CommandExecutionError, match="store cannot be accessed"):
            selinux.boolean()
