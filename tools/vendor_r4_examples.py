"""Vendor the official FHIR R4 examples of the resource types DermBridge profiles into ``tests/data``.

Reads the unpacked ``hl7.fhir.r4.examples`` 4.0.1 FHIR package (``npm pack hl7.fhir.r4.examples@4.0.1``,
FHIR content is CC0) and writes ``tests/data/r4-examples.json.gz``: ``{file name: resource}``.

    python tools/vendor_r4_examples.py path/to/package
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "r4-examples.json.gz"
TYPES = ("BodyStructure", "Consent", "Device", "DiagnosticReport", "ImagingStudy", "Media", "Observation",
         "Provenance", "Task")  # fmt: skip
MAX_BYTES = 100_000  # leaves out DiagnosticReport-gingival-mass (750 kB of embedded PDF)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("package", type=Path)
    package = parser.parse_args().package
    found = {
        path.name: json.loads(path.read_text())
        for path in sorted(package.glob("*.json"))
        if path.name.split("-", 1)[0] in TYPES and path.stat().st_size <= MAX_BYTES
    }
    raw = json.dumps(found, separators=(",", ":"), sort_keys=True).encode()
    OUT.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"wrote {len(found)} examples, {len(raw):,} bytes of JSON")


if __name__ == "__main__":
    main()
