"""
The dnf module-stream execution module (_modules/dnf_module.py): dnf's own records in
/etc/dnf/modules.d read as real files, and the dnf commands through the fake ``cmd.run_all``.
"""

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.unit.fakes import FakeSalt
from tests.unit.loader import load

EMPTY = {"name": "nvidia-driver", "stream": None, "profiles": [], "state": None}
INVALID_CHOICE = "dnf module: error: argument <modular command>: invalid choice: 'switch-to'"


@pytest.fixture
def dnf_module(host):
    return load("_modules/dnf_module.py")


@pytest.fixture
def configure_loader_modules(dnf_module, run_all, which):
    return {dnf_module: {"__salt__": FakeSalt(run_all=run_all), "__opts__": {"test": False}, "__context__": {}}}


def record(host, stream="", profiles="", state=""):
    host.write(
        "/etc/dnf/modules.d/nvidia-driver.module",
        f"[nvidia-driver]\nname=nvidia-driver\nstream={stream}\nprofiles={profiles}\nstate={state}\n",
    )


def test_virtual_needs_dnf(dnf_module, which):
    assert dnf_module.__virtual__() == "dnf_module"
    which.tools.discard("dnf")
    assert dnf_module.__virtual__() == (False, "The dnf_module execution module needs dnf")


class TestInfo:
    def test_absent(self, dnf_module):
        assert dnf_module.info("nvidia-driver") == EMPTY

    def test_reads_dnf_file(self, dnf_module, host):
        record(host, "550-dkms", "default,fm", "enabled")
        assert dnf_module.info("nvidia-driver") == {
            "name": "nvidia-driver", "stream": "550-dkms", "profiles": ["default", "fm"], "state": "enabled"}

    def test_profiles_with_spaces(self, dnf_module, host):
        record(host, "latest-dkms", " default , fm ,", "enabled")
        assert dnf_module.info("nvidia-driver")["profiles"] == ["default", "fm"]

    def test_reset_file_has_no_stream(self, dnf_module, host):
        record(host)
        assert dnf_module.info("nvidia-driver") == EMPTY

    def test_disabled(self, dnf_module, host):
        record(host, "550-dkms", "", "disabled")
        assert dnf_module.info("nvidia-driver")["state"] == "disabled"

    @pytest.mark.parametrize("text", ["stream=550-dkms\n", "[nvidia-driver\nstream=x\n", "[other]\nstream=550-dkms\n"])
    def test_unusable_file_is_no_record(self, dnf_module, host, text):
        host.write("/etc/dnf/modules.d/nvidia-driver.module", text)
        assert dnf_module.info("nvidia-driver") == EMPTY


class TestInstall:
    def test_argv_with_profile_and_platform(self, dnf_module, host, run_all):
        run_all.on("dnf", effect=lambda argv, kwargs: record(host, "latest-dkms", "default", "enabled"))
        ret = dnf_module.install("nvidia-driver", "latest-dkms", profile="default", platform="platform:el8")
        assert run_all.argvs == [["dnf", "-y", "--setopt=module_platform_id=platform:el8", "module", "install",
                                  "nvidia-driver:latest-dkms/default"]]
        assert ret == {"name": "nvidia-driver", "stream": "latest-dkms", "profiles": ["default"], "state": "enabled"}

    def test_default_profile(self, dnf_module, run_all):
        run_all.on("dnf")
        dnf_module.install("nvidia-driver", "550-dkms")
        assert run_all.argvs == [["dnf", "-y", "module", "install", "nvidia-driver:550-dkms"]]

    def test_error(self, dnf_module, run_all):
        run_all.on("dnf", retcode=1, stderr="Error: Problems in request: missing groups or modules")
        with pytest.raises(CommandExecutionError, match="missing groups or modules") as err:
            dnf_module.install("nvidia-driver", "999-dkms")
        assert "dnf module list nvidia-driver" in str(err.value)

    @pytest.mark.parametrize("name, stream", [("nvidia-driver:latest", "x"), ("nvidia-driver", "latest/default"),
                                              ("", "latest"), ("nvidia-driver", None)])
    def test_bad_stream_runs_nothing(self, dnf_module, run_all, name, stream):
        with pytest.raises(SaltInvocationError, match="bad module stream"):
            dnf_module.install(name, stream)
        assert run_all.calls == []


def test_reset(dnf_module, host, run_all):
    record(host, "550-dkms", "", "disabled")
    run_all.on("dnf", effect=lambda argv, kwargs: record(host))
    assert dnf_module.reset("nvidia-driver", platform="platform:el9") == EMPTY
    assert run_all.argvs == [["dnf", "-y", "--setopt=module_platform_id=platform:el9", "module", "reset", "nvidia-driver"]]


