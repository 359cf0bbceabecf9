#!/usr/bin/env python3
"""Builds strict JSON schemas for the CRD objects the chart renders (Istio, Prometheus Operator).

The npm packages @kubernetes-models/istio@2.3.0 and @kubernetes-models/prometheus-operator@4.0.0
(installed by scripts/install-tools.sh) carry each CRD's OpenAPI schema as a JSON literal inside
a JS module (`const schema = {...};`). Like every CRD schema, they do not forbid unknown fields:
the API server does that itself (strict field validation), but a plain schema check would let a
misspelt field pass. So this script sets `additionalProperties: false` on every object schema
that lists `properties` and says nothing else about extra keys (and is not
x-kubernetes-preserve-unknown-fields), which is what the API server enforces.

Istio's v1 APIs are the v1beta1 (networking, security) and v1alpha1 (telemetry) messages
promoted unchanged, so the v1 kinds are checked against those schemas with apiVersion set to v1.
They describe Istio 1.18: a field added later fails here (a false alarm, never a miss);
scripts/chart/crd-validate.mjs checks the same objects against Istio 1.29's own validators.

Usage: crd_schemas.py <deploy-schemas dir> <output dir>   (writes <group>_<version>_<Kind>.json)
       crd_schemas.py --self-test <output dir>            (proves the tightening bites)
"""

import json
import pathlib
import sys

# (apiVersion, kind) we render -> (package, module path inside it)
SOURCES = {
    ("security.istio.io/v1", "PeerAuthentication"): (
        "istio@2.3.0",
        "security.istio.io/v1beta1/PeerAuthentication.js",
    ),
    ("security.istio.io/v1", "AuthorizationPolicy"): (
        "istio@2.3.0",
        "security.istio.io/v1/AuthorizationPolicy.js",
    ),
    ("security.istio.io/v1", "RequestAuthentication"): (
        "istio@2.3.0",
        "security.istio.io/v1/RequestAuthentication.js",
    ),
    ("networking.istio.io/v1", "DestinationRule"): (
        "istio@2.3.0",
        "networking.istio.io/v1beta1/DestinationRule.js",
    ),
    ("networking.istio.io/v1", "VirtualService"): (
        "istio@2.3.0",
        "networking.istio.io/v1beta1/VirtualService.js",
    ),
    ("networking.istio.io/v1", "Sidecar"): ("istio@2.3.0", "networking.istio.io/v1beta1/Sidecar.js"),
    ("telemetry.istio.io/v1", "Telemetry"): ("istio@2.3.0", "telemetry.istio.io/v1alpha1/Telemetry.js"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        "prometheus-operator@4.0.0",
        "monitoring.coreos.com/v1/ServiceMonitor.js",
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        "prometheus-operator@4.0.0",
        "monitoring.coreos.com/v1/PrometheusRule.js",
    ),
}

# ObjectMeta as far as a rendered object uses it (the packages reference the full one by $ref).
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def schema_file(api_version, kind):
    return api_version.replace("/", "_") + "_" + kind + ".json"


def extract(js_text):
    """The JSON literal after `const schema = ` up to its matching closing brace."""
    start = js_text.index("const schema = ") + len("const schema = ")
    depth, in_string, escaped = 0, False, False
    for pos in range(start, len(js_text)):
        ch = js_text[pos]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return json.loads(js_text[start : pos + 1])
    raise ValueError("unterminated schema literal")


def tighten(node):
    """additionalProperties: false on every object that lists properties and allows nothing else."""
    count = 0
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
            count += 1
        for value in node.values():
            count += tighten(value)
    elif isinstance(node, list):
        for value in node:
            count += tighten(value)
    return count


def drop_nullable(node):
    """OpenAPI's `nullable` is no JSON Schema keyword; a rendered object never carries nulls."""
    if isinstance(node, dict):
        node.pop("nullable", None)
        for value in node.values():
            drop_nullable(value)
    elif isinstance(node, list):
        for value in node:
            drop_nullable(value)


