#!/usr/bin/env python3
"""Consistency rules over a rendered shop chart (`helm template` output).

Each rule is a function of the rendered objects returning the problems it found. The rules:

  deployment-has-service          every Deployment's pods are selected by a Service whose ports
                                  target ports the container exposes
  deployment-has-destinationrule  (mesh) a DestinationRule for each Deployment's Service host
  deployment-has-virtualservice   (mesh) a VirtualService for each Deployment's Service host
  deployment-has-allow-rule       (mesh) an ALLOW AuthorizationPolicy with rules selects its pods
  principal-has-serviceaccount    every principal of this namespace in an AuthorizationPolicy
                                  names a rendered ServiceAccount
  ports-named                     every Service port and container port has a name
  probe-port-exposed              every probe targets a port its container exposes (and every
                                  server container has startup, readiness and liveness probes)
  selectors-unchanged             Deployment, Service and PDB selectors equal those of the last
                                  released chart version (ci/previous/selectors.json)
  netpol-matches-authz            (mesh + NetworkPolicy) who may call whom is the same in the
                                  NetworkPolicies' ingress and the AuthorizationPolicies
  egress-matches-ingress          (NetworkPolicy) every in-namespace caller admitted by a
                                  callee's ingress may leave by its own egress, and vice versa
  kong-wiring                     (Kong) helm/kong-values.yaml mounts the rendered ConfigMaps,
                                  every grpc-gateway proto and its imports resolve the way Kong
                                  resolves them, upstreams are rendered Services, and the jwt
                                  consumer carries an RS256 key for the token issuer
  token-keys-agree                (Kong + mesh) Kong's PEM and Istio's JWKS are the same RSA key,
                                  so the edge and the mesh accept the same tokens

Usage:
  consistency.py check <rendered.yaml> --previous <selectors.json> [--kong-values <file>]
  consistency.py self-test <rendered.yaml> --previous <selectors.json> --kong-values <file>
      breaks the rendered objects once per rule, in exactly the way that rule guards against,
      and prints rule -> fired; exits non-zero unless the intact objects pass and every rule fired
  consistency.py selectors <rendered.yaml>... > selectors.json
      the selectors of a release, to store as the previous version's when releasing
"""

import argparse
import copy
import json
import pathlib
import posixpath
import re
import sys

import yaml

ISTIO_NET = "networking.istio.io/"
KONG_PROTO_ROOT = "/usr/local/kong/protos"


# --- helpers ---------------------------------------------------------------------------------


def load(path):
    return [o for o in yaml.safe_load_all(pathlib.Path(path).read_text()) if o]


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def name(obj):
    return obj["metadata"]["name"]


