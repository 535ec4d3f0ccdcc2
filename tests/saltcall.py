"""A salt-call config for this checkout's extension modules, without a simulated node.

Shared by the CPU host-check tests and the GPU suite (which runs with --noconftest)."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def minion_config(conf):
    """Write ``conf/minion``: masterless, state under ``conf/root``, this checkout's
    ``_modules`` and ``_grains``. Returns ``conf`` for ``salt-call -c``."""
    (conf / "minion").write_text(
        f"file_client: local\n"
        f"root_dir: {conf / 'root'}\n"
        f"module_dirs: [{REPO / '_modules'}]\n"
        f"grains_dirs: [{REPO / '_grains'}]\n"
        f"utils_dirs: [{REPO / '_utils'}]\n"
    )
    return conf
