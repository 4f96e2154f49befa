"""Vendor the terminology base content into ``terminology/data`` (development time only).

- ``fhir-r4.json.gz``: the ValueSets of every required, extensible and preferred binding of the R4 resources
  DermBridge serves (elements of the data types they use included),
  the value sets they include and the CodeSystems they draw on, from ``../shared/fhir-r4``.
- ``dermatology.json``: the hand-checked table in ``tools/dermatology_terms.py`` (SNOMED CT, ICD-10,
  LOINC fragments, the SNOMED CT -> ICD-10 ConceptMap) and DICOM PS3.16 context groups from pydicom's
  code dictionaries (CID 4029, CID 4401, CID 244).

    python tools/vendor_terminology.py [--source ../shared/fhir-r4]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dermatology_terms import dermatology_resources

from fhir_server.definitions import base_bindings, resource_types

OUT = Path(__file__).resolve().parent.parent / "terminology" / "data"
# Code systems R4 carries a dated copy of, which the world has moved past: held as complete, they would make
# newer codes invalid (DICOM's DCM gains codes every release, e.g. 130305 of CID 4029).
OUTDATED_SYSTEMS = ("http://dicom.nema.org/resources/ontology/DCM",)
KEEP = (
    "resourceType",
    "id",
    "url",
    "version",
    "name",
    "title",
    "status",
    "experimental",
    "publisher",
    "description",
    "copyright",
    "caseSensitive",
    "valueSet",
    "hierarchyMeaning",
    "content",
    "count",
    "property",
    "concept",
    "compose",
)


def _entries(source: Path, name: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in json.loads((source / name).read_text())["entry"]]


def _bound_value_sets() -> set[str]:
    """The value sets of every required, extensible and preferred binding of the served types
    (``fhir_server.definitions.base_bindings``: the write-time binding checks use them)."""
    return {binding.value_set for name in resource_types() for binding in base_bindings(name)}


def _trim(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k in KEEP}


def r4_content(source: Path) -> list[dict[str, Any]]:
    """The bound value sets, closed over included value sets and code systems."""
    pool = _entries(source, "valuesets.json") + _entries(source, "v3-codesystems.json")
    value_sets = {r["url"]: r for r in pool if r["resourceType"] == "ValueSet"}
    code_systems = {r["url"]: r for r in pool if r["resourceType"] == "CodeSystem"}
    wanted, systems, seen = list(_bound_value_sets()), set(), set()
    while wanted:
        url = wanted.pop()
        if url in seen or url not in value_sets:
            continue
        seen.add(url)
        for part in (value_sets[url].get("compose") or {}).get("include", []) + (
            (value_sets[url].get("compose") or {}).get("exclude", [])
        ):
            wanted.extend(v.split("|")[0] for v in part.get("valueSet", []))
            if part.get("system") in code_systems:
                systems.add(part["system"])
    chosen = [_trim(value_sets[u]) for u in sorted(seen)]
    chosen += [
        _trim(code_systems[u])
        for u in sorted(systems)
        if code_systems[u].get("content") != "not-present" and u not in OUTDATED_SYSTEMS
    ]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=Path("../shared/fhir-r4"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    r4 = r4_content(args.source)
    raw = json.dumps(r4, separators=(",", ":"), sort_keys=True).encode()
    (OUT / "fhir-r4.json.gz").write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    derm = dermatology_resources()
    (OUT / "dermatology.json").write_text(json.dumps(derm, indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {len(r4)} R4 resources ({len(raw):,} bytes) and {len(derm)} dermatology resources\n")


if __name__ == "__main__":
    main()