def matches(selector, labels):
    """A Kubernetes label selector ({matchLabels, matchExpressions}) against labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_templates(objects):
    """(kind/name, pod metadata, pod spec) of every workload that makes pods."""
    out = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            template = obj["spec"]["template"]
            out.append((f"{obj['kind']}/{name(obj)}", template["metadata"], template["spec"]))
        elif obj["kind"] == "Pod":
            out.append((f"Pod/{name(obj)}", obj["metadata"], obj["spec"]))
    return out


def namespace_of(objects):
    for obj in objects:
        if obj["kind"] == "Deployment":
            return obj["metadata"]["namespace"]
    return None


def service_for(objects, deployment):
    labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    for svc in of_kind(objects, "Service"):
        selector = svc["spec"].get("selector")
        if selector and matches({"matchLabels": selector}, labels):
            return svc
    return None


def host_of(svc):
    return f"{name(svc)}.{svc['metadata']['namespace']}.svc.cluster.local"


def mesh_rendered(objects):
    return any(o["apiVersion"].startswith(ISTIO_NET) for o in objects)


def container_ports(container):
    return {p.get("name"): p["containerPort"] for p in container.get("ports", [])}


def grpc_port(deployment):
    return container_ports(deployment["spec"]["template"]["spec"]["containers"][0]).get("grpc")


# --- rules -----------------------------------------------------------------------------------


def rule_deployment_has_service(objects, ctx):
    problems = []
    for dep in of_kind(objects, "Deployment"):
        svc = service_for(objects, dep)
        if not svc:
            problems.append(f"Deployment {name(dep)}: no Service selects its pods")
            continue
        exposed = set()
        for container in dep["spec"]["template"]["spec"]["containers"]:
            for port in container.get("ports", []):
                exposed.update({port.get("name"), port["containerPort"]})
        for port in svc["spec"]["ports"]:
            if port.get("targetPort", port["port"]) not in exposed:
                problems.append(
                    f"Service {name(svc)}: targetPort {port.get('targetPort')} is not a port of Deployment {name(dep)}"
                )
    return problems


def _mesh_object_for(objects, kind, predicate, what):
    if not mesh_rendered(objects):
        return []
    problems = []
    for dep in of_kind(objects, "Deployment"):
        svc = service_for(objects, dep)
        if svc and not any(predicate(o, host_of(svc)) for o in of_kind(objects, kind)):
            problems.append(f"Deployment {name(dep)}: no {what} for {host_of(svc)}")
    return problems


def rule_deployment_has_destinationrule(objects, ctx):
    return _mesh_object_for(
        objects, "DestinationRule", lambda o, h: o["spec"].get("host") == h, "DestinationRule"
    )


def rule_deployment_has_virtualservice(objects, ctx):
    return _mesh_object_for(
        objects, "VirtualService", lambda o, h: h in o["spec"].get("hosts", []), "VirtualService"
    )


def rule_deployment_has_allow_rule(objects, ctx):
    if not mesh_rendered(objects):
        return []
    problems = []
    for dep in of_kind(objects, "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        allowed = [
            p
            for p in of_kind(objects, "AuthorizationPolicy")
            if p["spec"].get("action", "ALLOW") == "ALLOW"
            and p["spec"].get("rules")
            and matches(p["spec"].get("selector"), labels)
        ]
        if not allowed:
            problems.append(
                f"Deployment {name(dep)}: no ALLOW AuthorizationPolicy with rules selects its pods"
            )
    return problems


def rule_principal_has_serviceaccount(objects, ctx):
    ns = namespace_of(objects)
    accounts = {name(sa) for sa in of_kind(objects, "ServiceAccount")}
    problems = []
    for policy in of_kind(objects, "AuthorizationPolicy"):
        for rule in policy["spec"].get("rules") or []:
            for src in rule.get("from") or []:
                for principal in src.get("source", {}).get("principals") or []:
                    match = re.fullmatch(r"[^/]+/ns/([^/]+)/sa/([^/]+)", principal)
                    if not match:
                        problems.append(
                            f"AuthorizationPolicy {name(policy)}: principal {principal!r} is not <trust domain>/ns/<ns>/sa/<sa>"
                        )
                    elif match.group(1) == ns and match.group(2) not in accounts:
                        problems.append(
                            f"AuthorizationPolicy {name(policy)}: principal {principal} names ServiceAccount {match.group(2)}, which is not rendered"
                        )
    return problems


def rule_ports_named(objects, ctx):
    problems = []
    for svc in of_kind(objects, "Service"):
        for port in svc["spec"]["ports"]:
            if not port.get("name"):
                problems.append(f"Service {name(svc)}: port {port['port']} has no name")
    for where, _, spec in pod_templates(objects):
        for container in spec.get("containers", []):
            for port in container.get("ports", []):
                if not port.get("name"):
                    problems.append(
                        f"{where} container {container['name']}: port {port['containerPort']} has no name"
                    )
    return problems


def rule_probe_port_exposed(objects, ctx):
    problems = []
    for where, _, spec in pod_templates(objects):
        for container in spec.get("containers", []):
            ports = container_ports(container)
            numbers, names = set(ports.values()), set(ports)
            for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(probe_kind)
                if probe is None:
                    if where.startswith("Deployment/"):
                        problems.append(f"{where} container {container['name']}: no {probe_kind}")
                    continue
                for handler in ("grpc", "httpGet", "tcpSocket"):
                    if handler in probe:
                        port = probe[handler]["port"]
                        if port not in numbers and port not in names:
                            problems.append(
                                f"{where} container {container['name']}: {probe_kind} targets port {port}, which the container does not expose"
                            )
    return problems


SELECTOR_KINDS = ("Deployment", "Service", "PodDisruptionBudget")


def selectors(objects):
    out = {}
    for obj in objects:
        if obj["kind"] in SELECTOR_KINDS:
            sel = obj["spec"].get("selector")
            out[f"{obj['kind']}/{name(obj)}"] = sel
    return out


def rule_selectors_unchanged(objects, ctx):
    previous = ctx["previous"]
    problems = []
    for key, selector in selectors(objects).items():
        if key in previous and previous[key] != selector:
            problems.append(
                f"{key}: selector {json.dumps(selector, sort_keys=True)} differs from the last released "
                f"{json.dumps(previous[key], sort_keys=True)} (Deployment selectors are immutable: an upgrade fails)"
            )
    return problems


def _callee_of(objects, selector):
    """The Deployment (name, gRPC port) whose pods a policy selector picks."""
    for dep in of_kind(objects, "Deployment"):
        if matches(selector, dep["spec"]["template"]["metadata"]["labels"]):
            return name(dep), grpc_port(dep)
    return None, None


def _peer_identities(objects, peer):
    """Who a NetworkPolicy peer admits: principals of rendered workloads (same namespace), or
    ("namespace", <ns>) for another namespace's pods."""
    if "namespaceSelector" in peer:
        ns = (peer["namespaceSelector"].get("matchLabels") or {}).get("kubernetes.io/metadata.name", "*")
        return {("namespace", ns)}
    if "podSelector" in peer:
        ns = namespace_of(objects)
        found = set()
        for _, meta, spec in pod_templates(objects):
            if matches(peer["podSelector"], meta.get("labels", {})):
                found.add(
                    ("principal", f"cluster.local/ns/{ns}/sa/{spec.get('serviceAccountName', 'default')}")
                )
        return found
    return {("ipBlock", peer.get("ipBlock", {}).get("cidr"))}


