"""``ValueSet/$expand`` with an ``is-a`` filter over a large synthetic hierarchy (terminology.expansion), in
process: the cost of indexing a code system once and of each expansion after. Not a timed test.

    python bench/terminology_bench.py [--concepts 300000] [--fanout 8] [--runs 20]

The hierarchy is a tree of ``--concepts`` codes, ``--fanout`` children each; each run expands ``is-a``
the largest node on the leftmost path within the 10,000-code expansion bound. Prints the index time and the
expansion p50/p95.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from terminology.codesystem import CodeSystemIndex
from terminology.content import BaseContent
from terminology.expansion import Expander

SYSTEM = "urn:bench:tree"


def code_system(concepts: int, fanout: int) -> dict[str, Any]:
    rows = [{"code": "0", "display": "root"}]
    rows += [
        {
            "code": str(i),
            "display": f"concept {i}",
            "property": [{"code": "parent", "valueCode": str((i - 1) // fanout)}],
        }
        for i in range(1, concepts)
    ]
    return {"resourceType": "CodeSystem", "url": SYSTEM, "status": "active", "content": "complete", "concept": rows}


def subtree_root(index: CodeSystemIndex, bound: int) -> str:
    """The first node on the leftmost path with at most ``bound`` descendants."""
    code = "0"
    while sum(1 for _ in index.descendants(code, 10**7)) > bound:
        code = index.concepts[code].children[0]
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concepts", type=int, default=300_000)
    parser.add_argument("--fanout", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    resource = code_system(args.concepts, args.fanout)
    started = time.perf_counter()
    content = BaseContent([resource])
    index = content.index(SYSTEM)
    assert index is not None
    indexed = time.perf_counter() - started
    root = subtree_root(index, 10_000)
    value_set = {
        "compose": {"include": [{"system": SYSTEM, "filter": [{"property": "concept", "op": "is-a", "value": root}]}]}
    }
    times, size = [], 0
    for _ in range(args.runs):
        started = time.perf_counter()
        size = len(asyncio.run(Expander(content).expand(value_set)))
        times.append((time.perf_counter() - started) * 1000)
    quantiles = statistics.quantiles(times, n=20)
    sys.stdout.write(
        f"{args.concepts} concepts indexed in {indexed:.2f} s; is-a {root} ({size} codes): "
        f"p50 {statistics.median(times):.1f} ms, p95 {quantiles[18]:.1f} ms over {args.runs} runs\n"
    )


if __name__ == "__main__":
    main()
