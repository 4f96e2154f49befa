"""Access tokens: signed JWTs (EdDSA, Ed25519) minted by this server, and their verification,
including tokens of an external OpenID provider when one is configured (RFC 9068 in spirit). ID tokens
for people are signed RS256 with the server's RSA key, which SMART App Launch 2.x requires servers to
support (scopes-and-launch-context.html#scopes-for-requesting-identity-data); both keys are in the JWKS.

Claims: ``iss`` this server, ``aud`` the tenant's FHIR base, ``sub`` and ``client_id`` the client,
``tenant``, ``scope`` (space separated), ``roles``, ``iat``/``nbf``/``exp`` and a ``jti``; ``fhirUser``
(SMART App Launch 2.x, scopes-and-launch-context.html#fhiruser) when the client acts for a registered user.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from fhir_server.security.keyfile import read_or_create, read_or_create_secret
from fhir_server.security.scopes import Access, Scope, parse_scopes

LEEWAY_SECONDS = 30
MAX_REMEMBERED = 10_000
RSA_BITS = 3072  # NIST SP 800-57 Pt. 1 Rev. 5 Table 2: 128-bit security
EXTERNAL_ALGORITHMS = ["ES256", "ES384", "RS256", "RS384", "PS256", "PS384", "EdDSA"]


class TokenRejected(Exception):
    """The bearer token cannot be used: answered 401 with the reason (never the token itself)."""


class WrongTenant(Exception):
    """A valid token of another tenant: answered like an unknown tenant (404), with no hint."""


@dataclass(frozen=True, slots=True)
class TokenSigner:
    """Access tokens EdDSA (``private``), ID tokens RS256 (``id_private``); each key named by its thumbprint."""

    key_id: str
    private: ed25519.Ed25519PrivateKey
    id_key_id: str
    id_private: rsa.RSAPrivateKey

    def public_jwks(self) -> list[dict[str, Any]]:
        ed: dict[str, Any] = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        rs: dict[str, Any] = RSAAlgorithm.to_jwk(self.id_private.public_key(), as_dict=True)
        return [
            {**ed, "kid": self.key_id, "use": "sig", "alg": "EdDSA"},
            {**rs, "kid": self.id_key_id, "use": "sig", "alg": "RS256"},
        ]

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers={"kid": self.key_id})

    def sign_id_token(self, claims: dict[str, Any]) -> str:
        """An OpenID Connect ID token, RS256 (OpenID Connect Core §2, §15.1: every OP supports RS256)."""
        return jwt.encode(claims, self.id_private, algorithm="RS256", headers={"kid": self.id_key_id})


def _thumbprint(members: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint of the required members."""
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return jwt.utils.base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode()


def _new_rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    pem = serialization.Encoding.PEM
    return key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_token_signer(directory: Path) -> TokenSigner:
    """The server's signing keys in ``directory`` (created owner-only on first start, shared by every
    process on that data directory: :mod:`fhir_server.security.keyfile`)."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(read_or_create_secret(directory / "token-ed25519.key", 32))
    x = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)["x"]
    id_private = serialization.load_pem_private_key(read_or_create(directory / "id-token-rsa.pem", _new_rsa_pem), None)
    if not isinstance(id_private, rsa.RSAPrivateKey):
        raise ValueError(f"{directory / 'id-token-rsa.pem'} does not hold an RSA private key")
    rs = RSAAlgorithm.to_jwk(id_private.public_key(), as_dict=True)
    return TokenSigner(
        _thumbprint({"crv": "Ed25519", "kty": "OKP", "x": x}),
        private,
        _thumbprint({"e": rs["e"], "kty": "RSA", "n": rs["n"]}),
        id_private,
    )


@dataclass(frozen=True, slots=True)
class ExternalProvider:
    """An OpenID provider whose access tokens are accepted: its issuer, keys and claim names."""

    issuer: str
    jwks: str  # a JWKS file path or an https:// URL
    audience: str
    tenant_claim: str = "tenant"
    max_lifetime: int = 86400  # seconds from iat (or from now) to exp

    def key_for(self, token: str) -> Any:
        if self.jwks.startswith(("http://", "https://")):
            return _jwks_client(self.jwks).get_signing_key_from_jwt(token).key
        keys = jwt.PyJWKSet.from_dict(json.loads(Path(self.jwks).read_text()))
        kid = jwt.get_unverified_header(token).get("kid")
        for key in keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise TokenRejected("the token's key is not among the provider's keys")


def _check_lifetime(claims: dict[str, Any], max_lifetime: int) -> None:
    """A provider token may live at most ``max_lifetime`` seconds (exp - iat, and exp - now): a leaked
    token that lives for years is a standing credential (RFC 9068 §5 leaves the lifetime to the
    provider; RFC 6819 §5.1.5.3 advises short-lived tokens). ``exp`` and ``iat`` are NumericDates
    (RFC 7519 §2) that PyJWT has already checked to be numbers."""
    lifetime = float(claims["exp"]) - min(float(claims["iat"]), time.time())
    if lifetime > max_lifetime + LEEWAY_SECONDS:
        raise TokenRejected(
            f"the access token lives {int(lifetime)} s, longer than the {max_lifetime} s this server accepts"
            " from its OpenID provider (DERMBRIDGE_OIDC_MAX_TOKEN_LIFETIME_SECONDS)"
        )


_JWKS_CLIENTS: dict[str, jwt.PyJWKClient] = {}


def _jwks_client(url: str) -> jwt.PyJWKClient:
    if url not in _JWKS_CLIENTS:
        _JWKS_CLIENTS[url] = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)
    return _JWKS_CLIENTS[url]


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified bearer token: its Access and, for a token this server issued, the client and
    issue time, whose current state still decides whether the token holds (revocation)."""

    access: Access
    expires: float
    client_id: str | None = None
    issued_at: int = 0
    user: str | None = None  # a signed-in person's username (``fhir_server.people``), whose state also decides