def _identity_of_principal(principal, ns):
    match = re.fullmatch(r"[^/]+/ns/([^/]+)/sa/([^/]+)", principal)
    if match and match.group(1) != ns:
        return ("namespace", match.group(1))
    return ("principal", "cluster.local" + principal[principal.index("/ns/") :])


def netpol_calls(objects):
    """(caller identity, callee, port kind) admitted by the NetworkPolicies' ingress."""
    calls = set()
    for policy in of_kind(objects, "NetworkPolicy"):
        callee, port = _callee_of(objects, policy["spec"]["podSelector"])
        if not callee:
            continue
        for rule in policy["spec"].get("ingress") or []:
            rule_ports = {p.get("port") for p in rule.get("ports") or []}
            for peer in rule.get("from") or []:
                for identity in _peer_identities(objects, peer):
                    if port in rule_ports:
                        calls.add((identity, callee, "grpc"))
                    if 9090 in rule_ports:
                        calls.add((("metrics", "*"), callee, "metrics"))
    return calls


def authz_calls(objects):
    """(caller identity, callee, port kind) allowed by the AuthorizationPolicies."""
    ns = namespace_of(objects)
    calls = set()
    for policy in of_kind(objects, "AuthorizationPolicy"):
        if policy["spec"].get("action", "ALLOW") != "ALLOW":
            continue
        callee, port = _callee_of(objects, policy["spec"].get("selector"))
        if not callee:
            continue
        for rule in policy["spec"].get("rules") or []:
            ports = {p for op in rule.get("to") or [] for p in op.get("operation", {}).get("ports") or []}
            if "9090" in ports and not rule.get("from"):
                calls.add((("metrics", "*"), callee, "metrics"))
                continue
            for src in rule.get("from") or []:
                for principal in src.get("source", {}).get("principals") or []:
                    calls.add((_identity_of_principal(principal, ns), callee, "grpc"))
    return calls


