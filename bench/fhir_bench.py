"""FHIR REST throughput and latency on a loaded store, side by side with the engine's raw floor.

    python bench/fhir_bench.py                       # spawns a server on a temp data dir
    python bench/fhir_bench.py --url http://127.0.0.1:8080/fhir/default --no-preload

Phases, each with N concurrent clients: create (POST Observation), read (GET by id),
update (PUT), search on indexed parameters. The floor is the same JSON written and read
through the storage engine in-process, with the same concurrency: no HTTP, no validation,
no index. Everything runs on loopback and every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhir_server.storage.port import ResourceVersion
from fhir_server.storage.sqlite import SqliteEngine
from tests.server import running_server

DEADLINE_S = 600.0


def patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:bench:mrn", "value": f"MRN{n:07d}"}],
        "name": [{"family": f"Family{n % 5000}", "given": [f"Given{n % 97}"]}],
        "gender": random.choice(["male", "female"]),
        "birthDate": f"{1930 + n % 80}-{1 + n % 12:02d}-{1 + n % 28:02d}",
    }


def report(patient_id: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": random.choice(["registered", "preliminary", "final"]),
        "code": {"coding": [{"system": "http://loinc.org", "code": "72170-4", "display": "Photographic image"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T10:00:00Z",
        "identifier": [{"system": "urn:bench:accession", "value": f"ACC{n:08d}"}],
    }


def observation(patient_id: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "imaging"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": random.choice(
            ["372244006", "254701007", "403924008", "400096001"])}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T10:00:00Z",
        "valueQuantity": {"value": round(random.random(), 3), "unit": "probability"},
    }  # fmt: skip


async def preload(client: httpx2.AsyncClient, base: str, total: int, chunk: int = 500) -> list[str]:
    """Load Patients, DiagnosticReports and Observations (1:1:3) through batch Bundles."""
    patients = max(1, total // 5)
    patient_ids = [str(uuid.uuid4()) for _ in range(patients)]
    resources: list[dict[str, Any]] = []
    for n, pid in enumerate(patient_ids):
        resources.append({**patient(n), "id": pid})
    for n in range(patients):
        resources.append(report(patient_ids[n], n))
    for n in range(total - 2 * patients):
        resources.append(observation(patient_ids[n % patients], n))
    started = time.monotonic()
    for start in range(0, len(resources), chunk):
        entries = []
        for resource in resources[start : start + chunk]:
            if "id" in resource:
                entries.append({"resource": resource, "request": {"method": "PUT", "url": f"Patient/{resource['id']}"}})
            else:
                entries.append({"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}})
        response = await client.post(
            base,
            json={"resourceType": "Bundle", "type": "batch", "entry": entries},
            headers={"Prefer": "return=minimal"},
        )
        response.raise_for_status()
        if time.monotonic() - started > DEADLINE_S * 3:
            raise TimeoutError("preload took too long")
    print(f"preloaded {len(resources):,} resources in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return patient_ids


class Phase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.elapsed = 0.0

    def row(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "phase": self.name,
            "ops": len(lat),
            "ops_per_s": len(lat) / self.elapsed if self.elapsed else 0.0,
            "p50_ms": statistics.median(lat) * 1000 if lat else 0.0,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0,
        }


async def run_phase(name: str, clients: int, ops: int, op) -> Phase:  # type: ignore[no-untyped-def]
    phase = Phase(name)
    counter = iter(range(ops))
    deadline = time.monotonic() + DEADLINE_S

    async def worker() -> None:
        for n in counter:
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            await op(n)
            phase.latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    phase.elapsed = time.perf_counter() - started
    return phase


async def http_phases(base: str, clients: int, ops: int, patient_ids: list[str], auth: dict[str, str]) -> list[Phase]:
    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(limits=limits, timeout=60, headers=auth) as client:
        created: list[dict[str, Any]] = []

        async def create(n: int) -> None:
            response = await client.post(f"{base}/Observation", json=observation(random.choice(patient_ids), n))
            assert response.status_code == 201, response.text
            created.append(response.json())

        async def read(n: int) -> None:
            response = await client.get(f"{base}/Observation/{created[n % len(created)]['id']}")
            assert response.status_code == 200

        async def update(n: int) -> None:
            body = dict(created[n % len(created)])
            body["status"] = "final"
            response = await client.put(f"{base}/Observation/{body['id']}", json=body)
            assert response.status_code == 200, response.text

        async def search_subject(n: int) -> None:
            response = await client.get(
                f"{base}/Observation", params={"subject": f"Patient/{random.choice(patient_ids)}"}
            )
            assert response.status_code == 200

        async def search_identifier(n: int) -> None:
            response = await client.get(f"{base}/Patient", params={"identifier": f"urn:bench:mrn|MRN{n:07d}"})
            assert response.status_code == 200

        async def search_chain(n: int) -> None:
            response = await client.get(
                f"{base}/DiagnosticReport", params={"subject:Patient.identifier": f"urn:bench:mrn|MRN{n:07d}"}
            )
            assert response.status_code == 200

        phases = [await run_phase("create", clients, ops, create)]
        phases.append(await run_phase("read", clients, ops, read))
        phases.append(await run_phase("update", clients, ops // 2, update))
        phases.append(await run_phase("search subject=", clients, ops // 2, search_subject))
        phases.append(await run_phase("search identifier=", clients, ops // 2, search_identifier))
        phases.append(await run_phase("search chained", clients, ops // 4, search_chain))
        return phases


async def floor_phases(clients: int, ops: int) -> list[Phase]:
    """The same Observation JSON through the SQLite engine, no HTTP, validation or index."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = SqliteEngine(Path(tmp))
        await engine.open()
        await engine.create_tenant("floor")
        store = await engine.tenant("floor")
        ids: list[str] = []

        async def write(n: int) -> None:
            id = str(uuid.uuid4())
            content = orjson.dumps({**observation("p", n), "id": id})
            version = ResourceVersion("Observation", id, 1, "2026-01-01T00:00:00.000+00:00", content, "POST")
            async with store.transaction() as tx:
                await tx.write(version, None)
            ids.append(id)

        async def read(n: int) -> None:
            assert await store.read("Observation", ids[n % len(ids)]) is not None

        phases = [
            await run_phase("floor write", clients, ops, write),
            await run_phase("floor read", clients, ops, read),
        ]
        await engine.close()
        return phases


