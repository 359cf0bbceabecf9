#!/usr/bin/env bash
# Validates the deployment artefacts without a cluster: the Helm chart (helm/shop) rendered for
# every values case in helm/shop/ci (values-*.yaml, and the previous release's values for the
# upgrade), the generated istio/ manifests and helm/kong-values.yaml. Per case:
#   helm lint --strict, helm template,
#   kubernetes-validate --strict on every built-in object (Kubernetes 1.29, the chart's minimum,
#     and 1.37),
#   check-jsonschema on every Istio and Prometheus Operator object against the CRD schemas from
#     npm, closed to unknown fields (scripts/chart/crd_schemas.py), and the current CRDs' own
#     validators (scripts/chart/crd-validate.mjs),
#   checkov (framework kubernetes), failing on any check not allowed by ci/checkov-skip.txt,
#   the consistency rules (scripts/chart/consistency.py), yamllint on the rendered output.
# Then: the consistency rules' self-test, proof that the schema tightening bites, renders that
# must fail (misspelt value, unsafe shutdown timing, PDB over one pod, Kong without its key),
# `helm package` following the chart's symlinks, istio/ up to date, yamllint on the plain YAML.
# Tools come from scripts/install-tools.sh. Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

BIN="$(bash scripts/install-tools.sh --print-bin)"
export PATH="$BIN:$PATH"
for tool in helm kubernetes-validate check-jsonschema checkov yamllint node; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-tools.sh" >&2; exit 2; }
done
# The deploy venv's python (PyYAML, jsonschema) runs our checkers.
PY="$(dirname "$(readlink -f "$BIN/checkov")")/python"
SCHEMAS="${SHOP_DEPLOY_SCHEMAS:-$(dirname "$(dirname "$BIN")")/deploy-schemas}"
CHART=helm/shop
CI=$CHART/ci
NS=shop
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
declare -A RESULT
step() { printf '\n== %s\n' "$*"; }
# check <label> <command...>: runs the command, records ok/FAIL under the label.
check() {
    local label="$1"
    shift
    if "$@" >"$WORK/out" 2>&1; then
        passed=$((passed + 1))
        RESULT[$label]=ok
        # The tool's own closing line, where it has one (counts of what it checked).
        printf '  ok    %-66s %s\n' "$label" "$(grep -v 'symbolic link' "$WORK/out" | tail -1 | sed 's/^ *//')"
    else
        failed=$((failed + 1))
        RESULT[$label]=FAIL
        printf '  FAIL  %s\n' "$label"
        sed 's/^/        /' "$WORK/out" | grep -v 'found symbolic link in path' | tail -40
    fi
}
# check_shown <label> <command...>: the same, printing the command's whole output (self-tests).
check_shown() {
    local label="$1"
    shift
    if "$@" >"$WORK/out" 2>&1; then
        passed=$((passed + 1))
        RESULT[$label]=ok
    else
        failed=$((failed + 1))
        RESULT[$label]=FAIL
    fi
    sed 's/^/        /' "$WORK/out"
    printf '  %-4s  %s\n' "${RESULT[$label]}" "$label"
}
# must_fail <label> <expected message part> <helm template args...>
must_fail() {
    local label="$1" expected="$2"
    shift 2
    if helm template shop "$CHART" -n "$NS" -f "$CI/keys.yaml" "$@" >"$WORK/out" 2>&1; then
        failed=$((failed + 1))
        printf '  FAIL  %s: rendered, should have failed\n' "$label"
    elif grep -q -- "$expected" "$WORK/out"; then
        passed=$((passed + 1))
        printf '  ok    %s: %s\n' "$label" "$(grep -v 'symbolic link' "$WORK/out" | grep -o -- "$expected.\{0,60\}" | head -1)"
    else
        failed=$((failed + 1))
        printf '  FAIL  %s: failed without "%s":\n' "$label" "$expected"
        grep -v 'symbolic link' "$WORK/out" | tail -5
    fi
}

step "CRD schemas: extracted from npm, closed to unknown fields, and proven to refuse a misspelt field"
check_shown "crd schemas built" "$PY" scripts/chart/crd_schemas.py "$SCHEMAS" "$WORK/schemas"
check_shown "crd schemas refuse a misspelt field" "$PY" scripts/chart/crd_schemas.py --self-test "$WORK/schemas"