def build(packages_dir, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    for (api_version, kind), (package, module) in SOURCES.items():
        js = (packages_dir / package / "package" / module).read_text()
        schema = extract(js)
        drop_nullable(schema)
        schema["properties"]["apiVersion"] = {"const": api_version}
        schema["properties"]["kind"] = {"const": kind}
        schema["properties"]["metadata"] = METADATA
        schema.setdefault("required", [])
        for key in ("apiVersion", "kind", "metadata"):
            if key not in schema["required"]:
                schema["required"].append(key)
        schema.pop("status", None)
        schema["properties"].pop("status", None)
        # The package's schema as it is, for the self-test's "would have passed" column.
        (out_dir / "loose").mkdir(exist_ok=True)
        (out_dir / "loose" / schema_file(api_version, kind)).write_text(json.dumps(schema))
        tightened = tighten(schema)
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        schema["description"] = (
            f"{api_version} {kind} from @kubernetes-models/{package} ({module}), "
            f"{tightened} object schemas closed to unknown fields"
        )
        (out_dir / schema_file(api_version, kind)).write_text(json.dumps(schema, indent=1))
        print(f"  {api_version} {kind}: {tightened} objects closed")


def self_test(out_dir):
    """Per schema: a valid object passes, the same object with one misspelt field fails, and the
    package's schema before tightening would have let that misspelling through."""
    import jsonschema  # check-jsonschema's own dependency, in the deploy venv

    samples = {
        ("security.istio.io/v1", "AuthorizationPolicy"): (
            {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["a"]}}]}]},
            {"action": "ALLOW", "rules": [{"from": [{"source": {"principal": ["a"]}}]}]},
        ),
        ("networking.istio.io/v1", "DestinationRule"): (
            {"host": "a", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}},
            {"host": "a", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL", "sni_": "x"}}},
        ),
        ("networking.istio.io/v1", "VirtualService"): (
            {"hosts": ["a"], "http": [{"retries": {"attempts": 1, "retryOn": "cancelled"}}]},
            {"hosts": ["a"], "http": [{"retries": {"attempts": 1, "retryon": "cancelled"}}]},
        ),
        ("security.istio.io/v1", "RequestAuthentication"): (
            {"jwtRules": [{"issuer": "a", "forwardOriginalToken": True}]},
            {"jwtRules": [{"issuer": "a", "forwardOrginalToken": True}]},
        ),
        ("monitoring.coreos.com/v1", "ServiceMonitor"): (
            {"selector": {}, "endpoints": [{"port": "http-metrics"}]},
            {"selector": {}, "endpoints": [{"prot": "http-metrics"}]},
        ),
    }
    failures = 0
    for (api_version, kind), (good, bad) in samples.items():
        schema = json.loads((out_dir / schema_file(api_version, kind)).read_text())
        meta = {"name": "x", "namespace": "shop"}
        validator = jsonschema.Draft7Validator(schema)
        ok_good = not list(
            validator.iter_errors({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": good})
        )
        bad_object = {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": bad}
        ok_bad = not list(validator.iter_errors(bad_object))
        loose = json.loads((out_dir / "loose" / schema_file(api_version, kind)).read_text())
        loose_ok_bad = not list(jsonschema.Draft7Validator(loose).iter_errors(bad_object))
        verdict = "ok" if ok_good and not ok_bad else "FAIL"
        failures += verdict == "FAIL"
        print(
            f"  {verdict:4}  {kind}: valid object passes={ok_good}, misspelt field refused="
            f"{not ok_bad} (untightened schema would have passed it: {loose_ok_bad})"
        )
    return failures


if __name__ == "__main__":
    if sys.argv[1] == "--self-test":
        sys.exit(1 if self_test(pathlib.Path(sys.argv[2])) else 0)
    build(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