MODES = {
    # as shipped: bearer tokens checked, every interaction audited, every version encrypted
    "secure": {"DERMBRIDGE_AUTH_ENABLED": "true", "DERMBRIDGE_AUDIT_ENABLED": "true",
               "DERMBRIDGE_ENCRYPTION_ENABLED": "true"},
    "no-audit": {"DERMBRIDGE_AUTH_ENABLED": "true", "DERMBRIDGE_AUDIT_ENABLED": "false",
                 "DERMBRIDGE_ENCRYPTION_ENABLED": "true"},
    "audit-only": {"DERMBRIDGE_AUTH_ENABLED": "false", "DERMBRIDGE_AUDIT_ENABLED": "true",
                   "DERMBRIDGE_ENCRYPTION_ENABLED": "false"},
    "open": {"DERMBRIDGE_AUTH_ENABLED": "false", "DERMBRIDGE_AUDIT_ENABLED": "false",
             "DERMBRIDGE_ENCRYPTION_ENABLED": "false"},
}  # fmt: skip


def table(rows: list[dict[str, Any]], floor: dict[str, dict[str, Any]]) -> str:
    lines = ["| phase | ops | ops/s | p50 ms | p99 ms | vs engine floor |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        ratio = ""
        phase = row["phase"].split(" (")[0]
        reference = floor.get("floor write") if phase in ("create", "update") else None
        if phase == "read":
            reference = floor.get("floor read")
        if reference:
            ratio = f"{reference['ops_per_s'] / row['ops_per_s']:.2f}x slower" if row["ops_per_s"] else ""
        lines.append(
            f"| {row['phase']} | {row['ops']:,} | {row['ops_per_s']:,.0f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {ratio} |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    random.seed(7)
    floor = {p.name: p.row() for p in await floor_phases(args.clients, args.ops)}

    async def against(base: str, auth: dict[str, str]) -> list[dict[str, Any]]:
        async with httpx2.AsyncClient(timeout=300, headers=auth) as client:
            patient_ids = await preload(client, base, args.preload) if args.preload else []
            if not patient_ids:
                patient_ids = [str(uuid.uuid4())]
        return [p.row() for p in await http_phases(base, args.clients, args.ops, patient_ids, auth)]

    if args.url:
        token = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        rows = await against(args.url, token)
    else:
        rows = []
        for mode in args.modes.split(","):
            env = MODES[mode]
            secure = env["DERMBRIDGE_AUTH_ENABLED"] == "true"
            with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp) / "var", 60, env, secure) as server:
                for row in await against(server.base, server.headers):
                    row["phase"] = f"{row['phase']} ({mode})"
                    rows.append(row)
    rows = list(floor.values()) + rows
    print(table(rows, floor))
    print(json.dumps({"clients": args.clients, "preload": args.preload, "cpus": os.cpu_count(), "rows": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server's tenant base; default: spawn one")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--ops", type=int, default=2000, help="operations per phase (fewer for updates/searches)")
    parser.add_argument("--preload", type=int, default=100_000, help="resources loaded before measuring")
    parser.add_argument("--no-preload", dest="preload", action="store_const", const=0)
    parser.add_argument("--token", help="a bearer token for --url")
    parser.add_argument(
        "--modes", default="secure,open", help=f"servers to compare, from {', '.join(MODES)} (one run, side by side)"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