def rule_netpol_matches_authz(objects, ctx):
    if not (mesh_rendered(objects) and of_kind(objects, "NetworkPolicy")):
        return []
    net, authz = netpol_calls(objects), authz_calls(objects)
    problems = []
    for identity, callee, kind in sorted(net - authz):
        problems.append(
            f"{callee} ({kind}): the NetworkPolicy admits {identity[1]}, no AuthorizationPolicy allows it"
        )
    for identity, callee, kind in sorted(authz - net):
        problems.append(
            f"{callee} ({kind}): the AuthorizationPolicy allows {identity[1]}, no NetworkPolicy admits it"
        )
    return problems


def rule_egress_matches_ingress(objects, ctx):
    policies = of_kind(objects, "NetworkPolicy")
    if not policies:
        return []
    ns = namespace_of(objects)
    ingress = {
        (i[1], callee) for i, callee, kind in netpol_calls(objects) if kind == "grpc" and i[0] == "principal"
    }
    egress = set()
    for _, meta, spec in pod_templates(objects):
        principal = f"cluster.local/ns/{ns}/sa/{spec.get('serviceAccountName', 'default')}"
        for policy in policies:
            if "Egress" not in policy["spec"].get("policyTypes", []) or not matches(
                policy["spec"]["podSelector"], meta.get("labels", {})
            ):
                continue
            for rule in policy["spec"].get("egress") or []:
                rule_ports = {p.get("port") for p in rule.get("ports") or []}
                for peer in rule.get("to") or []:
                    if set(peer) != {"podSelector"}:
                        continue
                    for dep in of_kind(objects, "Deployment"):
                        if (
                            matches(peer["podSelector"], dep["spec"]["template"]["metadata"]["labels"])
                            and grpc_port(dep) in rule_ports
                        ):
                            egress.add((principal, name(dep)))
    problems = []
    for caller, callee in sorted(ingress - egress):
        problems.append(f"{callee}: its ingress admits {caller}, whose egress does not allow the call")
    for caller, callee in sorted(egress - ingress):
        problems.append(f"{callee}: {caller} may send to it (egress), its ingress does not admit that")
    return problems


