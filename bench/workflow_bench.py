"""The clinical workflow's figures (issue 14): cases per second through AI-then-sign-off with concurrent
reviewers, the review queue's queries at 10,000 open review Tasks, and notification latency from commit.

    python bench/workflow_bench.py                                  # defaults: a few minutes
    python bench/workflow_bench.py --cases 6 --open-tasks 300 --queries 10 --notifications 5   # a smoke run

Everything runs on 127.0.0.1 against a real ``dermbridge serve`` process (``tests.server``: embedded
SQLite, authentication, the audit trail and encryption on), with the inference worker (the demo model) in
the server process, as ``tests/interop/test_workflow_processes.py`` runs it.

1. **Review throughput.** The tenant activates ``ai-then-signoff``; the EHR subscribes to final reports
   (rest-hook, the report as payload, to a local HTTP receiver). One device thread C-STOREs ``--cases``
   images (pynetdicom, one association each, one consenting patient each, alternately suspicious and
   benign); ``--reviewers`` reviewer threads (clients acting for their Practitioner, each with a Dermatology
   PractitionerRole) loop: ``GET Task/$worklist?_count=10``, ``$claim`` the first queued Task (another
   reviewer's claim answers 409: the next one), reads the patient's lesion and ``$complete``s with an
   ``override`` (the demo model's output cannot be confirmed). Cases/s is the cases signed
   off over the time from the first C-STORE to the last sign-off; per case, C-STORE success to signed off;
   and each reviewer call's duration (``$worklist``, ``$claim``, ``$complete``).
2. **Notification latency under that load**: each final report's rest-hook receipt time minus its
   ``meta.lastUpdated`` (set in the writing transaction, just before its commit; one machine, one clock).
3. **Quiet notification latency**: ``--notifications`` Observations written one at a time to a Subscription
   ``Observation?code=...`` (rest-hook with payload), each waited for before the next.
4. **Queue queries.** A fresh data directory is seeded with ``--open-tasks`` open review Tasks through the
   repository (``open_review``, 500 per transaction; 10 % asap, 20 % urgent, the rest routine, on 100
   patients), then the server starts and a reviewer times ``GET Task/$worklist?_count=20`` and
   ``GET Task?status=requested&code=urn:dermbridge:review-tier|dermatologist&_count=20``, ``--queries``
   times each, after 5 unmeasured ones. One more Task, the newest, is ``stat``: the worklist must list it first.

Every wait is bounded by a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dermbridge.cli_support import opened_engine
from dermbridge.settings import Settings
from fhir_server.repository import Repository
from fhir_server.workflow.review import open_review
from tests.factories import observation
from tests.fhir_server.subscriptions.endpoints import HookServer, Received, hook_server
from tests.inference.test_worker import lesion_instance
from tests.interop.clinic import NAEVUS, REVIEW, SERVER_ENV, Clinic, Reviewer, override, until
from tests.server import free_port, running_server

T = TypeVar("T")
TIER = "urn:dermbridge:review-tier|dermatologist"
DEADLINE = 900.0  # seconds for any phase
# the tests' server settings without their fast Subscription retries and polls: the defaults a site runs
BENCH_ENV = {k: v for k, v in SERVER_ENV.items() if "RETRY" not in k and "POLL" not in k and "ATTEMPTS" not in k}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def row(phase: str, seconds: list[float], **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "n": len(seconds), "p50_ms": percentile(seconds, 0.5) * 1000,
            "p95_ms": percentile(seconds, 0.95) * 1000, **extra}  # fmt: skip


def since_commit(received: Received) -> float:
    """Receipt time minus the resource's ``meta.lastUpdated``."""
    updated = datetime.fromisoformat(json.loads(received.body)["meta"]["lastUpdated"]).timestamp()
    return received.at - updated


def subscribe(clinic: Clinic, criteria: str, hook: HookServer) -> None:
    body = {"resourceType": "Subscription", "status": "requested", "reason": "bench", "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": hook.url, "payload": "application/fhir+json"}}  # fmt: skip
    assert clinic.post("Subscription", body)["status"] == "active"


