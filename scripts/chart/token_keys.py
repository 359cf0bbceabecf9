#!/usr/bin/env python3
"""Prints the chart values for the token key: auth.publicKeyPem (Kong's jwt credential) and
auth.jwks (Istio's RequestAuthentication), both from one PEM, with the key id user-service
publishes (the RFC 7638 SHA-256 thumbprint), so Kong, Istio and the services agree.

Usage: token_keys.py <signing-key.pem or its public half> [<retired key pem>...] > token-keys.yaml
       helm upgrade --install shop helm/shop -n shop -f token-keys.yaml …
Retired keys (USER_PREVIOUS_SIGNING_KEY_FILES) go into the JWKS too, so their tokens keep
verifying in the mesh until they expire; Kong OSS holds one key per issuer: the first.
Needs `cryptography` (in the venv of scripts/install-tools.sh, via PyJWT[crypto]).
"""
import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives import serialization


def public_key(path):
    data = open(path, "rb").read()
    if b"PRIVATE KEY" in data:
        return serialization.load_pem_private_key(data, password=None).public_key()
    return serialization.load_pem_public_key(data)


def b64url(number):
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk(key):
    numbers = key.public_numbers()
    n, e = b64url(numbers.n), b64url(numbers.e)
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"), sort_keys=True)
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": e}


def main(paths):
    keys = [public_key(p) for p in paths]
    pem = keys[0].public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    jwks = json.dumps({"keys": [jwk(k) for k in keys]}, separators=(",", ":"))
    print("auth:")
    print("  publicKeyPem: |")
    for line in pem.strip().splitlines():
        print(f"    {line}")
    print("  jwks: >-")
    print(f"    {jwks}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
