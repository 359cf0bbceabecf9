"""Verifies a JWT against a JWK Set with PyJWT, an implementation independent of ours.

usage: verify_with_pyjwt.py JWKS_FILE TOKEN AUDIENCE ISSUER
Prints the verified claims as JSON; exits non-zero when the token does not verify.
"""

import json
import sys

import jwt

jwks_file, token, audience, issuer = sys.argv[1:5]
with open(jwks_file, encoding="utf-8") as f:
    key_set = jwt.PyJWKSet.from_dict(json.load(f))
kid = jwt.get_unverified_header(token)["kid"]
key = key_set[kid]
claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer)
print(json.dumps(claims))
