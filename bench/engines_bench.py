"""SQLite against PostgreSQL, side by side in one run (issue 16, "Figures"): the same FHIR workload on two
servers in secure mode, one per engine, started together and measured phase by phase in turn.

    python bench/engines_bench.py                                  # 100,000 preloaded, 8 then 32 clients
    python bench/engines_bench.py --preload 20000 --ops 1000 --clients 8

For each engine: bundle ingest (the preload: batch Bundles of 500, resources/s), then at each client count
create, read, update and the searches of ``fhir_bench.py``; the ratio table reads SQLite / PostgreSQL.
PostgreSQL is a throw-away server from Debian's binaries (``tests/postgres.py``; its ``fsync`` is off, so the
PostgreSQL figures are an upper bound next to a production server's). Everything runs on loopback, every loop
is bounded by a count and a deadline. A bench, never a timed test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fhir_bench import MODES, Workload, interleaved, preload, ratios, spawned, table
from tests.postgres import throwaway_postgres

ENGINES = ("sqlite", "postgresql")


async def ingest(label: str, base: str, auth: dict[str, str], total: int) -> tuple[list[str], dict[str, Any]]:
    """The preload through batch Bundles, timed: the Patients' ids and the ingest row (resources/s)."""
    started = time.monotonic()
    async with httpx2.AsyncClient(timeout=300, headers=auth) as client:
        patient_ids = await preload(client, base, total) if total else []
    seconds = time.monotonic() - started
    row = {"phase": f"bundle ingest ({label})", "resources": total, "seconds": round(seconds, 1),
           "resources_per_s": round(total / seconds, 1) if seconds and total else 0.0}  # fmt: skip
    return patient_ids, row


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, throwaway_postgres() as postgres, contextlib.ExitStack() as stack:
        storages = {"sqlite": {}, "postgresql": {"DERMBRIDGE_STORAGE": postgres.create_database()}}
        servers = {engine: stack.enter_context(spawned(Path(tmp) / engine, {**MODES["secure"], **storages[engine]},
                                                       None)) for engine in ENGINES}  # fmt: skip
        ingested = {engine: await ingest(engine, s.base, s.headers, args.preload) for engine, s in servers.items()}
        pids = [server.process.pid for server in servers.values()]
        report: dict[str, Any] = {"preload": args.preload, "cpus": os.cpu_count(), "ingest": [], "runs": {}}
        for _, row in ingested.values():
            report["ingest"].append(row)
            print(f"| {row['phase']} | {row['resources']:,} | {row['seconds']} s | {row['resources_per_s']:,} res/s |")
        for clients in args.clients:
            workloads = [Workload(engine, server.base, server.headers, clients, ingested[engine][0] or ["none"])
                         for engine, server in servers.items()]  # fmt: skip
            rows = await interleaved(workloads, args.ops, pids)
            print(f"\n### {clients} clients\n")
            print(table(rows, {}))
            print(ratios(rows, list(ENGINES)))
            report["runs"][str(clients)] = rows
        print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32], help="concurrent clients, one run each")
    parser.add_argument("--ops", type=int, default=2000, help="operations per phase (fewer for updates/searches)")
    parser.add_argument("--preload", type=int, default=100_000, help="resources loaded (and timed) before measuring")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
