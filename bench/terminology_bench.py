"""Terminology at SNOMED CT scale, in process. Not a timed test.

    python bench/terminology_bench.py [--concepts 300000] [--runs 50] [--creates 300]

1. Writes a synthetic RF2 release (``tests.rf2_factories``: the real file layout) of ``--concepts`` concepts
   with a SNOMED-like hierarchy: 19 top-level hierarchies, a skewed fan-out (most concepts are leaves, a few
   have hundreds of children) and about a third of concepts with a second parent (depth and links printed).
2. Loads it as ``dermbridge terminology load`` does (``read_release`` + ``write_store``): the load time.
3. ``$expand`` with ``is-a`` (``terminology.expansion.Expander`` over the store): p50/p95 over concepts with
   100-999 and with 1,000-10,000 codes below them; ``$subsumes`` p50.
4. Write-time binding checks: ``Repository.create`` of an Observation (the R4 bindings of Observation) on the
   real SQLite engine, p50 with the checks and with ``binding_issues`` replaced by a no-op: the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fhir_server.repository as repository_module
from dermbridge.settings import Settings
from dermbridge.storage import open_engine
from fhir_server.repository import Repository
from terminology.closure_store import ClosureCodeSystem, write_store
from terminology.content import BaseContent
from terminology.expansion import Expander
from terminology.resolver import Layered
from terminology.rf2 import SNOMED, read_release
from tests.rf2_factories import Rf2Release

TOP_LEVEL = 19


def synthetic_release(concepts: int, seed: int = 7) -> Rf2Release:
    """A hierarchy grown breadth-first: each concept's child count drawn from a skewed distribution, a third
    of the concepts with a second parent from an earlier level."""
    rng = random.Random(seed)
    release = Rf2Release()
    root = "138875005"
    release.concept(root, "SNOMED CT Concept (SNOMED RT+CTV3)", "SNOMED CT Concept")
    levels: list[list[str]] = [[root]]
    made = 1
    while made < concepts:
        parents = levels[-1] if len(levels) > 1 else [root]
        level: list[str] = []
        for parent in parents:
            fanout = TOP_LEVEL if parent == root else min(int(rng.paretovariate(1.2)) - 1, 400)
            for _ in range(fanout):
                if made >= concepts:
                    break
                made += 1
                code = f"{made}1000"
                release.concept(code, f"Concept {made} (finding)", f"Concept {made}")
                release.is_a(code, parent)
                if len(levels) > 2 and rng.random() < 0.33:
                    release.is_a(code, rng.choice(levels[-2]))
                level.append(code)
        if not level:  # every parent drew no child: give the first one a child so that growth goes on
            made += 1
            code = f"{made}1000"
            release.concept(code, f"Concept {made} (finding)", f"Concept {made}")
            release.is_a(code, parents[0])
            level.append(code)
        levels.append(level)
    return release


def pick_subtrees(store: ClosureCodeSystem, count: int, low: int, high: int, seed: int = 11) -> list[tuple[str, int]]:
    """Up to ``count`` concepts with ``low`` to ``high`` codes below them."""
    rows = store._conn.execute(
        "SELECT c.code, COUNT(*) FROM closure a JOIN concept c ON c.id = a.ancestor GROUP BY a.ancestor "
        "HAVING COUNT(*) BETWEEN ? AND ?",
        (low, high),
    ).fetchall()
    random.Random(seed).shuffle(rows)
    return [(code, size) for code, size in rows[:count]]


class _Store:
    def __init__(self, store: ClosureCodeSystem) -> None:
        self.store = store

    async def code_system(self, url: str, version: str | None = None) -> ClosureCodeSystem | None:
        return self.store if url == SNOMED else None

    async def value_set(self, url: str, version: str | None = None) -> dict[str, Any] | None:
        return None

    async def concept_maps(self, source_system: str | None) -> list[dict[str, Any]]:
        return []


def _expansions(resolver: Layered, subtrees: list[tuple[str, int]]) -> Callable[[], Awaitable[Any]]:
    """Expands ``is-a`` each of ``subtrees`` in turn, one per call."""
    position = iter(range(10**9))

    async def expand() -> None:
        code, _ = subtrees[next(position) % len(subtrees)]
        include = {"system": SNOMED, "filter": [{"property": "concept", "op": "is-a", "value": code}]}
        await Expander(resolver, terms=False).expand({"compose": {"include": [include]}})

    return expand


def quantiles(times: list[float]) -> str:
    return f"p50 {statistics.median(times):.1f} ms, p95 {statistics.quantiles(times, n=20)[18]:.1f} ms"


async def timed(action: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await action()
        times.append((time.perf_counter() - started) * 1000)
    return times


def observation() -> dict[str, Any]:
    interpretation = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}
        ],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "93655004"}]},
        "interpretation": [{"coding": [{"system": interpretation, "code": "H"}]}],
        "valueQuantity": {"value": 0.82, "unit": "probability", "system": "http://unitsofmeasure.org", "code": "1"},
    }


async def create_cost(data_dir: Path, creates: int) -> tuple[list[float], list[float]]:
    engine = open_engine(Settings(data_dir=data_dir, encryption_enabled=False))
    await engine.open()
    try:
        await engine.create_tenant("bench")
        repo = Repository.system(await engine.tenant("bench"), reason="terminology bench")

        async def create() -> None:
            await repo.create(observation(), resource_type="Observation")

        await timed(create, 20)  # warm: compiled validators and value sets
        checked = await timed(create, creates)
        original = repository_module.binding_issues

        async def none(*_: Any) -> tuple[dict[str, Any], ...]:
            return ()

        repository_module.binding_issues = none  # type: ignore[assignment]
        try:
            unchecked = await timed(create, creates)
        finally:
            repository_module.binding_issues = original
        return checked, unchecked
    finally:
        await engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concepts", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--creates", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        path = synthetic_release(args.concepts).write(root / "release.zip")
        written = time.perf_counter() - started
        started = time.perf_counter()
        release, concepts, is_a = read_release(path)
        count = write_store(root / "snomed.sqlite", {"url": SNOMED, "version": release.version}, concepts, is_a)
        loaded = time.perf_counter() - started
        store = ClosureCodeSystem(root / "snomed.sqlite")
        pairs = store._conn.execute("SELECT COUNT(*) FROM closure").fetchone()[0]
        depth, links = store._conn.execute("SELECT MAX(level), (SELECT COUNT(*) FROM parent) FROM concept").fetchone()
        out = sys.stdout
        out.write(
            f"release of {count} concepts ({links} is-a links, depth {depth}) written in {written:.0f} s; "
            f"loaded in {loaded:.0f} s ({pairs} closure rows)\n"
        )
        resolver = Layered([_Store(store), BaseContent([])])
        codes: list[str] = []
        for low, high in ((100, 999), (1000, 10_000)):
            subtrees = pick_subtrees(store, args.runs, low, high)
            codes += [c for c, _ in subtrees]
            times = asyncio.run(timed(_expansions(resolver, subtrees), len(subtrees)))
            sizes = [size for _, size in subtrees]
            out.write(
                f"$expand is-a, {len(subtrees)} concepts with {low}-{high} codes below (median "
                f"{statistics.median(sizes):.0f}): {quantiles(times)}\n"
            )

        async def subsumes() -> None:
            store.subsumption(random.choice(codes), random.choice(codes))

        micro = [t * 1000 for t in asyncio.run(timed(subsumes, 2000))]
        out.write(f"$subsumes: p50 {statistics.median(micro):.0f} us\n")
        checked, unchecked = asyncio.run(create_cost(root / "var", args.creates))
        ratio = statistics.median(checked) / statistics.median(unchecked)
        out.write(
            f"create Observation: with binding checks {quantiles(checked)}; without {quantiles(unchecked)}; "
            f"ratio {ratio:.2f}\n"
        )


if __name__ == "__main__":
    main()
