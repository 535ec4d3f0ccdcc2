"""
Load the extension's Salt modules as plain Python modules, the way the unit tests hand
them to pytest-salt-factories' loader mock (``configure_loader_modules``).

``load`` gives a fresh module object under a unique name on every call: a test module
that points ``nvgpu_node``'s paths at a temporary tree first and loads afterwards gets
functions whose default arguments (``path=nvgpu_node.TOOLKIT_CONFIG``) name that tree.
``real`` gives one shared, never patched copy per file: the specs that the fakes of
other Salt functions are autospecced from.
"""

import functools
import importlib.util
import itertools
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
_SERIAL = itertools.count()


def load(relpath):
    """``load("_modules/nvgpu.py")``: that file as a new module object (not in sys.modules)."""
    stem = relpath.removesuffix(".py").strip("_").replace("/", "_")
    spec = importlib.util.spec_from_file_location(f"nvgpu_unit_{stem}_{next(_SERIAL)}", REPO / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def real(relpath):
    """The file loaded once for the whole run: the source of autospecs, never patched."""
    return load(relpath)
