"""OAuth clients of a tenant: who may ask for tokens, with which roles and how they authenticate.

A client is kept as a record of its tenant's store (so it lives and dies with the tenant). Its id
is ``<tenant>.<random>``: the token endpoint finds the tenant from the id alone. Secrets are stored
as scrypt hashes only; SMART Backend Services clients register their public JWKS instead.
A secret is checked with the same scrypt work whether or not the client exists (RFC 6819 §5.1.4.2.3:
no answer, and no answer time, tells which client ids exist). Disabling a client revokes the tokens
it holds: ``tokens_not_before`` marks every token issued before as unusable, even after re-enabling.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from fhir_server.security.scopes import ROLES
from fhir_server.storage.port import Engine, Record, TenantUnknownError
from fhir_server.storage.query import RecordQuery

COLLECTION = "auth.client"
FHIR_USER = re.compile(r"^(Practitioner|PractitionerRole|Patient|RelatedPerson|Person)/[A-Za-z0-9\-.]{1,64}$")
REDIRECT_URI = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class ClientError(ValueError):
    """An operator asked for a client that cannot be made (unknown role, no credentials...)."""


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    tenant: str
    name: str
    roles: tuple[str, ...]
    secret_hash: str | None = None
    jwks: dict[str, Any] | None = None
    created: str = ""
    active: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    tokens_not_before: int = 0  # tokens issued (iat) before this Unix time are revoked
    basic_auth: bool = False  # may send its id and secret as HTTP Basic on every request (off by default)

    def check_secret(self, secret: str) -> bool:
        return secret_matches(self.secret_hash, secret)

    @property
    def public(self) -> bool:
        """A public app (RFC 6749 §2.1): no credentials, the authorization code bound by PKCE alone."""
        return self.secret_hash is None and self.jwks is None

    @property
    def first_party(self) -> bool:
        return bool(self.extra.get("first_party"))

    def revokes(self, issued_at: int) -> bool:
        """Whether a token this client got at ``issued_at`` may no longer be used."""
        return not self.active or issued_at < self.tokens_not_before


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    return f"{salt.hex()}${hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT).hex()}"


_DECOY_HASH = hash_secret(secrets.token_urlsafe(32))  # same cost parameters as every real hash


def secret_matches(secret_hash: str | None, secret: str) -> bool:
    """The scrypt check, run in full even when there is no hash to match (against a decoy)."""
    salt_hex, digest_hex = (secret_hash or _DECOY_HASH).split("$", 1)
    digest = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt_hex), dklen=32, **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex) and secret_hash is not None


async def verify_secret(client: Client | None, secret: str) -> bool:
    """Whether ``secret`` authenticates ``client`` (an active one with a secret), at the same cost
    for an unknown, disabled or secret-less client; off the event loop (scrypt takes tens of ms)."""
    secret_hash = client.secret_hash if client is not None and client.active else None
    return await asyncio.to_thread(secret_matches, secret_hash, secret)


def tenant_of(client_id: str) -> str | None:
    tenant, dot, rest = client_id.partition(".")
    return tenant if dot and rest else None


class ClientRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def create(
        self,
        tenant: str,
        name: str,
        roles: list[str] | tuple[str, ...],
        *,
        secret: bool = True,
        jwks: dict[str, Any] | None = None,
        fhir_user: str | None = None,
        redirect_uris: list[str] | None = None,
        first_party: bool = False,
    ) -> tuple[Client, str | None]:
        """A new client and its secret (shown once, never stored in clear); ``fhir_user`` (``Practitioner/1``)
        is the user it acts for, carried as its tokens' ``fhirUser`` claim. ``redirect_uris`` make it a SMART
        App Launch app (authorization code); one with neither secret nor JWKS is then a public client (PKCE
        only); a ``first_party`` app (the hospital's own) skips the consent screen."""
        unknown = [r for r in roles if r not in ROLES]
        if unknown or not roles:
            raise ClientError(f"roles must be some of {', '.join(ROLES)}; not {', '.join(unknown) or 'none'}")
        if not secret and not jwks and not redirect_uris:
            raise ClientError("a client needs a secret or a JWKS to authenticate with (or redirect URIs: a public app)")
        bad = [u for u in redirect_uris or [] if not REDIRECT_URI.match(u) or "#" in u]
        if bad:
            raise ClientError(f"redirect URIs are absolute http(s) URIs without a fragment, not {bad[0]!r}")
        if jwks is not None and not (isinstance(jwks.get("keys"), list) and jwks["keys"]):
            raise ClientError("the JWKS must hold a non-empty 'keys' list")
        if fhir_user is not None and not FHIR_USER.match(fhir_user):
            raise ClientError("fhirUser is a reference such as Practitioner/123")
        store = await self.engine.tenant(tenant)
        plain = secrets.token_urlsafe(32) if secret else None
        client = Client(
            client_id=f"{tenant}.{secrets.token_hex(8)}",
            tenant=tenant,
            name=name,
            roles=tuple(roles),
            secret_hash=hash_secret(plain) if plain else None,
            jwks=jwks,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            extra=({"fhirUser": fhir_user} if fhir_user else {})
            | ({"redirect_uris": list(redirect_uris), "first_party": first_party} if redirect_uris else {}),
        )
        async with store.transaction() as tx:
            await tx.put_record(_record(client))
        return client, plain

    async def get(self, client_id: str) -> Client | None:
        tenant = tenant_of(client_id)
        if tenant is None:
            return None
        try:
            store = await self.engine.tenant(tenant)
        except (TenantUnknownError, ValueError):
            return None
        record = await store.get_record(COLLECTION, client_id)
        return _client(record.body) if record is not None else None

    async def list(self, tenant: str) -> list[Client]:
        store = await self.engine.tenant(tenant)
        return [_client(r.body) for r in await store.find_records(RecordQuery(COLLECTION))]

    async def set_active(self, client_id: str, active: bool) -> Client:
        """Enable or disable a client; disabling revokes every token it was issued until now."""
        client = await self.get(client_id)
        if client is None:
            raise ClientError(f"no client {client_id}")
        changes: dict[str, Any] = {"active": active}
        if not active:  # iat has whole seconds: a token of this very second is revoked too
            changes["tokens_not_before"] = int(time.time()) + 1
        return await self._change(client, changes)

    async def set_basic_auth(self, client_id: str, allowed: bool) -> Client:
        """Allow or forbid HTTP Basic with the client's id and secret on FHIR and DICOMweb requests
        (:mod:`fhir_server.security.standing`); read on every request, so forbidding it holds at once."""
        client = await self.get(client_id)
        if client is None:
            raise ClientError(f"no client {client_id}")
        if allowed and client.secret_hash is None:
            raise ClientError(f"{client_id} has no secret to send as HTTP Basic")
        return await self._change(client, {"basic_auth": allowed})

    async def _change(self, client: Client, changes: dict[str, Any]) -> Client:
        changed = Client(**{**asdict(client), **changes})
        store = await self.engine.tenant(client.tenant)
        async with store.transaction() as tx:
            await tx.put_record(_record(changed))
        return changed


def _record(client: Client) -> Record:
    return Record(COLLECTION, client.client_id, orjson.dumps(asdict(client)), {"name": (client.name,)})


def _client(body: bytes) -> Client:
    data = orjson.loads(body)
    data["roles"] = tuple(data["roles"])
    return Client(**data)
