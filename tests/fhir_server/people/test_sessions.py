"""Users and sessions on a real SQLite engine, with a clock the test moves (no sleeping)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyotp
import pytest

from dermbridge.settings import Settings
from dermbridge.storage import open_engine
from fhir_server.people.sessions import COLLECTION, Sessions
from fhir_server.people.tickets import ticket_key
from fhir_server.people.users import LOCK_SECONDS, MAX_FAILURES, SignInRefused, UserDirectory

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def run(tmp_path: Path, body: object) -> None:
    async def main() -> None:
        engine = open_engine(Settings(data_dir=tmp_path))
        await engine.open()
        await engine.create_tenant("default")
        try:
            await body(engine)  # type: ignore[operator]
        finally:
            await engine.close()

    asyncio.run(main())


def test_a_session_expires_and_ends_when_the_user_is_disabled(tmp_path: Path) -> None:
    clock = Clock()

    async def body(engine: object) -> None:
        users = UserDirectory(engine, clock)  # type: ignore[arg-type]
        sessions = Sessions(engine, users, lifetime=600, clock=clock)  # type: ignore[arg-type]
        user = await users.create("default", "alice", "p1", ["clinician-reviewer"], PASSWORD)
        secret = await sessions.open("default", user)
        assert (await sessions.current(secret)) is not None
        clock.now += 601
        assert await sessions.current(secret) is None  # expired
        clock.now += 1
        again = await sessions.open("default", user)
        assert (await sessions.current(again)) is not None
        await users.set_active("default", "alice", False)
        assert await sessions.current(again) is None  # disabled: every session ends at once
        assert await sessions.current("default.forged") is None

    run(tmp_path, body)


def test_lockout_is_stored_and_lifted_by_a_reset(tmp_path: Path) -> None:
    clock = Clock()

    async def body(engine: object) -> None:
        users = UserDirectory(engine, clock)  # type: ignore[arg-type]
        await users.create("default", "bob", "p2", ["clinician-reviewer"], PASSWORD)
        for _ in range(MAX_FAILURES):
            with pytest.raises(SignInRefused):
                await users.authenticate("default", "bob", "wrong password!", None)
        other_process = UserDirectory(engine, clock)  # type: ignore[arg-type]
        with pytest.raises(SignInRefused) as refused:
            await other_process.authenticate("default", "bob", PASSWORD, None)
        assert refused.value.locked
        clock.now += LOCK_SECONDS + 1
        assert (await users.authenticate("default", "bob", PASSWORD, None)).username == "bob"
        for _ in range(MAX_FAILURES):
            with pytest.raises(SignInRefused):
                await users.authenticate("default", "bob", "wrong password!", None)
        await users.reset_password("default", "bob", "a brand new password")
        assert (await users.authenticate("default", "bob", "a brand new password", None)).username == "bob"

    run(tmp_path, body)


def test_totp_is_required_and_used_once(tmp_path: Path) -> None:
    clock = Clock()

    async def body(engine: object) -> None:
        users = UserDirectory(engine, clock)  # type: ignore[arg-type]
        await users.create("default", "carol", "p3", ["clinician-reviewer"], PASSWORD)
        _, secret = await users.set_totp("default", "carol", True)
        assert secret is not None
        code = pyotp.TOTP(secret).at(clock.now)
        with pytest.raises(SignInRefused):
            await users.authenticate("default", "carol", PASSWORD, None)
        with pytest.raises(SignInRefused):
            await users.authenticate("default", "carol", PASSWORD, "000000" if code != "000000" else "111111")
        assert (await users.authenticate("default", "carol", PASSWORD, code)).username == "carol"
        with pytest.raises(SignInRefused):  # the same code again (a replay)
            await users.authenticate("default", "carol", PASSWORD, code)
        clock.now += 30
        assert (await users.authenticate("default", "carol", PASSWORD, pyotp.TOTP(secret).at(clock.now))).username

    run(tmp_path, body)


def test_expired_tickets_are_deleted_as_new_ones_are_issued(tmp_path: Path) -> None:
    clock = Clock()

    async def body(engine: object) -> None:
        users = UserDirectory(engine, clock)  # type: ignore[arg-type]
        sessions = Sessions(engine, users, lifetime=600, clock=clock)  # type: ignore[arg-type]
        user = await users.create("default", "erin", "p5", ["clinician-reviewer"], PASSWORD)
        old = await sessions.open("default", user)
        live = await sessions.open("default", user)
        store = await engine.tenant("default")  # type: ignore[attr-defined]
        assert await store.get_record(COLLECTION, ticket_key(old)) is not None
        clock.now += 601
        await sessions.close(live)
        await sessions.open("default", user)
        assert await store.get_record(COLLECTION, ticket_key(old)) is None

    run(tmp_path, body)
