#!/bin/sh
# The image's install steps, in one place: the Containerfile runs them as root at build time, and
# tests/container/test_container.py runs them in a fresh virtual environment.
#   SRC              the project's source folder (default /opt/wsi-heatmaps/src)
#   VENV             the virtual environment to create (default /opt/venv)
#   EXTRAS           pip extras of the project, e.g. "[test]" for the devel target (default none)
#   TORCH_INDEX_URL  wheel index of the torch build (CPU: https://download.pytorch.org/whl/cpu,
#                    CUDA 12.4: https://download.pytorch.org/whl/cu124); empty: torch from PyPI
set -eu
SRC=${SRC:-/opt/wsi-heatmaps/src}
VENV=${VENV:-/opt/venv}
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import ensurepip" >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates
    rm -rf /var/lib/apt/lists/*
fi
python3 -m venv "$VENV"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$VENV/bin/pip" install --no-cache-dir --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple \
        torch torchvision
fi
"$VENV/bin/pip" install --no-cache-dir "$SRC${EXTRAS:-}"
"$VENV/bin/create-heatmaps" --help >/dev/null
