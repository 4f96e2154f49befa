"""SQLite against PostgreSQL, side by side in one run (issue 16, "Figures"), in secure mode (tokens, audit,
encryption):

    python bench/engines_bench.py                          # the figures: 100,000 preloaded, 8 then 32 clients
    python bench/engines_bench.py --preload 300 --ops 60   # a smoke run (a minute or two)

1. Bundle ingest on each engine, resources/s: the Synthea sample (``tests/data/synthea``) as transaction Bundles
   of 400 PUTs (the tenant accepting unknown profile claims, as the tests load it), then the preload as batch
   Bundles of 500 (Patients, DiagnosticReports, Observations 1:1:3).
2. The FHIR workload of ``fhir_bench.py`` (create, read, update, three searches) on the two servers, one process
   each, phase by phase in turn, at each client count; the ratio table reads PostgreSQL / SQLite.
3. Scale-out on the same PostgreSQL database: two ``serve --role api`` processes and one ``--role audit``, and
   two HAProxy instances in front of them: one sending to the first API process only, one to both. The same
   workload through each in turn; the ratio table reads 2 APIs / 1 API.

For every phase, the CPU each process group used per request (``/proc``: the servers with their children, every
process of the PostgreSQL cluster, HAProxy, and this client), and for the scale-out a model of what N cores
would give. PostgreSQL is a throw-away cluster from Debian's binaries (``tests/postgres.py``; ``fsync`` off, so
its figures are an upper bound next to a production server's). Everything runs on loopback; every loop is bounded
by a count and a deadline. A bench, never a timed test: run it on a quiet machine (``make bench-engines``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engines_report import cpu_table, ingest_table, model, model_table
from bench.fhir_bench import MODES, Workload, interleaved, preload, ratios, spawned, table
from bench.processes import cpu_by_group, settle
from tests.factories import put_entry, set_enforcement, synthea_resources, transaction
from tests.haproxy import haproxy
from tests.postgres import ThrowawayPostgres, throwaway_postgres
from tests.server import create_client, fetch_token, free_port, running_server

# as shipped, but one token lasts the whole run (a phase can outlast the default 5 minutes)
SECURE = {**MODES["secure"], "DERMBRIDGE_AUTH_TOKEN_LIFETIME_SECONDS": "86400"}
ENGINES = ("postgresql", "sqlite")  # the first is the numerator of the ratios
SYNTHEA_CHUNK = 400
SYNTHEA_RESOURCES = 7_160  # tests/data/synthea, for the estimate only
LOAD_DEADLINE_S = 1800.0
START_BOUND_S = 300.0  # a bound on a condition: servers importing torch on two busy cores
Cpu = Callable[[], dict[str, float]]


async def load_synthea(client: httpx2.AsyncClient, base: str) -> tuple[int, list[str]]:
    """The Synthea sample as transaction Bundles of PUTs, referenced resources first (``SYNTHEA_ORDER``)."""
    count, batch, started = 0, [], time.monotonic()
    for resource in [*synthea_resources(), None]:
        if resource is not None:
            batch.append(put_entry(resource))
        if batch and (resource is None or len(batch) == SYNTHEA_CHUNK):
            response = await client.post(base, json=transaction(batch), headers={"Prefer": "return=minimal"})
            if response.status_code != 200:
                raise RuntimeError(f"a Synthea transaction failed: {response.status_code} {response.text[:2000]}")
            count, batch = count + len(batch), []
            if time.monotonic() - started > LOAD_DEADLINE_S:
                raise TimeoutError("the Synthea load took too long")
    return count, []


async def load_preload(client: httpx2.AsyncClient, base: str, total: int) -> tuple[int, list[str]]:
    return total, await preload(client, base, total) if total else []


async def ingest(
    engine: str,
    load: str,
    server: Any,
    cpu: Cpu,
    settle_pids: list[int],
    run: Callable[[httpx2.AsyncClient, str], Awaitable[Any]],
) -> tuple[dict[str, Any], list[str]]:
    """One timed load through one client, the processes idle before: the ingest row (resources/s, and the CPU per
    resource until they are idle again, deferred work included) and the ids it made."""
    await asyncio.to_thread(settle, settle_pids)
    before, started = cpu(), time.monotonic()
    async with httpx2.AsyncClient(timeout=300, headers=server.headers) as client:
        count, ids = await run(client, server.base)
    seconds = time.monotonic() - started
    await asyncio.to_thread(settle, settle_pids)
    after = cpu()
    per = {g: 1000 * (after[g] - before[g]) / count if count else 0.0 for g in after}
    row = {"engine": engine, "load": load, "resources": count, "seconds": seconds,
           "resources_per_s": count / seconds if seconds else 0.0, "cpu_ms_per_resource": per}  # fmt: skip
    print(f"  {engine}, {load}: {count:,} resources in {seconds:.1f} s", file=sys.stderr)
    return row, ids


def accept_unknown_profiles(server: Any) -> None:
    """Synthea claims US Core profiles the server does not hold: accept such claims (tests/conftest.py does)."""
    with httpx2.Client(base_url=server.root, headers=server.headers, timeout=60) as client:
        set_enforcement(client, unknown="accept")


async def engines(args: argparse.Namespace, work: Path, postgres: ThrowawayPostgres, storage: str) -> dict[str, Any]:
    """Parts 1 and 2: one ``serve`` process per engine."""
    report: dict[str, Any] = {"ingest": [], "runs": {}}
    settings = {"sqlite": {}, "postgresql": {"DERMBRIDGE_STORAGE": storage}}
    with contextlib.ExitStack() as stack:
        servers = {e: stack.enter_context(spawned(work / e, {**SECURE, **settings[e]}, None))
                   for e in ENGINES}  # fmt: skip
        groups = {f"{e} server": [s.process.pid] for e, s in servers.items()}
        cpu = functools.partial(cpu_by_group, {**groups, "postgres": [postgres.postmaster_pid()]})
        settle_pids = [s.process.pid for s in servers.values()] + [postgres.postmaster_pid()]
        print("## Bundle ingest\n", file=sys.stderr)
        patient_ids: dict[str, list[str]] = {}
        for engine, server in servers.items():
            accept_unknown_profiles(server)
            row, _ = await ingest(engine, "Synthea, transaction Bundles", server, cpu, settle_pids, load_synthea)
            report["ingest"].append(row)
        for engine, server in servers.items():
            run = functools.partial(load_preload, total=args.preload)
            row, patient_ids[engine] = await ingest(engine, "preload, batch Bundles", server, cpu, settle_pids, run)
            report["ingest"].append(row)
        print("\n## Bundle ingest\n\n" + ingest_table(report["ingest"]))
        for clients in args.clients:
            workloads = [Workload(e, s.base, s.headers, clients, patient_ids[e] or ["none"])
                         for e, s in servers.items()]  # fmt: skip
            rows = await interleaved(workloads, args.ops, settle_pids, cpu)
            print(f"\n## One process per engine, {clients} clients\n\n{table(rows, {})}\n{ratios(rows, list(ENGINES))}")
            print(f"\nCPU per request:\n\n{cpu_table(rows)}")
            report["runs"][str(clients)] = rows
    report["patient_ids"] = patient_ids["postgresql"] or ["none"]
    return report


async def scale_out(
    args: argparse.Namespace, data: Path, postgres: ThrowawayPostgres, storage: str, patient_ids: list[str]
) -> dict[str, Any]:
    """Part 3: two API processes and an audit process on the PostgreSQL database of part 2, behind one HAProxy
    that uses the first API process only and one that uses both."""
    one_port, two_port = free_port(), free_port()
    env = {**SECURE, "DERMBRIDGE_STORAGE": storage, "DERMBRIDGE_AUDIT_LOADER": "role",
           "DERMBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{two_port}"}  # fmt: skip
    report: dict[str, Any] = {"runs": {}, "model": {}}
    with contextlib.ExitStack() as stack:

        def start(role: str) -> Any:
            return stack.enter_context(running_server(data, START_BOUND_S, env=env, admin=False, role=role))

        apis = [start("api") for _ in range(2)]
        audit = start("audit")
        ports = [int(a.root.rsplit(":", 1)[1]) for a in apis]
        one = stack.enter_context(haproxy(data.parent, one_port, ports[:1]))
        two = stack.enter_context(haproxy(data.parent, two_port, ports))
        token = fetch_token(two.url, create_client(data, env={"DERMBRIDGE_STORAGE": storage}))
        auth = {"Authorization": f"Bearer {token}"}
        groups = {"api 1": [apis[0].process.pid], "api 2": [apis[1].process.pid], "audit": [audit.process.pid],
                  "haproxy": [one.pid, two.pid], "postgres": [postgres.postmaster_pid()]}  # fmt: skip
        cpu = functools.partial(cpu_by_group, groups)
        settle_pids = [pid for pids in groups.values() for pid in pids]
        labels = ["2 APIs", "1 API"]
        for clients in args.clients:
            workloads = [Workload(labels[0], f"{two.url}/fhir/default", auth, clients, patient_ids),
                         Workload(labels[1], f"{one.url}/fhir/default", auth, clients, patient_ids)]  # fmt: skip
            rows = await interleaved(workloads, args.ops, settle_pids, cpu)
            models = [model(r, ["api 1", "api 2", "audit", "haproxy"], "postgres")
                      for r in rows if r["phase"].endswith(f"({labels[0]})")]  # fmt: skip
            print(f"\n## Scale-out on PostgreSQL behind HAProxy, {clients} clients\n\n{table(rows, {})}")
            print(f"{ratios(rows, labels)}\n\nCPU per request:\n\n{cpu_table(rows)}")
            print(f"\nWhat N cores would give (from the 2-API rows):\n\n{model_table(models)}")
            report["runs"][str(clients)], report["model"][str(clients)] = rows, models
    return report


def estimate_s(args: argparse.Namespace) -> float:
    """A rough duration on this 2-core machine: server starts about 45 s each; bundle ingest about 700 resources/s
    on SQLite and 250 on PostgreSQL (smoke runs on a loaded machine: PostgreSQL 3-6x slower); writes 250/s, reads
    500/s, searches 400/s (session 10's FHIR bench); 6 s to settle around a phase."""
    starts = 2 + (0 if args.skip_scale_out else 3)
    load = (SYNTHEA_RESOURCES + args.preload) * (1 / 700 + 1 / 250)
    per_workload = args.ops / 250 + args.ops / 500 + args.ops / 2 / 250 + 1.25 * args.ops / 400 + 6 * 6
    workloads = 2 * len(args.clients) * (1 if args.skip_scale_out else 2)
    return 45 * starts + load + workloads * per_workload


async def main_async(args: argparse.Namespace) -> None:
    random.seed(7)
    started = time.monotonic()
    print(f"engines bench: estimated {estimate_s(args) / 60:.0f} min ({args.preload:,} preloaded, {args.ops:,} ops "
          f"per phase, clients {args.clients})", file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, throwaway_postgres() as postgres:
        storage = postgres.create_database()
        report: dict[str, Any] = {"preload": args.preload, "ops": args.ops, "cpus": os.cpu_count(),
                                  **await engines(args, Path(tmp), postgres, storage)}  # fmt: skip
        if not args.skip_scale_out:
            report["scale_out"] = await scale_out(args, Path(tmp) / "postgresql", postgres, storage,
                                                  report.pop("patient_ids"))  # fmt: skip
        report.pop("patient_ids", None)
    report["seconds"] = round(time.monotonic() - started)
    print(f"\n(the whole run: {report['seconds'] / 60:.1f} min)")
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32], help="concurrent clients, one run each")
    parser.add_argument("--ops", type=int, default=1500, help="operations per phase (fewer for updates/searches)")
    parser.add_argument("--preload", type=int, default=100_000, help="resources loaded (and timed) before measuring")
    parser.add_argument("--skip-scale-out", action="store_true", help="only parts 1 and 2")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
