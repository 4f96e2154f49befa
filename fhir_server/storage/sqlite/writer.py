"""One database file's writing side: its connection, the thread it runs on, its lock, group commits.

SQLite allows one writer per file, so each file a tenant store writes (its database, its audit
staging log) has one ``SerialWriter``: every write runs on its thread, and transactions that
only write join a group commit, many units in one transaction and one fsync.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fhir_server.storage.sqlite.schema import connect

T = TypeVar("T")
Unit = list[tuple[Callable[..., Any], tuple[Any, ...]]]


Batch = Callable[[sqlite3.Connection, list[Any]], list[BaseException | None]]


class SerialWriter:
    """``batch`` runs a group commit's items in one transaction, an outcome per item (``run_group``);
    ``on_group`` is told of each committed group's items."""

    def __init__(self, path: Path, thread_name: str, on_group: Callable[[list[Any]], None] | None = None,
                 batch: Batch | None = None) -> None:  # fmt: skip
        self.conn = connect(str(path))
        self._batch: Batch = batch or run_group
        self.lock = asyncio.Lock()  # held by a transaction (or a group) from its first statement to its end
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=thread_name)
        self._on_group = on_group
        self._group: list[tuple[Any, asyncio.Future[None]]] = []
        self._leader: asyncio.Future[None] | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on the writer thread (the caller holds ``lock`` when it writes)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, fn, self.conn, *args)

    async def locked(self, fn: Callable[..., T], *args: Any) -> T:
        async with self.lock:
            return await self.run(fn, *args)

    async def group_commit(self, unit: Any) -> None:
        """Join the next group commit; returns once the unit is durable (or raises its error).

        A unit is what ``batch`` takes: with ``run_group``, a list of (op, args) run in a savepoint."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._group.append((unit, future))
        if len(self._group) == 1:
            self._leader = asyncio.ensure_future(self._lead_group())
        await future

    async def _lead_group(self) -> None:
        async with self.lock:
            group, self._group = self._group, []
            try:
                outcomes = await self.run(self._batch, [unit for unit, _ in group])
            except BaseException as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                return
        if self._on_group is not None:
            self._on_group([unit for unit, _ in group])
        for (_, future), error in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def close(self) -> None:
        self._thread.submit(self.conn.close).result()
        self._thread.shutdown()


def run_group(conn: sqlite3.Connection, units: list[Unit]) -> list[BaseException | None]:
    """Run write-only units in one transaction (one fsync), each in its own savepoint."""
    outcomes: list[BaseException | None] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for unit in units:
            conn.execute("SAVEPOINT unit")
            try:
                for op, op_args in unit:
                    op(conn, *op_args)
            except Exception as exc:
                conn.execute("ROLLBACK TO unit")
                outcomes.append(exc)
            else:
                outcomes.append(None)
            conn.execute("RELEASE unit")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return outcomes


def execute(conn: sqlite3.Connection, sql: str) -> None:
    conn.execute(sql)


def in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def undurable(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """``in_transaction`` without waiting for the disk, for rows that can be derived again.

    With WAL and ``synchronous = NORMAL`` the commit is atomic but not fsynced: a crash may undo
    it, whole, and the next durable commit (the WAL is one file) makes it durable too. Used for
    the AuditEvents' index rows: their ``indexed`` mark commits with them, so an undone
    transaction leaves its events pending, indexed again at the next flush."""
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        return in_transaction(conn, fn, *args)
    finally:
        conn.execute("PRAGMA synchronous = FULL")
