"""Single-client latency and database round trips per operation, SQLite vs PostgreSQL, in-process.

    python bench/pg_latency.py                 # both engines, 20 of each operation
    python bench/pg_latency.py --engine postgresql --n 10 --statements   # and list each statement

One app per engine, built as the tests build it (secure mode, a DICOM listener on a free loopback port),
on a throw-away PostgreSQL cluster (``tests/postgres.py``: fsync off). One client, one request at a time:
a C-STORE through pynetdicom's SCU (a new association each, as a modality sends one study), a FHIR create,
read and update. For PostgreSQL every statement asyncpg sends (``Connection._execute`` and friends) is
counted and timed, with the time spent waiting for a pool connection; background work (outbox
consumers, audit settling) running during the request is counted too, separately by task. Not a
benchmark: a profile to find waits, one client on whatever machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import asyncpg.pool
from pynetdicom import AE

from tests.dicom_factories import dermoscopic
from tests.dicom_node.conftest import running_node
from tests.postgres import throwaway_postgres

BASE = "/fhir/default"


@dataclass
class Tally:
    """Statements (round trips) and their time, and pool waits, while ``active``."""

    active: bool = False
    statements: int = 0
    statement_s: float = 0.0
    acquire_s: float = 0.0
    acquires: int = 0
    texts: Counter[str] = field(default_factory=Counter)
    text_s: Counter[str] = field(default_factory=Counter)  # microseconds
    by_task: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.statements, self.statement_s, self.acquire_s, self.acquires = 0, 0.0, 0.0, 0
        self.texts.clear()
        self.text_s.clear()
        self.by_task.clear()


TALLY = Tally()


def _task_name() -> str:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return "-"
    coro = task.get_coro() if task is not None else None
    return getattr(coro, "__qualname__", "-")


def _wrap(name: str, text_of: Callable[[tuple[Any, ...]], str]) -> None:
    original = getattr(asyncpg.connection.Connection, name)

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            if TALLY.active:
                TALLY.statements += 1
                TALLY.statement_s += time.perf_counter() - started
                text = f"{_task_name()[:24]:24} " + " ".join(text_of(args).split())[:90]
                TALLY.texts[text] += 1
                TALLY.text_s[text] += round((time.perf_counter() - started) * 1e6)
                TALLY.by_task[_task_name()] += 1

    setattr(asyncpg.connection.Connection, name, counted)


def instrument() -> None:
    """Count every statement: the public methods of ``asyncpg.Connection`` (each one round trip;
    ``executemany`` one pipelined batch) and the transaction's BEGIN/COMMIT (sent by ``execute``)."""
    for name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "copy_records_to_table"):
        _wrap(name, lambda args: str(args[0]) if args else "?")
    original_acquire = asyncpg.pool.Pool._acquire

    async def acquire(self: Any, timeout: Any) -> Any:  # noqa: ASYNC109  # asyncpg's own signature
        started = time.perf_counter()
        try:
            return await original_acquire(self, timeout)
        finally:
            if TALLY.active:
                TALLY.acquires += 1
                TALLY.acquire_s += time.perf_counter() - started

    asyncpg.pool.Pool._acquire = acquire


@contextmanager
def measuring() -> Iterator[None]:
    TALLY.reset()
    TALLY.active = True
    try:
        yield
    finally:
        TALLY.active = False


def c_store(port: int, n: int) -> None:
    ae = AE(ae_title="PYNETDICOM")
    ds = dermoscopic(patient_id=f"LAT{n % 3}", accession=f"ACC{n}", seed=n)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0, status


def run_engine(label: str, settings: dict[str, Any], n: int, show: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_node(Path(tmp), **settings) as node:
        client = node.client
        made: list[dict[str, Any]] = []
        patient = client.post(f"{BASE}/Patient", json={"resourceType": "Patient"}).json()["id"]

        def create(i: int) -> None:
            body = {"resourceType": "Observation", "status": "preliminary",
                    "subject": {"reference": f"Patient/{patient}"},
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "372244006"}]}}  # fmt: skip
            response = client.post(f"{BASE}/Observation", json=body)
            assert response.status_code == 201, response.text
            made.append(response.json())

        def read(i: int) -> None:
            assert client.get(f"{BASE}/Observation/{made[i % len(made)]['id']}").status_code == 200

        def update(i: int) -> None:
            body = dict(made[i % len(made)])
            body["status"] = "final" if body["status"] != "final" else "amended"
            response = client.put(f"{BASE}/Observation/{body['id']}", json=body)
            assert response.status_code == 200, response.text
            made[i % len(made)] = response.json()

        ops: list[tuple[str, Callable[[int], None]]] = [
            ("C-STORE", lambda i: c_store(node.port, i)), ("create", create), ("read", read), ("update", update)
        ]  # fmt: skip
        for name, op in ops:
            for i in range(3):  # warm caches, pools, prepared statements
                op(1000 + i)
            time.sleep(2.0)  # let the warm-up's background work finish (a profile, not a test)
            walls, statements, waits, acquires = [], [], [], []
            texts: Counter[str] = Counter()
            text_s: Counter[str] = Counter()
            tasks: Counter[str] = Counter()
            for i in range(n):
                with measuring():
                    started = time.perf_counter()
                    op(i)
                    walls.append(time.perf_counter() - started)
                statements.append(TALLY.statements)
                waits.append(TALLY.statement_s)
                acquires.append(TALLY.acquire_s)
                texts.update(TALLY.texts)
                text_s.update(TALLY.text_s)
                tasks.update(TALLY.by_task)
            line = f"{label:10} {name:8} median {statistics.median(walls) * 1000:7.1f} ms"
            if "storage" in settings:
                waited = statistics.median(acquires) * 1000
                line += (f"  statements {statistics.mean(statements):5.1f}/op  in statements "
                         f"{statistics.median(waits) * 1000:6.1f} ms  pool waits {waited:5.1f} ms")  # fmt: skip
            print(line, flush=True)
            if show:
                for text, spent in text_s.most_common(25):
                    print(f"      {texts[text] / n:5.2f} {spent / 1000 / n:6.1f} ms  {text}")
                for task, count in tasks.most_common(8):
                    print(f"      task {count / n:5.2f}  {task}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="requests per operation")
    parser.add_argument("--engine", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--statements", action="store_true", help="list the statements per operation")
    args = parser.parse_args()
    instrument()
    if args.engine in ("both", "sqlite"):
        run_engine("sqlite", {}, args.n, False)
    if args.engine in ("both", "postgresql"):
        with throwaway_postgres() as server:
            run_engine("postgresql", {"storage": server.create_database()}, args.n, args.statements)


if __name__ == "__main__":
    main()
