#!/usr/bin/env bash
# The GPU suite on a bare GPU machine (no make, no venv, no network): Salt and the few of its
# dependencies that the machine's python3 lacks come as wheels in <repo>/.whl, Podman and the
# image's libraries as Debian packages in <repo>/.debs (docs/gpu.md says how to fetch both).
# Run as root from anywhere:  tests/gpu/run-on-device.sh [pytest args]
# NVGPU_GPU_RECORD=FILE makes the suite append every salt-call and its return to FILE.
set -uo pipefail
cd "$(dirname "$0")/../.."
site=${NVGPU_SITE:-/tmp/nvgpu-site}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl || exit
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# --noconftest: tests/conftest.py serves the simulated node (pytest-salt-factories), not this suite.
exec python3 -m pytest -p no:cacheprovider --noconftest -ra -m gpu tests/gpu "$@"
