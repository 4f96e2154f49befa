"""Copies the reviewer app's screenshots of the synthetic test case (written by tests/interop/test_reviewer_app.py)
to docs/img/ for the README, scaled to 960 pixels wide, as 128-colour PNGs (each well under 300 KB)."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "tmp" / "screenshots" / "reviewer_app"
LIMIT = 300_000
WIDTH = 960  # of 1280: still readable on a README page


def main() -> int:
    target = ROOT / "docs" / "img"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("worklist", "case"):
        out = target / f"{name}.png"
        shot = Image.open(SHOTS / f"{name}.png").convert("RGB")
        shot = shot.resize((WIDTH, round(shot.height * WIDTH / shot.width)), Image.Resampling.LANCZOS)
        shot.quantize(128).save(out, optimize=True)
        if out.stat().st_size > LIMIT:
            sys.stderr.write(f"{out} is {out.stat().st_size} bytes (more than {LIMIT})\n")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
