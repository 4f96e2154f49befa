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
import contextlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import settle
from fhir_server.storage.port import ResourceVersion
from fhir_server.storage.sqlite import SqliteEngine
from tests.server import Server, running_server

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
    body: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": random.choice(["registered", "preliminary", "final"]),
        "code": {"coding": [{"system": "http://loinc.org", "code": "72170-4", "display": "Photographic image"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T10:00:00Z",
        "identifier": [{"system": "urn:bench:accession", "value": f"ACC{n:08d}"}],
    }
    if body["status"] == "final":  # a final report names the clinician who signed it off (report_sign_off)
        body["resultsInterpreter"] = [{"reference": "Practitioner/bench-signer"}]
    return body


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


async def run_phase(name: str, clients: int, ops: int, op: Any) -> Phase:
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


class Workload:
    """One server's phases, with the state they hand on (the Observations the creates made)."""

    def __init__(self, label: str, base: str, auth: dict[str, str], clients: int, patient_ids: list[str]) -> None:
        self.label, self.base, self.clients, self.patient_ids = label, base, clients, patient_ids
        limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
        self.client = httpx2.AsyncClient(limits=limits, timeout=60, headers=auth)
        self.created: list[dict[str, Any]] = []

    def phases(self, ops: int) -> list[tuple[str, int, Any]]:
        """(name, operations, operation) in the order they run: reads and updates need the creates."""
        return [("create", ops, self.create), ("read", ops, self.read), ("update", ops // 2, self.update),
                ("search subject=", ops // 2, self.search_subject),
                ("search identifier=", ops // 2, self.search_identifier),
                ("search chained", ops // 4, self.search_chain)]  # fmt: skip

    async def create(self, n: int) -> None:
        response = await self.client.post(
            f"{self.base}/Observation", json=observation(random.choice(self.patient_ids), n)
        )
        assert response.status_code == 201, response.text
        self.created.append(response.json())

    async def read(self, n: int) -> None:
        response = await self.client.get(f"{self.base}/Observation/{self.created[n % len(self.created)]['id']}")
        assert response.status_code == 200

    async def update(self, n: int) -> None:
        body = dict(self.created[n % len(self.created)])
        body["status"] = "final"
        response = await self.client.put(f"{self.base}/Observation/{body['id']}", json=body)
        assert response.status_code == 200, response.text

    async def search_subject(self, n: int) -> None:
        params = {"subject": f"Patient/{random.choice(self.patient_ids)}"}
        response = await self.client.get(f"{self.base}/Observation", params=params)
        assert response.status_code == 200

    async def search_identifier(self, n: int) -> None:
        response = await self.client.get(f"{self.base}/Patient", params={"identifier": f"urn:bench:mrn|MRN{n:07d}"})
        assert response.status_code == 200

    async def search_chain(self, n: int) -> None:
        params = {"subject:Patient.identifier": f"urn:bench:mrn|MRN{n:07d}"}
        response = await self.client.get(f"{self.base}/DiagnosticReport", params=params)
        assert response.status_code == 200


async def interleaved(
    workloads: list[Workload], ops: int, settle_pids: list[int], cpu: Callable[[], dict[str, float]] | None = None
) -> list[dict[str, Any]]:
    """Each phase on every server in turn (the order rotating from phase to phase), the servers'
    processes left to go idle before each: both sides of a comparison see the same machine. With ``cpu``
    (CPU seconds so far by process group, ``processes.cpu_by_group``), each row also has the CPU each group
    used per operation in that phase, counted until the processes are idle again, so that deferred work (audit
    loading, outbox consumers) counts too (``cpu_ms_per_op``)."""
    rows: dict[str, list[dict[str, Any]]] = {w.label: [] for w in workloads}
    for index in range(len(workloads[0].phases(ops))):
        for workload in workloads[index % len(workloads) :] + workloads[: index % len(workloads)]:
            if settle_pids:
                await asyncio.to_thread(settle, settle_pids)
            name, count, op = workload.phases(ops)[index]
            before = cpu() if cpu else {}
            row = (await run_phase(name, workload.clients, count, op)).row()
            if cpu and row["ops"]:
                await asyncio.to_thread(settle, settle_pids)  # the work the phase left behind counts as its own
                after = cpu()
                row["cpu_ms_per_op"] = {group: round(1000 * (after[group] - before[group]) / row["ops"], 3)
                                        for group in after}  # fmt: skip
            row["phase"] = f"{name} ({workload.label})" if len(workloads) > 1 or workload.label else name
            rows[workload.label].append(row)
    for workload in workloads:
        await workload.client.aclose()
    return [row for label_rows in rows.values() for row in label_rows]


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
    # as shipped, but the audit chain's head is (in effect) never signed: no head every 256 events
    # nor every 10 s; against "secure", the cost of the signed-head cadence
    "no-heads": {"DERMBRIDGE_AUTH_ENABLED": "true", "DERMBRIDGE_AUDIT_ENABLED": "true",
                 "DERMBRIDGE_ENCRYPTION_ENABLED": "true", "DERMBRIDGE_AUDIT_CHECKPOINT_EVERY": "1000000000",
                 "DERMBRIDGE_AUDIT_CHECKPOINT_INTERVAL_S": "3600"},
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


def ratios(rows: list[dict[str, Any]], labels: list[str]) -> str:
    """Each other server against the first, phase by phase: ops/s and p50 as ratios first / other."""
    first, lines = labels[0], []
    for other in labels[1:]:
        lines += [f"\n**{first} / {other}** (ops/s above 1: {first} faster; p50 above 1: {first} slower)\n",
                  f"| phase | ops/s {first} | ops/s {other} | ratio | p50 ms {first} | p50 ms {other} | ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        by_phase = {row["phase"]: row for row in rows}
        phases = [row["phase"].removesuffix(f" ({first})") for row in rows if row["phase"].endswith(f" ({first})")]
        for phase in phases:
            a, b = by_phase[f"{phase} ({first})"], by_phase[f"{phase} ({other})"]
            speed = a["ops_per_s"] / b["ops_per_s"] if b["ops_per_s"] else 0.0
            latency = a["p50_ms"] / b["p50_ms"] if b["p50_ms"] else 0.0
            lines.append(f"| {phase} | {a['ops_per_s']:,.0f} | {b['ops_per_s']:,.0f} | {speed:.2f} | "
                         f"{a['p50_ms']:.2f} | {b['p50_ms']:.2f} | {latency:.2f} |")  # fmt: skip
    return "\n".join(lines)


def baseline_tree(revision: str, into: Path) -> Path:
    """The repository at ``revision`` (``git archive``), for ``python -m dermbridge`` run inside it."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", revision], capture_output=True,
                             check=True, timeout=120).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    found = subprocess.run([sys.executable, "-c", "import dermbridge; print(dermbridge.__file__)"], cwd=into,
                           capture_output=True, text=True, timeout=120, check=True).stdout.strip()  # fmt: skip
    if not found.startswith(str(into)):
        raise RuntimeError(f"in {into}, dermbridge is imported from {found}")
    return into


@contextmanager
def spawned(data_dir: Path, env: dict[str, str], tree: Path | None) -> Iterator[Server]:
    """``running_server``, from ``tree`` when given: its CLI and server run with it as working
    directory, so ``python -m dermbridge`` imports that tree (the working directory comes first)."""
    secure = env["DERMBRIDGE_AUTH_ENABLED"] == "true"
    with contextlib.ExitStack() as stack:
        with contextlib.chdir(tree) if tree else contextlib.nullcontext():
            server = stack.enter_context(running_server(data_dir, 180, env, secure))
        yield server


async def main_async(args: argparse.Namespace) -> None:
    random.seed(7)
    floor = {p.name: p.row() for p in await floor_phases(args.clients, args.ops)}

    async def loaded(label: str, base: str, auth: dict[str, str]) -> Workload:
        async with httpx2.AsyncClient(timeout=300, headers=auth) as client:
            patient_ids = await preload(client, base, args.preload) if args.preload else []
        return Workload(label, base, auth, args.clients, patient_ids or [str(uuid.uuid4())])

    if args.url:
        token = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        rows = await interleaved([await loaded("", args.url, token)], args.ops, [])
        labels = [""]
    else:
        servers: list[tuple[str, dict[str, str], Path | None]] = [(m, MODES[m], None) for m in args.modes.split(",")]
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            if args.baseline:
                tree = baseline_tree(args.baseline, Path(tmp) / "baseline")
                servers.append((f"{servers[0][0]} @{args.baseline}", servers[0][1], tree))
            running = [stack.enter_context(spawned(Path(tmp) / f"var{n}", env, tree))
                       for n, (_, env, tree) in enumerate(servers)]  # fmt: skip
            pids = [server.process.pid for server in running]
            workloads = []
            for (label, _, _), server in zip(servers, running, strict=True):
                workloads.append(await loaded(label, server.base, server.headers))
            rows = await interleaved(workloads, args.ops, pids)
            labels = [label for label, _, _ in servers]
    rows = list(floor.values()) + rows
    print(table(rows, floor))
    if len(labels) > 1:
        print(ratios(rows, labels))
    print(json.dumps({"clients": args.clients, "preload": args.preload, "cpus": os.cpu_count(),
                      "baseline": args.baseline, "rows": rows}))  # fmt: skip


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
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also a server built from git revision REV (the first mode's settings), e.g. 20c1d71",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
