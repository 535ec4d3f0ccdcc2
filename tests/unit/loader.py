"""Load one of the extension's Salt modules as a plain Python module, fresh each call,
so a unit test can set its dunders (__salt__, __opts__, ...) and module paths."""

import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def load(relpath, name):
    """``load("_modules/nvgpu.py", "nvgpu_under_test")``: the file as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, REPO / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