def _proto_imports(text):
    return re.findall(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', text, re.M)


def rule_kong_wiring(objects, ctx):
    kong_values = ctx.get("kong_values")
    configs = [o for o in of_kind(objects, "ConfigMap") if "kong.yml" in o.get("data", {})]
    if not configs or kong_values is None:
        return []
    problems = []
    config_map = configs[0]
    kong = yaml.safe_load(config_map["data"]["kong.yml"])
    want = (kong_values.get("dblessConfig") or {}).get("configMap")
    if want != name(config_map):
        problems.append(
            f"kong-values dblessConfig.configMap is {want!r}, the chart renders {name(config_map)!r}"
        )
    deployment = kong_values.get("deployment") or {}
    mounts = {m["name"]: m["mountPath"] for m in deployment.get("userDefinedVolumeMounts") or []}
    files = {}  # absolute path in Kong's container -> proto text
    for volume in deployment.get("userDefinedVolumes") or []:
        cm_name = (volume.get("configMap") or {}).get("name")
        if volume["name"] not in mounts:
            problems.append(f"kong-values volume {volume['name']} is not mounted")
            continue
        cms = [o for o in of_kind(objects, "ConfigMap") if name(o) == cm_name]
        if not cms:
            problems.append(f"kong-values mounts ConfigMap {cm_name!r}, which the chart does not render")
            continue
        if cms[0]["metadata"]["namespace"] != config_map["metadata"]["namespace"]:
            problems.append(
                f"ConfigMap {cm_name} is not in Kong's namespace {config_map['metadata']['namespace']}"
            )
        for item in volume["configMap"].get("items") or []:
            if item["key"] not in cms[0]["data"]:
                problems.append(f"kong-values item key {item['key']!r} is not in ConfigMap {cm_name}")
            else:
                files[posixpath.join(mounts[volume["name"]], item["path"])] = cms[0]["data"][item["key"]]
    # Kong's grpc-gateway: imports from the proto's own folder first, then its include folder,
    # which ships google/protobuf/* only.
    for service in kong.get("services") or []:
        for plugin in service.get("plugins") or []:
            if plugin["name"] != "grpc-gateway":
                continue
            proto = plugin["config"]["proto"]
            if proto not in files:
                problems.append(f"Kong service {service['name']}: proto {proto} is not in the mounted protos")
                continue
            if not re.search(r"^service\s+\w+", files[proto], re.M):
                problems.append(
                    f"Kong service {service['name']}: the mounted {proto} declares no gRPC service"
                )
            base = posixpath.dirname(proto)
            todo, seen = [proto], set()
            while todo:
                path = todo.pop()
                if path in seen:
                    continue
                seen.add(path)
                for imp in _proto_imports(files[path]):
                    if imp.startswith("google/protobuf/"):
                        continue
                    candidate = posixpath.join(base, imp)
                    if candidate in files and files[candidate].strip():
                        todo.append(candidate)
                    else:
                        problems.append(
                            f"Kong service {service['name']}: {path} imports {imp}, not found at {candidate}"
                        )
    ns = namespace_of(objects)
    services = {name(s): s for s in of_kind(objects, "Service")}
    for service in kong.get("services") or []:
        match = re.fullmatch(r"grpcs?://([^.]+)\.([^.]+)\.svc\.cluster\.local:(\d+)", service.get("url", ""))
        if not match:
            problems.append(
                f"Kong service {service['name']}: upstream {service.get('url')} is not a cluster Service URL"
            )
            continue
        svc_name, svc_ns, port = match.group(1), match.group(2), int(match.group(3))
        svc = services.get(svc_name)
        if svc_ns != ns or not svc or port not in {p["port"] for p in svc["spec"]["ports"]}:
            problems.append(
                f"Kong service {service['name']}: upstream {service['url']} is not a rendered Service port in namespace {ns}"
            )
    issuers = {
        cm["data"].get("JWT_ISSUER")
        for cm in of_kind(objects, "ConfigMap")
        if "JWT_ISSUER" in cm.get("data", {})
    }
    secrets = [s for c in kong.get("consumers") or [] for s in c.get("jwt_secrets") or []]
    for issuer in issuers:
        if not any(
            s.get("key") == issuer
            and s.get("algorithm") == "RS256"
            and "BEGIN PUBLIC KEY" in s.get("rsa_public_key", "")
            for s in secrets
        ):
            problems.append(
                f"kong.yml has no consumer jwt_secrets entry {{key: {issuer}, algorithm: RS256, rsa_public_key: <PEM>}}: Kong would refuse every token"
            )
    return problems


def _der(data, pos):
    """One DER element at pos: (tag, content bytes, next position)."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    return tag, data[pos : pos + length], pos + length


def rsa_public_numbers_from_pem(pem):
    """(n, e) of a SubjectPublicKeyInfo ("BEGIN PUBLIC KEY") RSA PEM."""
    import base64

    body = "".join(line for line in pem.strip().splitlines() if "-----" not in line)
    der = base64.b64decode(body)
    _, spki, _ = _der(der, 0)  # SEQUENCE { algorithm, subjectPublicKey }
    _, _, pos = _der(spki, 0)  # AlgorithmIdentifier
    _, bits, _ = _der(spki, pos)  # BIT STRING, first byte = unused bits
    _, rsa_key, _ = _der(bits[1:], 0)  # SEQUENCE { n, e }
    _, n, pos = _der(rsa_key, 0)
    _, e, _ = _der(rsa_key, pos)
    return int.from_bytes(n, "big"), int.from_bytes(e, "big")


def _b64url_int(text):
    import base64

    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def rule_token_keys_agree(objects, ctx):
    configs = [o for o in of_kind(objects, "ConfigMap") if "kong.yml" in o.get("data", {})]
    auths = of_kind(objects, "RequestAuthentication")
    if not configs or not auths:
        return []
    kong = yaml.safe_load(configs[0]["data"]["kong.yml"])
    pems = [s["rsa_public_key"] for c in kong.get("consumers") or [] for s in c.get("jwt_secrets") or []]
    jwks_keys = set()
    for auth in auths:
        for rule in auth["spec"].get("jwtRules") or []:
            for key in json.loads(rule.get("jwks", "{}")).get("keys", []):
                if key.get("kty") == "RSA":
                    jwks_keys.add((_b64url_int(key["n"]), _b64url_int(key["e"])))
    problems = []
    for pem in pems:
        try:
            numbers = rsa_public_numbers_from_pem(pem)
        except (ValueError, IndexError) as error:
            problems.append(f"Kong's rsa_public_key is not an RSA SubjectPublicKeyInfo PEM ({error})")
            continue
        if numbers not in jwks_keys:
            problems.append(
                "Kong's rsa_public_key is not among the RequestAuthentication's JWKS keys: Kong and Istio would accept different tokens"
            )
    return problems


RULES = {
    "deployment-has-service": rule_deployment_has_service,
    "deployment-has-destinationrule": rule_deployment_has_destinationrule,
    "deployment-has-virtualservice": rule_deployment_has_virtualservice,
    "deployment-has-allow-rule": rule_deployment_has_allow_rule,
    "principal-has-serviceaccount": rule_principal_has_serviceaccount,
    "ports-named": rule_ports_named,
    "probe-port-exposed": rule_probe_port_exposed,
    "selectors-unchanged": rule_selectors_unchanged,
    "netpol-matches-authz": rule_netpol_matches_authz,
    "egress-matches-ingress": rule_egress_matches_ingress,
    "kong-wiring": rule_kong_wiring,
    "token-keys-agree": rule_token_keys_agree,
}


def run(objects, ctx):
    return {rule: fn(objects, ctx) for rule, fn in RULES.items()}


# --- self-test: one break per rule -----------------------------------------------------------


def _first(objects, kind, wanted=None):
    for obj in objects:
        if obj["kind"] == kind and (wanted is None or name(obj) == wanted):
            return obj
    raise LookupError(f"no {kind} {wanted or ''} in the rendering")


def _drop(objects, kind, wanted):
    target = _first(objects, kind, wanted)
    objects.remove(target)


def break_service(objects, ctx):
    _drop(objects, "Service", "user-service")
    return "deleted Service user-service"


def break_destinationrule(objects, ctx):
    _drop(objects, "DestinationRule", "user-service")
    return "deleted DestinationRule user-service"


def break_virtualservice(objects, ctx):
    _drop(objects, "VirtualService", "order-service")
    return "deleted VirtualService order-service"


def break_allow_rule(objects, ctx):
    _drop(objects, "AuthorizationPolicy", "payment-service")
    return "deleted AuthorizationPolicy payment-service"


def break_principal(objects, ctx):
    _drop(objects, "ServiceAccount", "order-service")
    return "deleted ServiceAccount order-service (still a principal in product-service's policy)"


def break_port_name(objects, ctx):
    del _first(objects, "Service", "product-service")["spec"]["ports"][0]["name"]
    return "removed the name of product-service's Service port"


def break_probe(objects, ctx):
    container = _first(objects, "Deployment", "order-service")["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["grpc"]["port"] = 50059
    return "pointed order-service's readiness probe at port 50059"


def break_selector(objects, ctx):
    _first(objects, "Deployment", "user-service")["spec"]["selector"]["matchLabels"]["version"] = "0.2.0"
    return "added version to user-service's Deployment selector"


def break_netpol(objects, ctx):
    policy = _first(objects, "NetworkPolicy", "user-service")
    policy["spec"]["ingress"] = [
        rule
        for rule in policy["spec"]["ingress"]
        if not any(
            p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "payment-service"
            for p in rule.get("from", [])
        )
    ]
    return "removed payment-service from user-service's NetworkPolicy ingress (AuthorizationPolicy still allows it)"


def break_egress(objects, ctx):
    policy = _first(objects, "NetworkPolicy", "order-service")
    policy["spec"]["egress"] = [
        rule
        for rule in policy["spec"]["egress"]
        if not any(
            p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "product-service"
            for p in rule.get("to", [])
        )
    ]
    return "removed order-service's egress to product-service (product-service's ingress still admits it)"


def break_kong(objects, ctx):
    volume = ctx["kong_values"]["deployment"]["userDefinedVolumes"][0]
    for item in volume["configMap"]["items"]:
        if item["path"] == "shop/order/v1/shop/common/v1/money.proto":
            item["path"] = "shop/common/v1/money.proto"
    return "mounted money.proto at the protos root instead of beside order.proto"


def break_token_keys(objects, ctx):
    auth = _first(objects, "RequestAuthentication")
    rule = auth["spec"]["jwtRules"][0]
    jwks = json.loads(rule["jwks"])
    n = jwks["keys"][0]["n"]
    jwks["keys"][0]["n"] = ("B" if n[0] == "A" else "A") + n[1:]
    rule["jwks"] = json.dumps(jwks)
    return "changed one character of the JWKS key's modulus (Kong's PEM unchanged)"


BREAKS = {
    "deployment-has-service": break_service,
    "deployment-has-destinationrule": break_destinationrule,
    "deployment-has-virtualservice": break_virtualservice,
    "deployment-has-allow-rule": break_allow_rule,
    "principal-has-serviceaccount": break_principal,
    "ports-named": break_port_name,
    "probe-port-exposed": break_probe,
    "selectors-unchanged": break_selector,
    "netpol-matches-authz": break_netpol,
    "egress-matches-ingress": break_egress,
    "kong-wiring": break_kong,
    "token-keys-agree": break_token_keys,
}


def self_test(objects, ctx):
    intact = run(objects, ctx)
    clean = not any(intact.values())
    print(f"intact rendering passes every rule: {'yes' if clean else 'NO'}")
    for rule, problems in intact.items():
        for problem in problems:
            print(f"  {rule}: {problem}")
    print(f"\n{'rule':32} {'fired':6} break")
    all_fired = True
    for rule, breaker in BREAKS.items():
        broken, broken_ctx = copy.deepcopy(objects), copy.deepcopy(ctx)
        what = breaker(broken, broken_ctx)
        found = RULES[rule](broken, broken_ctx)
        fired = bool(found)
        all_fired &= fired
        print(f"{rule:32} {'yes' if fired else 'NO':6} {what}")
        if found:
            print(f"{'':39}-> {found[0]}")
    print(f"\n{sum(1 for r in BREAKS)} rules, {'all fired' if all_fired else 'NOT all fired'}")
    return clean and all_fired


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["check", "self-test", "selectors"])
    parser.add_argument("rendered", nargs="+")
    parser.add_argument("--previous")
    parser.add_argument("--kong-values")
    args = parser.parse_args()

    if args.mode == "selectors":
        merged = {}
        for path in args.rendered:
            merged.update(selectors(load(path)))
        print(json.dumps(merged, indent=2, sort_keys=True))
        return 0

    objects = load(args.rendered[0])
    ctx = {
        "previous": json.loads(pathlib.Path(args.previous).read_text()) if args.previous else {},
        "kong_values": yaml.safe_load(pathlib.Path(args.kong_values).read_text())
        if args.kong_values
        else None,
    }
    if args.mode == "self-test":
        return 0 if self_test(objects, ctx) else 1
    results = run(objects, ctx)
    failed = 0
    for rule, problems in results.items():
        print(f"  {'ok' if not problems else 'FAIL':4}  {rule}")
        for problem in problems:
            print(f"          {problem}")
        failed += bool(problems)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
