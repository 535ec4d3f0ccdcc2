"""
The return of an nvgpu state, built the same way by every state module: a fresh result,
a pending one (test=True: ``result`` None and the exact changes), a failed one, and the
end of a state that collected its changes.
"""


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
