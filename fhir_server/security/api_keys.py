"""Long-lived API keys of a client, for systems that cannot run an OAuth token refresher (a PACS,
Orthanc's DICOMweb plugin, a modality gateway).

A key belongs to one client and carries its own SMART scopes (scopes-and-launch-context.html), at most
what the client's roles allow; a key with ``patient/`` scopes names its patient, which is then the
launch patient of every request made with it. The key text is ``dbk_<key id>_<secret>``: the id finds
the record, the secret is checked against its scrypt hash (the hash of client secrets,
:func:`fhir_server.security.clients.hash_secret`); the clear text is shown once, at creation.
A key is a record of its tenant's store, read on every use, so revoking it takes effect at once,
in every process.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import orjson

from fhir_server.security.clients import Client, ClientError, hash_secret
from fhir_server.security.scopes import Scope, grant, role_scopes
from fhir_server.storage.port import Engine, Record
from fhir_server.storage.query import RecordQuery

COLLECTION = "auth.apikey"
KEY_PREFIX = "dbk_"
MAX_KEY_TEXT = 200
PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # a FHIR id (datatypes.html#id)


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    client_id: str
    tenant: str
    name: str
    scopes: tuple[str, ...]
    secret_hash: str
    created: str
    patient: str | None = None  # the launch patient of patient/ scopes
    revoked: str | None = None  # when it was revoked; a revoked key never works again

    @property
    def active(self) -> bool:
        return self.revoked is None


def split_key(text: str) -> tuple[str, str] | None:
    """The key id and secret of a presented key text, or None when it is not shaped like a key."""
    if not text.startswith(KEY_PREFIX) or len(text) > MAX_KEY_TEXT:
        return None
    key_id, underscore, secret = text[len(KEY_PREFIX) :].partition("_")
    return (key_id, secret) if underscore and key_id and secret else None


def key_scopes(client: Client, requested: str | None, patient: str | None) -> list[Scope]:
    """The scopes a new key of ``client`` gets: those requested (all the client's roles allow when none),
    each narrowed to the roles' scopes, where a ``system/`` or ``user/`` scope also allows the same
    ``patient/`` one (a narrower context). ``patient/`` scopes need ``patient`` and the other way round."""
    allowed = role_scopes(client.roles)
    widened = allowed + [Scope("patient", s.resource_type, s.permissions) for s in allowed]
    scopes = grant(requested, widened if requested else allowed)
    if not scopes:
        raise ClientError("none of the requested scopes is allowed to this client's roles")
    in_patient = any(s.context == "patient" for s in scopes)
    if in_patient and not patient:
        raise ClientError("patient/ scopes need the key's patient: --patient <Patient id>")
    if patient and not in_patient:
        raise ClientError("a key with a patient has patient/ scopes only")
    if patient and any(s.context != "patient" for s in scopes):
        raise ClientError("a patient's key has patient/ scopes only")
    return scopes


class ApiKeys:
    """The API keys of each tenant's clients."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def create(
        self, client: Client, name: str, scopes: str | None = None, patient: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new key of ``client`` and its clear text (shown once, stored only hashed)."""
        if not client.active:
            raise ClientError(f"{client.client_id} is disabled")
        if patient is not None and not PATIENT_ID.match(patient):
            raise ClientError("the patient is a Patient id (letters, digits, - and ., at most 64)")
        granted = key_scopes(client, scopes, patient)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        key = ApiKey(
            key_id=key_id,
            client_id=client.client_id,
            tenant=client.tenant,
            name=name,
            scopes=tuple(str(s) for s in granted),
            secret_hash=hash_secret(secret),
            created=_now(),
            patient=patient,
        )
        await self._put(key)
        return key, f"{KEY_PREFIX}{key_id}_{secret}"

    async def get(self, tenant: str, key_id: str) -> ApiKey | None:
        store = await self.engine.tenant(tenant)
        record = await store.get_record(COLLECTION, key_id)
        return _key(record.body) if record is not None else None

    async def list(self, tenant: str, client_id: str | None = None) -> list[ApiKey]:
        store = await self.engine.tenant(tenant)
        keys = [_key(r.body) for r in await store.find_records(RecordQuery(COLLECTION))]
        return [k for k in keys if client_id is None or k.client_id == client_id]

    async def revoke(self, tenant: str, key_id: str) -> ApiKey:
        """Revoke a key: its next use is refused (the record is read on every use)."""
        key = await self.get(tenant, key_id)
        if key is None:
            raise ClientError(f"no API key {key_id} in tenant {tenant}")
        revoked = key if key.revoked else replace(key, revoked=_now())
        await self._put(revoked)
        return revoked

    async def _put(self, key: ApiKey) -> None:
        store = await self.engine.tenant(key.tenant)
        async with store.transaction() as tx:
            await tx.put_record(Record(COLLECTION, key.key_id, orjson.dumps(asdict(key)), {"name": (key.name,)}))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _key(body: bytes) -> ApiKey:
    data = orjson.loads(body)
    data["scopes"] = tuple(data["scopes"])
    return ApiKey(**data)