class TestSwitchTo:
    def test_switch(self, dnf_module, host, run_all):
        record(host, "550-dkms", "default", "enabled")
        run_all.on("dnf", effect=lambda argv, kwargs: record(host, "latest-dkms", "default", "enabled"))
        assert dnf_module.switch_to("nvidia-driver", "latest-dkms", profile="default")["stream"] == "latest-dkms"
        assert run_all.argvs == [["dnf", "-y", "module", "switch-to", "nvidia-driver:latest-dkms/default"]]

    @pytest.mark.parametrize("said", [{"stderr": INVALID_CHOICE}, {"stdout": "No such command: switch-to."}])
    def test_old_dnf_falls_back_to_reset_and_install(self, dnf_module, run_all, said):
        run_all.on("dnf", "-y", "module", "switch-to", retcode=2, **said)
        run_all.on("dnf", "-y", "module")
        dnf_module.switch_to("nvidia-driver", "latest-dkms", profile="default")
        assert [argv[3] for argv in run_all.argvs] == ["switch-to", "reset", "install"]
        assert run_all.argvs[2] == ["dnf", "-y", "module", "install", "nvidia-driver:latest-dkms/default"]

    def test_fallback_keeps_the_platform(self, dnf_module, run_all):
        platform = "--setopt=module_platform_id=platform:el8"
        run_all.on("dnf", "-y", platform, "module", "switch-to", retcode=2, stderr=INVALID_CHOICE)
        run_all.on("dnf")
        dnf_module.switch_to("nvidia-driver", "latest-dkms", platform="platform:el8")
        assert all(argv[2] == platform for argv in run_all.argvs)
        assert len(run_all.argvs) == 3

    def test_real_error_raises(self, dnf_module, run_all):
        run_all.on("dnf", retcode=1, stderr="Error: It is not possible to switch enabled streams")
        with pytest.raises(CommandExecutionError, match="not possible to switch"):
            dnf_module.switch_to("nvidia-driver", "latest-dkms")
        assert len(run_all.argvs) == 1


# dnf's output when rpm could not unpack one package of `dnf module switch-to` (on the
# simulated node: a directory where nvidia-driver's firmware file goes).
HALF_DONE_STDOUT = (
    "Running transaction\n"
    "  Downgrading      : nvidia-driver-3:550.127.08-1.el8.x86_64               2/12\n"
    "error: unpacking of archive failed on file /usr/lib/firmware/nvidia/550.127.08/gsp_ga10x.bin;6b0bd4ba: "
    "cpio: File from package already exists as a directory in system\n"
    "error: nvidia-driver-3:550.127.08-1.el8.x86_64: install failed\n"
    "  Downgrading      : nvidia-driver-cuda-3:550.127.08-1.el8.x86_64          4/12\n"
)
HALF_DONE_STDERR = "Error unpacking rpm package nvidia-driver-3:550.127.08-1.el8.x86_64\nError: Transaction failed"


def test_a_transaction_that_fails_half_way_leads_with_rpms_own_errors(dnf_module, run_all):
    run_all.on("dnf", retcode=1, stdout=HALF_DONE_STDOUT, stderr=HALF_DONE_STDERR)
    with pytest.raises(CommandExecutionError) as err:
        dnf_module.switch_to("nvidia-driver", "550-dkms", profile="default")
    first = str(err.value).splitlines()[0]
    assert first.startswith("switching module nvidia-driver to nvidia-driver:550-dkms/default failed (")
    assert "error: unpacking of archive failed on file /usr/lib/firmware/nvidia/550.127.08/gsp_ga10x.bin" in first
    assert "Error: Transaction failed" in str(err.value)
    assert "Additional info" not in str(err.value)
    assert err.value.info["stderr"] == HALF_DONE_STDERR
    assert err.value.info["stdout"] == HALF_DONE_STDOUT


CHECK_OUTPUT = """\
kmod-nvidia-latest-dkms-3:550.127.08-1.el8.x86_64 has missing requires of nvidia-driver = 3:550.127.08-1.el8
nvidia-driver-3:580.105.08-1.el8.x86_64 has missing requires of nvidia-driver-cuda-libs = 3:580.105.08-1.el8
python3-foo-1.0-1.el8.noarch has missing requires of python3-bar
"""
REPOQUERY = """\
kmod-nvidia-latest-dkms-3:550.127.08-1.el8.x86_64
nvidia-driver-3:550.127.08-1.el8.x86_64
nvidia-driver-cuda-libs-3:550.127.08-1.el8.x86_64
"""


class TestProblems:
    def test_none_runs_only_dnf_check(self, dnf_module, run_all):
        run_all.on("dnf", "-q", "check")
        assert dnf_module.problems("nvidia-driver", "550-dkms") == []
        assert run_all.argvs == [["dnf", "-q", "check"]]

    def test_only_the_streams_packages_count(self, dnf_module, run_all):
        run_all.on("dnf", "-q", "check", retcode=1, stdout=CHECK_OUTPUT, stderr="Error: Check discovered 3 problem(s)")
        run_all.on("dnf", "-y", "--setopt=module_platform_id=platform:el8", "-q", "module", "repoquery",
                   stdout=REPOQUERY)
        found = dnf_module.problems("nvidia-driver", "550-dkms", platform="platform:el8")
        assert found == CHECK_OUTPUT.splitlines()[:2]
        assert run_all.argvs[1][-2:] == ["repoquery", "nvidia-driver:550-dkms"]

    def test_other_packages_problems_are_not_this_modules(self, dnf_module, run_all):
        run_all.on("dnf", "-q", "check", retcode=1, stdout=CHECK_OUTPUT.splitlines()[2] + "\n")
        run_all.on("dnf", "-y", "-q", "module", "repoquery", stdout=REPOQUERY)
        assert dnf_module.problems("nvidia-driver", "550-dkms") == []

    def test_dnf_check_that_cannot_run_raises(self, dnf_module, run_all):
        run_all.on("dnf", "-q", "check", retcode=1, stderr="Error: rpmdb open failed")
        with pytest.raises(CommandExecutionError, match="rpmdb open failed"):
            dnf_module.problems("nvidia-driver", "550-dkms")


def test_stream_packages(dnf_module, run_all):
    run_all.on("dnf", stdout=REPOQUERY)
    assert dnf_module.stream_packages("nvidia-driver", "550-dkms") == [
        "kmod-nvidia-latest-dkms", "nvidia-driver", "nvidia-driver-cuda-libs"]
    assert run_all.argvs == [["dnf", "-y", "-q", "module", "repoquery", "nvidia-driver:550-dkms"]]
