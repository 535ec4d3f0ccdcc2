"""
The return of an nvgpu state, built the same way by every state module: a fresh result,
a pending one (test=True: ``result`` None and the exact changes), a failed one, and the
end of a state that collected its changes; and one line, not a traceback, where a module it
calls did not load.
"""

import functools

from salt.exceptions import CommandExecutionError


def new(name):
    """A state return that says: nothing to do."""
    return {"name": name, "result": True, "comment": "", "changes": {}}


def pending(ret, changes, comment):
    """test=True: what would change, changed nothing."""
    ret.update(result=None, changes=changes, comment=comment)
    return ret


def failed(ret, comment, changes=None):
    """Failed with ``comment`` (what failed, why, what to do), keeping what did change."""
    ret.update(result=False, comment=comment)
    if changes:
        ret["changes"] = changes
    return ret


def finish(ret, changes, subject, ready, test, note=""):
    """The end of a state that collected ``changes``: ``ready`` when there are none, else
    what would change (``test``) or what changed, by the names of the changes."""
    if not changes:
        ret["comment"] = ready + note
    elif test:
        pending(ret, changes, f"{subject} would change: {', '.join(changes)}{note}")
    else:
        ret.update(changes=changes, comment=f"{subject} changed: {', '.join(changes)}{note}")
    return ret


def unloaded_module(salt, error):
    """Where ``error`` is the KeyError of ``__salt__["module.function"]`` for a module that
    did not load, one line naming it and why (the reason its ``__virtual__`` gave, which
    Salt's loader keeps); else None (a KeyError of the function's own)."""
    name = error.args[0] if len(error.args) == 1 else None
    if not isinstance(name, str) or "." not in name or salt is None or name in salt:
        return None
    # The loader that holds the functions: NamedLoaderContext's own missing_fun_string asks
    # the loader of the calling module (in a state, the states' loader, which never tried).
    functions = salt.value() if hasattr(salt, "value") else salt
    explain = getattr(functions, "missing_fun_string", None)
    reason = explain(name) if explain else f"'{name}' is not available."
    return f"nvgpu needs {name}, which is not loaded: {reason}"


def _explaining_unloaded_modules(func, unloaded):
    """``func``, where a KeyError that ``unloaded_module`` explains becomes ``unloaded(line,
    args, kwargs)``; any other KeyError is the function's own and goes through."""

    @functools.wraps(func)
    def explained(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KeyError as error:
            line = unloaded_module(func.__globals__.get("__salt__"), error)
            if line is None:
                raise
            return unloaded(line, args, kwargs)

    return explained


def reports_unloaded_modules(func):
    """For a state that calls other execution modules: where one of them did not load,
    the state fails with ``unloaded_module``'s line instead of a KeyError traceback."""

    def fail(line, args, kwargs):
        return failed(new(kwargs.get("name", args[0] if args else func.__name__)), line)

    return _explaining_unloaded_modules(func, fail)


def raises_unloaded_modules(func):
    """The same for an execution module function: a CommandExecutionError with that one
    line (``salt-call`` prints it as the error, exit code 1)."""

    def raise_it(line, args, kwargs):
        raise CommandExecutionError(line) from None

    return _explaining_unloaded_modules(func, raise_it)
