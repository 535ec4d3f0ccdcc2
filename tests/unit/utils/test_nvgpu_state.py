"""nvgpu_state: one way to build a state's return, and one line for a module that did not load."""

import nvgpu_state
import pytest
from salt.exceptions import CommandExecutionError


class Loader(dict):
    """A loader as Salt's keeps it: the functions, and why a module is missing."""

    def missing_fun_string(self, name):
        return f"'{name.split('.')[0]}' __virtual__ returned False: it needs tomli"


def test_a_missing_module_is_named_with_its_reason():
    line = nvgpu_state.unloaded_module(Loader(), KeyError("nvgpu_toolkit.oci_hook"))
    assert line == ("nvgpu needs nvgpu_toolkit.oci_hook, which is not loaded: "
                    "'nvgpu_toolkit' __virtual__ returned False: it needs tomli")


@pytest.mark.parametrize("error", [KeyError("name"), KeyError("cmd.run"), KeyError(1), KeyError("a.b", "c")])
def test_other_key_errors_are_not_explained(error):
    assert nvgpu_state.unloaded_module(Loader({"cmd.run": print}), error) is None


def _needs_toolkit(name):
    return __salt__["nvgpu_toolkit.oci_hook"](name)  # noqa: F821


def _wrapped(decorator):
    func = decorator(_needs_toolkit)
    func.__wrapped__.__globals__["__salt__"] = Loader()
    return func


def test_a_state_fails_in_one_line():
    ret = _wrapped(nvgpu_state.reports_unloaded_modules)(name="x")
    assert ret["result"] is False and ret["name"] == "x" and ret["changes"] == {}
    assert ret["comment"].startswith("nvgpu needs nvgpu_toolkit.oci_hook") and "\n" not in ret["comment"]


def test_a_function_raises_one_line():
    with pytest.raises(CommandExecutionError, match=r"^nvgpu needs nvgpu_toolkit\.oci_hook, which is not loaded"):
        _wrapped(nvgpu_state.raises_unloaded_modules)("x")


def test_its_own_key_errors_go_through():
    def broken(name):
        return {}[name]

    broken.__globals__["__salt__"] = Loader()
    with pytest.raises(KeyError):
        nvgpu_state.reports_unloaded_modules(broken)(name="x")
