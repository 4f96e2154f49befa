"""The cost of the AI results as DICOM (issue 17): building one image's TID 1500 SR and lesion SEG with
highdicom (``inference.dicom_results.build``) and encoding both as DICOM files, in ms per image. It runs
in the worker's second step, after the findings are committed, so it adds to the full pipeline's time,
never to the findings' latency.

    python bench/dicom_results_bench.py                   # 50 images of 512 x 512
    python bench/dicom_results_bench.py --images 200 --size 1024

In process, one image at a time, the lesion segmented beforehand (the worker reuses the quality gate's
segmentation) and one warm-up build first (highdicom's first call loads its code tables). Storing them
(one tenant transaction each, fsynced) is not included: that is the node's ingest cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dicom_node.derived import encoded
from inference.demo import DEMO_DIR
from inference.dicom_results import AiResultObjects, build
from inference.loaders import load_model
from inference.segmentation import Segmentation, segment
from inference.synthetic import lesion_image, random_spec
from tests.dicom_factories import dermoscopic, with_pixels


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def sources(count: int, size: int) -> list[tuple[Dataset, Segmentation]]:
    rng = np.random.default_rng(42)
    made = []
    for n in range(count):
        pixels = lesion_image(random_spec(rng, size, bool(n % 2)), size, seed=n)
        made.append((with_pixels(dermoscopic(seed=n), pixels), segment(pixels)))
    return made


def creation_ms(count: int = 50, size: int = 512) -> dict[str, Any]:
    """Per image: build (SR + SEG) and encode, in ms (p50, p95, mean) over ``count`` synthetic images."""
    card = load_model(DEMO_DIR).card
    probabilities = [0.3, 0.7]
    inputs = sources(count, size)
    _build(inputs[0], card, probabilities)  # warm-up
    built, written = [], []
    for source, segmentation in inputs:
        started = time.perf_counter()
        objects = _build((source, segmentation), card, probabilities)
        middle = time.perf_counter()
        encoded(objects.sr)
        if objects.seg is not None:
            encoded(objects.seg)
        built.append((middle - started) * 1000)
        written.append((time.perf_counter() - middle) * 1000)
    total = [b + w for b, w in zip(built, written, strict=True)]
    return {name: {"p50": percentile(v, 0.5), "p95": percentile(v, 0.95), "mean": sum(v) / len(v)}
            for name, v in (("build", built), ("encode", written), ("total", total))}  # fmt: skip


def _build(item: tuple[Dataset, Segmentation], card: Any, probabilities: list[float]) -> AiResultObjects:
    source, segmentation = item
    return build(source, card, probabilities, segmentation, server_version="bench", weights_sha256="",
                 lesion="Lesion at Skin structure", lesion_key="lesion-1")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    args = parser.parse_args()
    rows = creation_ms(args.images, args.size)
    print(f"SR + SEG creation, {args.images} images of {args.size} x {args.size} (ms per image)")
    print("| step | p50 | p95 | mean |\n|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['p50']:.1f} | {row['p95']:.1f} | {row['mean']:.1f} |")


if __name__ == "__main__":
    main()
