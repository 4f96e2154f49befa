"""The built-in user directory of a tenant, for clinics without an OpenID provider.

A user is a ``Practitioner`` of the tenant with a login name, the roles whose scopes their tokens carry
(:data:`fhir_server.security.scopes.ROLES`), an Argon2id password hash (RFC 9106, argon2-cffi's defaults:
OWASP ASVS V2.4.1) and optionally a TOTP second factor (RFC 6238, pyotp). Failed sign-ins are counted in
the user's record, in the tenant database, so a lock holds in every process: ``MAX_FAILURES`` failures
in a row lock the user for ``LOCK_SECONDS`` (ASVS V2.2.1); an administrator's password reset unlocks.
A password is checked with the same Argon2 work whether the user exists or not (no user enumeration by
timing). A TOTP code is accepted once (its time step is remembered: RFC 6238 §5.2).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import orjson
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fhir_server.security.scopes import ROLES
from fhir_server.storage.port import Engine, Record, TenantStore
from fhir_server.storage.query import FieldMatch, RecordQuery

COLLECTION = "auth.user"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
PRACTITIONER_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_FAILURES = 5
LOCK_SECONDS = 900
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # Argon2 hashes anything, but an unbounded input is unbounded work
_HASHER = PasswordHasher()  # Argon2id, RFC 9106 low-memory profile
_DECOY = _HASHER.hash("a decoy password nobody has")


class UserError(ValueError):
    """An operator asked for something the directory cannot do (unknown user, bad name, short password...)."""


class SignInRefused(Exception):
    """A sign-in that fails; ``reason`` is for the audit trail, the person sees one neutral message."""

    def __init__(self, reason: str, username: str, locked: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.username = username
        self.locked = locked


@dataclass(frozen=True, slots=True)
class User:
    username: str
    practitioner: str  # the Practitioner's id in the tenant
    roles: tuple[str, ...]
    password_hash: str
    active: bool = True
    totp_secret: str | None = None
    totp_last_step: int = 0
    failures: int = 0
    locked_until: float = 0.0
    sessions_not_before: float = 0.0  # sessions and refresh tokens created earlier are void (disable, reset)
    oidc_subject: str | None = None  # the ``sub`` of this person at the hospital's OpenID provider

    @property
    def fhir_user(self) -> str:
        return f"Practitioner/{self.practitioner}"


def check_password_rules(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def _password_ok(password_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash or _DECOY, password[:MAX_PASSWORD]) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


class UserDirectory:
    """Users of each tenant, kept as records of the tenant's store."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.now = clock

    async def _store(self, tenant: str) -> TenantStore:
        return await self.engine.tenant(tenant)

    async def get(self, tenant: str, username: str) -> User | None:
        if not USERNAME.match(username):
            return None
        record = await (await self._store(tenant)).get_record(COLLECTION, username)
        return _user(record.body) if record is not None else None

    async def every(self, tenant: str) -> list[User]:
        records = await (await self._store(tenant)).find_records(RecordQuery(COLLECTION))
        return [_user(r.body) for r in records]

    async def create(
        self,
        tenant: str,
        username: str,
        practitioner: str,
        roles: list[str],
        password: str | None,
        oidc_subject: str | None = None,
    ) -> User:
        """A new user; ``password`` None: one who signs in only through the OpenID provider (``oidc_subject``)."""
        if not USERNAME.match(username):
            raise UserError("a username is 1 to 64 lower-case letters, digits and . _ @ -")
        if not PRACTITIONER_ID.match(practitioner):
            raise UserError("the Practitioner id is 1 to 64 letters, digits, - and .")
        unknown = [r for r in roles if r not in ROLES]
        if unknown or not roles:
            raise UserError(f"roles must be some of {', '.join(ROLES)}; not {', '.join(unknown) or 'none'}")
        if password is None and not oidc_subject:
            raise UserError("a user needs a password or an OpenID provider subject to sign in with")
        if password is not None:
            check_password_rules(password)
        if oidc_subject is not None and (
            not 0 < len(oidc_subject) <= 255 or await self.by_subject(tenant, oidc_subject)
        ):
            raise UserError("the OpenID subject is empty, too long or another user's")
        if await self.get(tenant, username) is not None:
            raise UserError(f"the user {username} exists already")
        hashed = await asyncio.to_thread(_HASHER.hash, password) if password is not None else ""
        user = User(username, practitioner, tuple(roles), hashed, oidc_subject=oidc_subject)
        await self._put(tenant, user)
        return user

    async def _put(self, tenant: str, user: User) -> None:
        store = await self._store(tenant)
        async with store.transaction() as tx:
            fields: dict[str, tuple[str, ...]] = {"oidc_subject": (user.oidc_subject,)} if user.oidc_subject else {}
            await tx.put_record(Record(COLLECTION, user.username, orjson.dumps(asdict(user)), fields))

    async def by_subject(self, tenant: str, subject: str) -> User | None:
        """The user the OpenID provider's ``sub`` names."""
        query = RecordQuery(COLLECTION, (FieldMatch("oidc_subject", "eq", (subject,)),), limit=1)
        found = await (await self._store(tenant)).find_records(query)
        return _user(found[0].body) if found else None

    async def _existing(self, tenant: str, username: str) -> User:
        user = await self.get(tenant, username)
        if user is None:
            raise UserError(f"no user {username}")
        return user

    async def revoked(self, tenant: str, username: str, issued_at: int) -> bool:
        """Whether a token issued to the user at ``issued_at`` no longer holds (disabled, gone, password reset
        since; whole seconds, like ``iat``)."""
        user = await self.get(tenant, username)
        return user is None or not user.active or issued_at < int(user.sessions_not_before)

    async def set_active(self, tenant: str, username: str, active: bool) -> User:
        """Disable (ends the user's sessions and refresh tokens at once) or enable a user."""
        user = await self._existing(tenant, username)
        changed = replace(
            user, active=active, sessions_not_before=self.now() if not active else user.sessions_not_before
        )
        await self._put(tenant, changed)
        return changed

    async def reset_password(self, tenant: str, username: str, password: str) -> User:
        """An administrator's reset: the new password, the lock lifted, every earlier session ended."""
        check_password_rules(password)
        user = await self._existing(tenant, username)
        hashed = await asyncio.to_thread(_HASHER.hash, password)
        changed = replace(user, password_hash=hashed, failures=0, locked_until=0.0, sessions_not_before=self.now())
        await self._put(tenant, changed)
        return changed

    async def set_totp(self, tenant: str, username: str, enabled: bool) -> tuple[User, str | None]:
        """Turn the TOTP second factor on (a new secret, returned to show once) or off."""
        user = await self._existing(tenant, username)
        secret = pyotp.random_base32() if enabled else None
        changed = replace(user, totp_secret=secret, totp_last_step=0)
        await self._put(tenant, changed)
        return changed, secret

    async def authenticate(self, tenant: str, username: str, password: str, code: str | None) -> User:
        """The user these credentials sign in, or :class:`SignInRefused` (the failure is counted)."""
        username = username.strip().lower()[:64]
        user = await self.get(tenant, username)
        if user is not None and user.locked_until > self.now():
            raise SignInRefused("the user is locked after repeated failures", username, locked=True)
        if not await asyncio.to_thread(_password_ok, user.password_hash if user else None, password):
            raise await self._failed(tenant, user, username, "wrong password or unknown user")
        assert user is not None
        if not user.active:
            raise SignInRefused("the user is disabled", username)
        step = 0
        if user.totp_secret:
            step = _totp_step(user.totp_secret, code or "", self.now())
            if step <= user.totp_last_step:
                raise await self._failed(tenant, user, username, "missing, wrong or reused one-time code")
        if user.failures or step:
            user = replace(user, failures=0, totp_last_step=step or user.totp_last_step)
            await self._put(tenant, user)
        return user

    async def _failed(self, tenant: str, user: User | None, username: str, reason: str) -> SignInRefused:
        if user is None:
            return SignInRefused(reason, username)
        failures = user.failures + 1
        locked = failures >= MAX_FAILURES
        changed = replace(
            user,
            failures=0 if locked else failures,
            locked_until=self.now() + LOCK_SECONDS if locked else user.locked_until,
        )
        await self._put(tenant, changed)
        return SignInRefused(reason + (f"; locked for {LOCK_SECONDS} s" if locked else ""), username, locked)


def _totp_step(secret: str, code: str, now: float) -> int:
    """The time step ``code`` is valid for (one step of clock drift either way, RFC 6238 §5.2), or 0."""
    totp = pyotp.TOTP(secret)
    code = code.strip().replace(" ", "")
    if not code.isdigit() or len(code) != totp.digits:
        return 0
    step = int(now) // totp.interval
    for candidate in (step, step - 1, step + 1):
        if totp.verify(code, for_time=candidate * totp.interval):
            return candidate
    return 0


def _user(body: bytes) -> User:
    data = orjson.loads(body)
    data["roles"] = tuple(data["roles"])
    return User(**data)