def review_loop(
    reviewer: Reviewer, signed: dict[str, float], wanted: int, lock: threading.Lock, calls: dict[str, list[float]]
) -> None:
    """Claim the first queued Task of the worklist, decide it (override); until ``wanted`` cases are signed off.
    ``calls`` gets each call's duration by operation."""

    def call(name: str, request: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        answer = request()
        calls[name].append(time.perf_counter() - t0)  # list.append is atomic: no lock needed
        return answer

    deadline = time.monotonic() + DEADLINE
    while len(signed) < wanted and time.monotonic() < deadline:
        listed = call("$worklist", lambda: reviewer.worklist(_count="10"))
        queued = [t for t in listed if t["status"] == "requested"]
        if not queued:
            time.sleep(0.02)  # the bench polls its queue as a reviewer's app would
            continue
        for task in queued:
            if call("$claim", lambda t=task: reviewer.op(t["id"], "claim")).status_code != 200:
                continue  # another reviewer was first
            lesion = call("BodyStructure?patient=", lambda t=task: reviewer.lesions(t))[0]
            decision = override(lesion, NAEVUS, "routine")  # the demo model's output cannot be confirmed
            call("$complete (override)", lambda t=task, d=decision: reviewer.must(t["id"], "complete", *d))
            with lock:
                signed[task["for"]["reference"]] = time.time()
            break


def review_phase(clinic: Clinic, hook: HookServer, cases: int, reviewers: int) -> list[dict[str, Any]]:
    clinic.activate("ai-then-signoff")
    subscribe(clinic, "DiagnosticReport?status=final", hook)
    team = [clinic.reviewer(f"Dr {n}") for n in range(reviewers)]
    mrns = [f"BENCH-{n}" for n in range(cases)]
    patients = [f"Patient/{clinic.consenting_patient(mrn)}" for mrn in mrns]
    images = [lesion_instance(mrn, seed=n, suspicious=n % 2 == 0, accession=mrn) for n, mrn in enumerate(mrns)]
    stored: dict[str, float] = {}
    signed: dict[str, float] = {}
    lock = threading.Lock()
    calls: dict[str, list[float]] = {
        "$worklist": [],
        "$claim": [],
        "BodyStructure?patient=": [],
        "$complete (override)": [],
    }
    threads = [threading.Thread(target=review_loop, args=(r, signed, cases, lock, calls)) for r in team]
    for thread in threads:
        thread.start()
    started = time.time()
    for patient, ds in zip(patients, images, strict=True):
        clinic.store(ds)
        stored[patient] = time.time()
    for thread in threads:
        thread.join(DEADLINE)
    until(lambda: len(hook.received) >= len(signed), "the final reports at the EHR", 120)
    for reviewer in team:
        reviewer.http.close()
    elapsed = max(signed.values()) - started
    per_case = [signed[p] - stored[p] for p in signed]
    return [
        row(f"C-STORE success -> signed off ({reviewers} reviewers)", per_case, cases_s=len(signed) / elapsed),
        row(
            "notification: final report, commit -> rest-hook receipt (under review load)",
            [since_commit(r) for r in hook.received],
        ),
        *(row(f"reviewer call {name} (under review load)", spent) for name, spent in calls.items()),
    ]


def quiet_notifications(clinic: Clinic, hook: HookServer, count: int) -> dict[str, Any]:
    subscribe(clinic, "Observation?code=http://loinc.org|8867-4", hook)
    subject = clinic.consenting_patient("BENCH-QUIET")
    latencies = []
    for _ in range(count):
        made = clinic.post("Observation", observation(f"Patient/{subject}"))
        path = f"/hook/Observation/{made['id']}"
        received = until(lambda p=path: next((r for r in hook.received if r.path == p), None), path, 60)
        latencies.append(since_commit(received))
    return row("notification: Observation, commit -> rest-hook receipt (quiet)", latencies)


async def seed(data_dir: Path, count: int) -> float:
    """``count`` open review Tasks through the repository, 500 per transaction; returns seconds taken."""
    started = time.monotonic()
    async with opened_engine(Settings(data_dir=data_dir)) as engine:
        await engine.create_tenant("default")
        store = await engine.tenant("default")
        system = Repository.system(store, reason="bench seed")
        patients = [(await system.create({"resourceType": "Patient"}, resource_type="Patient")).resource["id"]
                    for _ in range(100)]  # fmt: skip
        base = datetime.now(UTC) - timedelta(days=10)
        for start in range(0, count, 500):
            async with store.transaction() as tx:
                repo = Repository.system(store, reason="bench seed", tx=tx)
                for n in range(start, min(count, start + 500)):
                    urgency = "asap" if n % 10 == 3 else "urgent" if n % 5 == 1 else "routine"
                    await open_review(repo, report_id=f"bench-{n}", patient_id=patients[n % 100],
                                      tier="dermatologist", reason="bench", urgency=urgency,
                                      now=base + timedelta(seconds=n))  # fmt: skip
                if start + 500 >= count:  # the newest case is the most urgent: the worklist must list it first
                    await open_review(repo, report_id="bench-stat", patient_id=patients[0], tier="dermatologist",
                                      reason="bench", urgency="stat")  # fmt: skip
    return time.monotonic() - started


def timed(call: Callable[[], Any], times: int) -> list[float]:
    for _ in range(5):
        call()
    spent = []
    for _ in range(times):
        t0 = time.perf_counter()
        call()
        spent.append(time.perf_counter() - t0)
    return spent


def queue_phase(tmp: Path, open_tasks: int, queries: int) -> list[dict[str, Any]]:
    data = tmp / "queue"
    seconds = asyncio.run(seed(data, open_tasks))
    env = {**BENCH_ENV, "DERMBRIDGE_INFERENCE_ENABLED": "false", "DERMBRIDGE_DICOM_PORT": str(free_port())}
    with running_server(data, env=env) as server:
        clinic = Clinic(server, data, 0)
        reviewer = clinic.reviewer("Dr Queue")
        first = reviewer.worklist(_count="20")
        urgent_first = bool(first) and first[0]["priority"] == "stat"

        def search() -> None:
            response = reviewer.http.get(f"{clinic.base}/Task", params={"status": "requested", "code": TIER,
                                                                         "_count": "20"})  # fmt: skip
            assert response.status_code == 200, response.text

        rows = [
            row(f"GET Task/$worklist?_count=20 at {open_tasks} open review Tasks",
                timed(lambda: reviewer.worklist(_count="20"), queries), most_urgent_first=urgent_first),
            row(f"GET Task?status=requested&code=...\\|dermatologist&_count=20 at {open_tasks}",
                timed(search, queries)),
        ]  # fmt: skip
        total = clinic.get("Task", code=REVIEW, status="requested", _summary="count")["total"]
        assert total >= open_tasks, total
        reviewer.http.close()
    print(f"seeded {open_tasks} open review Tasks through the repository in {seconds:.1f} s")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| phase | n | p50 ms | p95 ms | cases/s |", "|---|---:|---:|---:|---:|"]
    for each in rows:
        cells = [f"{each[k]:.1f}" if k in each else "" for k in ("p50_ms", "p95_ms")]
        rate = f"{each['cases_s']:.2f}" if "cases_s" in each else ""
        note = "" if each.get("most_urgent_first", True) else " (the stat Task is NOT listed first)"
        lines.append(f"| {each['phase']}{note} | {each['n']} | {' | '.join(cells)} | {rate} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=40, help="cases through ai-then-signoff (0: skip)")
    parser.add_argument("--reviewers", type=int, default=4, help="concurrent reviewer clients")
    parser.add_argument("--notifications", type=int, default=50, help="quiet notifications (0: skip)")
    parser.add_argument("--open-tasks", type=int, default=10_000, help="open review Tasks seeded (0: skip)")
    parser.add_argument("--queries", type=int, default=100, help="timed queries of each kind")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.cases or args.notifications:
            data, dimse = Path(tmp) / "review", free_port()
            env = {**BENCH_ENV, "DERMBRIDGE_DICOM_PORT": str(dimse)}
            with hook_server() as hook, running_server(data, env=env) as server:
                clinic = Clinic(server, data, dimse)
                if args.cases:
                    rows += review_phase(clinic, hook, args.cases, args.reviewers)
                if args.notifications:
                    rows.append(quiet_notifications(clinic, hook, args.notifications))
        if args.open_tasks:
            rows += queue_phase(Path(tmp), args.open_tasks, args.queries)
    print(table(rows))
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