# The cases: name -> values file, rendered with ci/keys.yaml (the CI example token key) on top,
# since the previous release's values.yaml carries the empty defaults of those keys.
declare -A CASES
for file in "$CI"/values-*.yaml; do
    case_name="$(basename "$file" .yaml)"
    CASES[${case_name#values-}]="$file"
done
CASES[upgrade-from-0.1.0]="$CI/previous/values-0.1.0.yaml"
CASE_NAMES=(defaults mesh-off production mongo upgrade-from-0.1.0)
for name in "${!CASES[@]}"; do
    [[ " ${CASE_NAMES[*]} " == *" $name "* ]] || CASE_NAMES+=("$name")
done

validate_crds() { # <split dir>: strict schema per kind, then the current validators
    local dir="$1" status=0 kinds=0
    for kind_dir in "$dir"/crd/*/; do
        [ -d "$kind_dir" ] || continue
        kinds=$((kinds + 1))
        check-jsonschema --schemafile "$WORK/schemas/$(basename "$kind_dir").json" "$kind_dir"*.json || status=1
    done
    if compgen -G "$dir/crd/*/*.json" >/dev/null; then
        node scripts/chart/crd-validate.mjs "$SCHEMAS" "$dir"/crd/*/*.json >"$WORK/node.out" || status=1
        cat "$WORK/node.out"
        echo "$kinds kinds by strict schema; Istio 1.29 / prometheus-operator validators: $(tail -1 "$WORK/node.out")"
    fi
    return $status
}
run_checkov() { # <rendered> <case>
    checkov -f "$1" --framework kubernetes -o json >"$WORK/checkov.json" 2>/dev/null
    "$PY" scripts/chart/checkov_gate.py "$WORK/checkov.json" "$CI/checkov-skip.txt" "$2"
}
render() { # <output file> <helm template args...>
    local out="$1"
    shift
    helm template shop "$CHART" "$@" >"$out"
}
kube_validate() { # <split dir>: the chart's minimum Kubernetes and the current one
    kubernetes-validate --strict --quiet -k 1.29.0 "$1"/k8s/*.yaml \
        && kubernetes-validate --strict --quiet -k 1.37.0 "$1"/k8s/*.yaml \
        && echo "$(find "$1/k8s" -name '*.yaml' | wc -l) objects valid for Kubernetes 1.29.0 and 1.37.0"
}
lint_rendered() {
    yamllint -s -d '{extends: default, rules: {line-length: disable, document-start: disable,
        indentation: {indent-sequences: whatever}, comments: {min-spaces-from-content: 1},
        braces: {max-spaces-inside: 1}, truthy: {check-keys: false}}}' "$1" && echo "no problems"
}

for name in "${CASE_NAMES[@]}"; do
    values="${CASES[$name]}"
    step "case $name ($values)"
    rendered="$WORK/$name.yaml"
    args=(-n "$NS" -f "$values" -f "$CI/keys.yaml")
    check "$name: helm lint --strict" helm lint --strict "$CHART" "${args[@]}"
    check "$name: helm template" render "$rendered" "${args[@]}"
    [ "${RESULT["$name: helm template"]}" = ok ] || continue
    check "$name: split into objects" "$PY" scripts/chart/split.py "$rendered" "$WORK/$name"
    check "$name: kubernetes-validate --strict (1.29, 1.37)" kube_validate "$WORK/$name"
    check "$name: Istio/monitoring objects (strict schemas, current validators)" validate_crds "$WORK/$name"
    check "$name: checkov" run_checkov "$rendered" "$name"
    check "$name: consistency rules" "$PY" scripts/chart/consistency.py check "$rendered" \
        --previous "$CI/previous/selectors.json" --kong-values helm/kong-values.yaml
    check "$name: yamllint (rendered)" lint_rendered "$rendered"
done

step "consistency rules: self-test (each rule broken once on the defaults rendering)"
check_shown "consistency self-test: every rule fires" "$PY" scripts/chart/consistency.py self-test \
    "$WORK/defaults.yaml" --previous "$CI/previous/selectors.json" --kong-values helm/kong-values.yaml

step "every setting the chart gives the services is one the binaries read (env = \"…\" in the Rust code)"
env_names_known() {
    local known unknown
    known="$(grep -rhoE 'env = "[A-Z0-9_]+"' common/src services/*/src | cut -d'"' -f2 | sort -u)"
    unknown="$(for name in "${CASE_NAMES[@]}"; do
        "$PY" -c 'import sys, yaml
for o in yaml.safe_load_all(open(sys.argv[1])):
    if not o: continue
    if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-service-config"):
        print("\n".join(o["data"]))
    if o["kind"] == "Job":
        print("\n".join(e["name"] for e in o["spec"]["template"]["spec"]["containers"][0].get("env", [])))' "$WORK/$name.yaml"
    done | sort -u | comm -23 - <(echo "$known"))"
    if [ -n "$unknown" ]; then
        echo "set by the chart, read by no binary: $unknown"
        return 1
    fi
    echo "$(echo "$known" | wc -l) settings known to the binaries; the chart sets none other"
}
check "chart env names are read by the binaries" env_names_known

