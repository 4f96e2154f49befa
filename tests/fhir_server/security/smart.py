"""An external OpenID provider for tests: its JWKS on disk, and SMART access tokens it signs with any
scopes and launch patient (what a real EHR's authorization server would hand a SMART app)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISSUER = "https://idp.example"
AUDIENCE = "dermbridge"


class IdentityProvider:
    def __init__(self, directory: Path) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        self.jwks = directory / "idp.json"
        self.jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "idp", "alg": "ES256"}]}))

    @property
    def settings(self) -> dict[str, Any]:
        """The server settings that trust this provider."""
        return {"oidc_issuer": ISSUER, "oidc_jwks": str(self.jwks), "oidc_audience": AUDIENCE}

    def headers(
        self, scope: str, patient: str | None = None, tenant: str = "default", fhir_user: str | None = None
    ) -> dict[str, str]:
        """An Authorization header with a token of ``tenant`` carrying ``scope`` (and ``patient``, ``fhirUser``)."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "app", "tenant": tenant, "scope": scope,
                                  "iat": now, "exp": now + 600}  # fmt: skip
        if patient is not None:
            claims["patient"] = patient
        if fhir_user is not None:
            claims["fhirUser"] = fhir_user
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": "idp"})
        return {"Authorization": f"Bearer {token}"}
