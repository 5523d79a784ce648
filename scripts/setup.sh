#!/usr/bin/env bash
# Idempotent environment setup: .venv with torch (never a CUDA build on a CPU
# machine unless asked for) and the project installed editable with its dev extras.
#
# Re-running is cheap: a marker named after the hash of pyproject.toml (and of this
# script) records that the install is current; delete .venv/.installed-* to force one.
#
# Environment:
#   PYTHON           interpreter used to create .venv (default: python3, needs >= 3.11)
#   TORCH_INDEX_URL  on machines without an NVIDIA GPU, the index torch is installed
#                    from. Set it to PyTorch's CPU wheel index to get the small CPU
#                    build; unset, torch comes from pip's configured index (which on
#                    Linux x86_64 may be the large CUDA build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
TORCH_VERSION=2.13.0
py="$VENV/bin/python"

if [ ! -x "$py" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "setup: $PYTHON is older than 3.11; set PYTHON=python3.11 (or newer)" >&2; exit 1; }
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

hash="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
marker="$VENV/.installed-$hash"
if [ -f "$marker" ] && [ -x "$VENV/bin/adapt-distill" ]; then
    exit 0
fi

pip=("$py" -m pip install --quiet --disable-pip-version-check)

if "$py" -c 'import torch' >/dev/null 2>&1; then
    echo "setup: keeping torch $("$py" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found; installing torch==$TORCH_VERSION (CUDA build)"
    "${pip[@]}" "torch==$TORCH_VERSION"
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
    echo "setup: no GPU; installing torch==$TORCH_VERSION from TORCH_INDEX_URL"
    "${pip[@]}" "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
else
    echo "setup: no GPU; installing torch==$TORCH_VERSION (set TORCH_INDEX_URL to choose the CPU wheel index)"
    "${pip[@]}" "torch==$TORCH_VERSION"
fi

# torch already satisfies the range in pyproject.toml, so pip leaves it alone here.
echo "setup: installing adapt-distill (editable, with dev extras)"
"${pip[@]}" -e ".[dev]"

rm -f "$VENV"/.installed-*
touch "$marker"
echo "setup: done"
