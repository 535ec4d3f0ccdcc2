"""
The fakes every unit test shares: ONE command runner (``cmd.run_all``), ONE way to build
an autospecced ``__salt__`` / ``__states__``, and ``salt.utils.path.which``.

Each fake is ``unittest.mock.create_autospec`` of the real function it stands for (Salt's
own ``cmd.run_all``, ``file.check_hash``, ..., or the extension's own functions loaded by
``tests.unit.loader.real``), so a call with an argument the real function does not take,
or a call of a function that no longer exists, fails the test that makes it.
"""

import copy
import inspect
from functools import partial
from unittest.mock import create_autospec

import salt.modules.cmdmod
import salt.utils.path

# Execution (and state) functions that change the node. A state run with test=True, or
# on a node that is already right, must call none of them.
ACTIONS = frozenset(
    {
        "nvgpu.load_modules",
        "nvgpu.unload_kernel_module",
        "nvgpu.reload_driver",
        "nvgpu.run_vector_add",
        "nvgpu_cuda.vector_add",
        "nvgpu_toolkit.set_config",
        "nvgpu_toolkit.write_oci_hook",
        "nvgpu_toolkit.remove_oci_hook",
        "nvgpu_toolkit.cdi_generate",
        "nvgpu_initramfs.rebuild",
        "nvgpu_selinux.install_policy",
        "nvgpu_selinux.relabel",
        "nvgpu_rootless.set_subids",
        "nvgpu_rootless.migrate",
        "nvgpu_rootless.enable_linger",
        "dnf_module.install",
        "dnf_module.reset",
        "dnf_module.switch_to",
        "dnf_module.installed",
        "dnf_versionlock.add",
        "dnf_versionlock.delete",
        "dnf_versionlock.install",
        "dnf_versionlock.distro_sync",
        "cp.cache_file",
        "file.remove",
        "service.enable",
        "service.disable",
        "service.start",
        "service.stop",
        "service.restart",
    }
)

# cmd.run_all takes **kwargs (for the loader's __pub_* keys); a misspelt option would
# vanish in them, so the fake accepts only the options it names.
_RUN_ALL_OPTIONS = frozenset(
    name
    for name, param in inspect.signature(salt.modules.cmdmod.run_all).parameters.items()
    if param.kind is param.POSITIONAL_OR_KEYWORD and name != "cmd"
)


def public_functions(module):
    """The functions a Salt loader would expose from ``module``: defined there, no leading _."""
    return {
        name: func
        for name, func in vars(module).items()
        if inspect.isfunction(func) and func.__module__ == module.__name__ and not name.startswith("_")
    }


class FakeRunAll:
    """
    ``__salt__["cmd.run_all"]``, autospecced from ``salt.modules.cmdmod.run_all``. It
    records every command as an argv list with its keyword arguments and answers by the
    longest matching argv prefix set with ``on``; a command nothing answers fails the test.
    """

    def __init__(self):
        self.calls = []
        self._answers = {}
        self._spec = create_autospec(salt.modules.cmdmod.run_all, side_effect=self._answer)

    def on(self, *prefix, retcode=0, stdout="", stderr="", effect=None):
        """
        Answer commands whose argv starts with ``prefix``. ``effect(argv, kwargs)`` runs
        first (it may change files, as the real tool would) and may return a dict that
        replaces parts of the answer.
        """
        self._answers[tuple(prefix)] = ({"retcode": retcode, "stdout": stdout, "stderr": stderr}, effect)
        return self

    def __call__(self, *args, **kwargs):
        return self._spec(*args, **kwargs)

    def _answer(self, cmd, *args, **kwargs):
        assert isinstance(cmd, list), f"commands must run as argv lists, not {cmd!r}"
        unknown = set(kwargs) - _RUN_ALL_OPTIONS
        assert not unknown, f"cmd.run_all has no option {sorted(unknown)}"
        argv = [str(arg) for arg in cmd]
        self.calls.append((argv, kwargs))
        matches = [prefix for prefix in self._answers if tuple(argv[: len(prefix)]) == prefix]
        if not matches:
            raise AssertionError(f"unexpected command {argv}: the test answers only {sorted(self._answers)}")
        answer, effect = self._answers[max(matches, key=len)]
        answer = dict(answer)
        if effect is not None:
            answer.update(effect(argv, kwargs) or {})
        return {"pid": 4242, **answer}

    @property
    def argvs(self):
        """The argv of every command run, in order."""
        return [argv for argv, _ in self.calls]


class FakeSalt(dict):
    """
    ``__salt__`` (or ``__states__``) of autospecced real functions: every public function
    of each module given (under ``__virtualname__.name``), plus ``functions`` (``{"file.check_hash":
    salt.modules.file.check_hash}``) and ``run_all``. A function answers what ``set`` gave
    it; one called without an answer fails the test. Every call is recorded in order.
    """

    def __init__(self, *modules, functions=None, run_all=None):
        super().__init__()
        self.calls = []
        self._answers = {}
        for module in modules:
            for name, func in public_functions(module).items():
                self.add(f"{module.__virtualname__}.{name}", func)
        for key, func in (functions or {}).items():
            self.add(key, func)
        if run_all is not None:
            self["cmd.run_all"] = run_all

    def add(self, key, real):
        self[key] = create_autospec(real, side_effect=partial(self._call, key))

    def set(self, key, *answers):
        """
        What ``key`` answers: a value (returned as a deep copy), an exception (raised), or a
        function (called with the arguments). Several answers serve successive calls, the
        last one repeating.
        """
        assert key in self, f"{key} is not a function of this __salt__"
        assert answers, "give at least one answer"
        self._answers[key] = list(answers)
        return self

    def _call(self, key, *args, **kwargs):
        self.calls.append((key, args, kwargs))
        answers = self._answers.get(key)
        if not answers:
            raise AssertionError(f"{key}{args or ''}{kwargs or ''} was called but the test gave it no answer")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(*args, **kwargs)
        return copy.deepcopy(answer)

    def called(self, key):
        """``[(args, kwargs), ...]`` of the calls of ``key``."""
        return [(args, kwargs) for name, args, kwargs in self.calls if name == key]

    def names(self):
        """The function names called, in order."""
        return [name for name, _, _ in self.calls]

    def actions(self):
        """The calls that change the node (ACTIONS), in order."""
        return [name for name in self.names() if name in ACTIONS]


class FakeWhich:
    """``salt.utils.path.which``, autospecced: the tools in ``tools`` are in /usr/bin."""

    BIN = "/usr/bin"

    def __init__(self, tools=()):
        self.tools = set(tools)
        self._spec = create_autospec(salt.utils.path.which, side_effect=self._which)

    def __call__(self, *args, **kwargs):
        return self._spec(*args, **kwargs)

    def _which(self, exe=None):
        return f"{self.BIN}/{exe}" if exe in self.tools else None

    def path(self, tool):
        return f"{self.BIN}/{tool}"