step "the tightened schemas bite through check-jsonschema: a misspelt Istio field is refused"
misspelt() {
    local files file
    files=("$WORK"/defaults/crd/networking.istio.io_v1_VirtualService/*.json)
    file="${files[0]}"
    "$PY" -c 'import json,sys; o=json.load(open(sys.argv[1])); r=o["spec"]["http"][0]["retries"]; r["retry_on"]=r.pop("retryOn"); json.dump(o,open(sys.argv[2],"w"))' \
        "$file" "$WORK/misspelt.json"
    if check-jsonschema --schemafile "$WORK/schemas/networking.istio.io_v1_VirtualService.json" "$WORK/misspelt.json"; then
        echo "a VirtualService with retries.retry_on passed the strict schema"
        return 1
    fi
}
check "VirtualService with retries.retry_on refused" misspelt

step "renders that must fail, with a clear message"
must_fail "misspelt value (values.schema.json)" "additional properties 'replica' not allowed" \
    --set services.user.replica=2
must_fail "misspelt nested value" "additional properties 'drainDelay' not allowed" --set shutdown.drainDelay=5
must_fail "drain delay shorter than a readiness period" "must be at least one readiness period" \
    --set shutdown.drainDelaySeconds=2
must_fail "terminationGracePeriodSeconds below drain + grace + margin" "is shorter than drainDelaySeconds" \
    --set shutdown.terminationGracePeriodSeconds=10
must_fail "PDB over one replica without HPA" "blocks every node drain" --set services.order.pdb.enabled=true
must_fail "Kong without the token public key" "kong.enabled needs auth.publicKeyPem" --set auth.publicKeyPem=
must_fail "mesh without the JWKS" "needs auth.jwks" --set auth.jwks=
must_fail "caller map naming an unknown caller" "is neither a service nor in access.externalCallers" \
    --set 'access.calls.order-service[0].from=nginx' --set 'access.calls.order-service[0].methods[0]=GetOrder'
must_fail "chart secrets missing" "secrets.mode=chart needs" --set secrets.mode=chart
must_fail "extraEnv replacing a chart setting" "the chart sets RUST_LOG itself" \
    --set services.user.extraEnv.RUST_LOG=debug

step "helm package follows the chart's symlinks (kong.yaml, protos, alerts, grafana)"
packaged() {
    helm package "$CHART" -d "$WORK/pkg" >/dev/null || return 1
    local packages tgz
    packages=("$WORK"/pkg/shop-*.tgz)
    tgz="${packages[0]}"
    tar -tzf "$tgz" >"$WORK/pkg/list"
    for file in shop/files/kong.yaml shop/files/protos/shop/user/v1/user.proto \
        shop/files/protos/google/api/http.proto shop/files/alerts/shop.rules.yaml \
        shop/files/grafana/shop-overview.json; do
        grep -qx "$file" "$WORK/pkg/list" || { echo "$file missing from $tgz"; return 1; }
    done
    if grep -q -e '^shop/ci/' -e '^shop/files/protos/shop/events/' "$WORK/pkg/list"; then
        echo ".helmignore'd files in the package"
        return 1
    fi
    helm template shop "$tgz" -n "$NS" -f "$CI/values-mesh-off.yaml" -f "$CI/keys.yaml" >"$WORK/pkg/from-package.yaml" 2>/dev/null || return 1
    helm template shop "$CHART" -n "$NS" -f "$CI/values-mesh-off.yaml" -f "$CI/keys.yaml" >"$WORK/pkg/from-folder.yaml" 2>/dev/null || return 1
    if ! diff -q "$WORK/pkg/from-folder.yaml" "$WORK/pkg/from-package.yaml" >/dev/null; then
        echo "the packaged chart renders differently from the folder"
        return 1
    fi
}
check "helm package: symlinked files inside, renders as the folder does" packaged

step "istio/ is generated from the chart and up to date"
check "istio/ up to date (scripts/chart/gen-istio.sh --check)" bash scripts/chart/gen-istio.sh --check

step "yamllint: values, CI values, kong-values, istio/ (.yamllint)"
check "yamllint plain YAML" yamllint -s "$CHART/values.yaml" "$CI" helm/kong-values.yaml istio/ .yamllint

step "summary"
printf '%-28s' "case"
validators=("helm lint --strict" "helm template" "kubernetes-validate --strict (1.29, 1.37)"
    "Istio/monitoring objects (strict schemas, current validators)" "checkov" "consistency rules"
    "yamllint (rendered)")
short=(lint template k8s-validate crd-schemas checkov consistency yamllint)
printf '%-13s' "${short[@]}"
echo
for name in "${CASE_NAMES[@]}"; do
    printf '%-28s' "$name"
    for v in "${validators[@]}"; do printf '%-13s' "${RESULT["$name: $v"]:--}"; done
    echo
done
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
