"""A deterministic profile of the FHIR API's requests, in-process: where a read, an update, a search spends its
CPU, for comparing builds on a busy machine (a benchmark's timings are noise there; call counts are not).

    python bench/fhir_profile.py                      # this tree
    python bench/fhir_profile.py --top 40 --sort tottime
    PYTHONPATH=/tmp/old python bench/fhir_profile.py  # another build's tree, with this venv

The app is built as ``dermbridge serve`` builds it (secure: tokens, audit, encryption; JSON log lines to
/dev/null) and driven through httpx's ASGI transport by one client, so the event loop's thread runs every
request's Python; cProfile records that thread during each phase. The storage engine's threads are not
profiled: ``engine calls`` counts what the loop handed them (one SQLite statement batch, or one PostgreSQL
round trip, each). Not a benchmark: nothing here is timed against another server.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parent.parent))

import httpx2

from dermbridge.app import create_app
from dermbridge.settings import Settings

BASE = "/fhir/default"
SETTLE_S = 3.0


def observation(patient: str, n: int) -> dict[str, Any]:
    """The Observation of ``bench/fhir_bench.py``."""
    return {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "imaging"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "372244006"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T10:00:00Z",
        "valueQuantity": {"value": 0.5, "unit": "probability"},
    }  # fmt: skip


class Counted:
    """Counts the calls the event loop hands to executors (the SQLite engine's threads)."""

    def __init__(self) -> None:
        self.calls = 0
        self.sites: Counter[str] = Counter()
        loop = asyncio.get_running_loop()
        original = loop.run_in_executor

        def counting(executor: Any, fn: Callable[..., Any], *args: Any) -> Any:
            self.calls += 1
            self.sites[_site(getattr(fn, "__qualname__", type(fn).__name__))] += 1
            return original(executor, fn, *args)

        loop.run_in_executor = counting  # type: ignore[method-assign]


def _site(fn: str) -> str:
    """The engine function and the first three callers in the server's code outside the storage layers."""
    frame, callers = sys._getframe(2), []
    while frame is not None and len(callers) < 3:
        name = frame.f_code.co_filename
        if ("fhir_server" in name or "dermbridge" in name or "terminology" in name) and "/storage/" not in name \
                and "/crypto/" not in name:  # fmt: skip
            callers.append(f"{Path(name).parent.name}/{Path(name).stem}.{frame.f_code.co_name}")
        frame = frame.f_back
    return f"{fn} <- {' <- '.join(callers)}"


async def phase(name: str, count: int, op: Callable[[int], Awaitable[None]], args: argparse.Namespace) -> None:
    counted = Counted()
    for n in range(5):  # warm the caches first
        await op(n)
    await asyncio.sleep(SETTLE_S)  # the outbox consumers finish the last phase's events
    counted.calls = 0
    counted.sites.clear()
    profile = cProfile.Profile()
    started = time.process_time()
    profile.enable()
    for n in range(count):
        await op(n)
    profile.disable()
    cpu_ms = (time.process_time() - started) * 1000 / count
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats(args.sort).print_stats(args.top)
    print(f"\n=== {name}: {count} requests, {cpu_ms:.2f} ms process CPU/request (profiled), "
          f"{counted.calls / count:.1f} engine calls/request, "
          f"{stats.total_calls / count:.0f} function calls/request")  # fmt: skip  # type: ignore[attr-defined]
    for site, calls in counted.sites.most_common():
        print(f"  {calls / count:5.2f} engine calls/request: {site}")
    print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))
    if args.dump:
        profile.dump_stats(f"{args.dump}-{name.replace(' ', '_')}.prof")


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "var", dicom_port=0, inference_enabled=False,
                            retention_every_hours=0, review_sweep_seconds=0)  # type: ignore[call-arg]  # fmt: skip
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app, client=("127.0.0.1", 40000))
            async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                owner, secret = await app.state.clients.create("default", "profile", ("admin",))
                form = {"grant_type": "client_credentials", "client_id": owner.client_id, "client_secret": secret}
                token = (await client.post("/auth/token", data=form)).json()["access_token"]
                client.headers["Authorization"] = f"Bearer {token}"
                patient = {"resourceType": "Patient", "identifier": [{"system": "urn:bench:mrn", "value": "MRN1"}]}
                created = await client.post(f"{BASE}/Patient", json=patient)
                patient_id = created.json()["id"]
                made: list[dict[str, Any]] = []

                async def create(n: int) -> None:
                    response = await client.post(f"{BASE}/Observation", json=observation(patient_id, n))
                    assert response.status_code == 201, response.text
                    made.append(response.json())

                async def read(n: int) -> None:
                    response = await client.get(f"{BASE}/Observation/{made[n % len(made)]['id']}")
                    assert response.status_code == 200, response.text

                async def update(n: int) -> None:
                    body = dict(made[n % len(made)])
                    body["status"] = "final" if body["status"] != "final" else "amended"
                    response = await client.put(f"{BASE}/Observation/{body['id']}", json=body)
                    assert response.status_code == 200, response.text
                    made[n % len(made)] = response.json()

                async def search(n: int) -> None:
                    response = await client.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient_id}",
                                                                                "_count": "10"})  # fmt: skip
                    assert response.status_code == 200, response.text

                wanted = set(args.phases.split(","))
                for name, count, op in [("create", args.n, create), ("read", args.n, read),
                                        ("update", args.n, update), ("search", args.n // 2, search)]:  # fmt: skip
                    if name == "create" or name in wanted:
                        await phase(name, count, op, args) if name in wanted else [await op(i) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="requests per phase (searches: half)")
    parser.add_argument("--top", type=int, default=25, help="functions listed per phase")
    parser.add_argument("--sort", default="cumulative", help="pstats sort key")
    parser.add_argument("--phases", default="create,read,update,search")
    parser.add_argument("--dump", help="also write each phase's profile to DUMP-<phase>.prof")
    args = parser.parse_args()
    import logging

    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115  # the serve process's JSON lines
    try:
        from dermbridge.logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    except ImportError:  # a build before the JSON log lines
        pass
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel("INFO")
    import dermbridge

    print(f"profiling {Path(dermbridge.__file__).parent.parent}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