class TokenService:
    """Mints this server's access tokens and turns a bearer token into an :class:`Access`."""

    def __init__(
        self, signer: TokenSigner, issuer: str, lifetime: int = 300, external: ExternalProvider | None = None
    ) -> None:
        self.signer = signer
        self.issuer = issuer.rstrip("/")
        self.lifetime = lifetime
        self.external = external
        self._verified: dict[str, Verified] = {}  # verify a token once, until it expires

    def audience(self, tenant: str) -> str:
        return f"{self.issuer}/fhir/{tenant}"

    def jwks(self) -> dict[str, Any]:
        return {"keys": self.signer.public_jwks()}

    def mint(
        self,
        *,
        tenant: str,
        client_id: str,
        scopes: list[Scope],
        roles: tuple[str, ...],
        fhir_user: str | None = None,
        user: str | None = None,
        patient: str | None = None,
    ) -> tuple[str, int]:
        """A signed access token; ``user`` (a username of the built-in directory) is checked on every use;
        ``patient``: the launch context patient its ``patient/`` scopes are bounded to (SMART App Launch 2.x
        scopes-and-launch-context.html#launch-context-arriving-with-the-token)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience(tenant),
            "sub": client_id,
            "client_id": client_id,
            "tenant": tenant,
            "scope": " ".join(str(s) for s in scopes),
            "roles": list(roles),
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        if fhir_user:
            claims["fhirUser"] = fhir_user
        if user:
            claims["user"] = user
        if patient:
            claims["patient"] = patient
        return self.signer.sign(claims), self.lifetime

    def verify(self, token: str, tenant: str) -> Access:
        """The Access of a bearer token used on ``tenant``; TokenRejected or WrongTenant otherwise."""
        return self.verified(token, tenant).access

    def verified(self, token: str, tenant: str) -> Verified:
        """:meth:`verify` with the issuing client, for the revocation check.

        A token verified once is remembered until it expires: the signature check is not repeated
        for every request a client sends with it."""
        known = self._verified.get(token)
        if known is None or known.expires <= time.time():
            known = self._verify(token)
            if len(self._verified) >= MAX_REMEMBERED:
                now = time.time()
                self._verified = {k: v for k, v in self._verified.items() if v.expires > now}
                if len(self._verified) >= MAX_REMEMBERED:
                    self._verified.clear()
            self._verified[token] = known
        if known.access.tenant != tenant:
            raise WrongTenant(known.access.tenant)
        return known

    def _verify(self, token: str) -> Verified:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenRejected("the access token is not a well-formed JWT") from exc
        if unverified.get("iss") == self.issuer:
            return self._verify_own(token)
        if self.external is not None and unverified.get("iss") == self.external.issuer:
            return self._verify_external(token, self.external)
        raise TokenRejected("the access token was not issued by a trusted issuer")

    def _verify_own(self, token: str) -> Verified:
        try:
            claims = jwt.decode(
                token,
                self.signer.private.public_key(),
                algorithms=["EdDSA"],
                issuer=self.issuer,
                options={"require": ["exp", "iat", "aud", "tenant", "sub"], "verify_aud": False},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"the access token is not valid: {exc}") from exc
        if claims["aud"] != self.audience(str(claims["tenant"])):
            raise TokenRejected("the access token is meant for another audience")
        access = Access(
            tenant=str(claims["tenant"]),
            subject=str(claims["sub"]),
            scopes=tuple(parse_scopes(str(claims.get("scope", "")))),
            roles=tuple(claims.get("roles") or ()),
            fhir_user=_fhir_user(claims),
            patient=str(claims["patient"]) if claims.get("patient") else None,
        )
        client_id = str(claims.get("client_id") or claims["sub"])
        user = claims.get("user")
        return Verified(
            access,
            float(claims["exp"]) + LEEWAY_SECONDS,
            client_id,
            int(claims["iat"]),
            str(user) if isinstance(user, str) else None,
        )

    def _verify_external(self, token: str, provider: ExternalProvider) -> Verified:
        try:
            claims = jwt.decode(
                token,
                provider.key_for(token),
                algorithms=EXTERNAL_ALGORITHMS,
                issuer=provider.issuer,
                audience=provider.audience,
                options={"require": ["exp", "iat", "sub"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the access token has expired") from exc
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            raise TokenRejected(f"the access token is not valid: {exc}") from exc
        _check_lifetime(claims, provider.max_lifetime)
        scope = claims.get("scope", claims.get("scp", ""))
        text = " ".join(scope) if isinstance(scope, list) else str(scope)
        patient = claims.get("patient")
        access = Access(
            tenant=str(claims.get(provider.tenant_claim)),
            subject=str(claims["sub"]),
            scopes=tuple(parse_scopes(text)),
            patient=str(patient) if patient else None,
            issuer=provider.issuer,
            fhir_user=_fhir_user(claims),
        )
        return Verified(access, float(claims["exp"]) + LEEWAY_SECONDS)


def _fhir_user(claims: dict[str, Any]) -> str | None:
    value = claims.get("fhirUser")
    return value[:1000] if isinstance(value, str) and value else None
