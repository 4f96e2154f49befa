"""The AI pipeline's speed: the demo model alone, and end to end from C-STORE success to the
Observation being searchable, side by side in one run.

    python bench/inference_bench.py                 # CPU (or CUDA when present)
    python bench/inference_bench.py --images 100 --e2e 40

Model phases (in process): per-image latency p50/p95 with batch 1, and images/s at batch 8 and 32,
for the forward pass alone and for the whole per-image work of the worker (decode, forward,
saliency, ABCD analysis, PNG). End to end: a real ``dermbridge serve`` process with the worker in
process; pynetdicom sends one dermoscopic image at a time (the pipeline otherwise idle). The worker
commits the findings first (risk results, diagnosis, Provenance, case conclusion), then the
explanations (saliency map, ABCD); each step writes its AuditEvent after its commit. Every other
image the client stays quiet (a look every 100 ms) and the latencies are those AuditEvents'
``recorded`` times minus the C-STORE success; for the others the client polls every 10 ms (each
poll an audited request that competes with the worker) and the clocks run to the first poll that
finds the risk results, then to the first that finds the saliency map (the full pipeline, which
the single-step worker's figure measured).
Every loop is bounded by a count and a deadline; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from inference.abcd import analyse
from inference.demo import DEMO_DIR
from inference.loaders import load_model
from inference.pipeline import Runner, pick_device, saliency_png
from inference.synthetic import lesion_image, random_spec
from tests.server import running_server

END_TO_END = {  # the end to end rows: the findings first, then the full pipeline (the single-step figure)
    "quiet findings": "**end to end, quiet client: C-STORE success -> risk results committed (findings first)**",
    "quiet full": "end to end, quiet client: C-STORE success -> explanations committed (full pipeline)",
    "polling findings": "end to end, a client polling every 10 ms: C-STORE success -> risk results found",
    "polling full": "end to end, a client polling every 10 ms: C-STORE success -> saliency map found",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def images(count: int, size: int = 512) -> list[np.ndarray]:
    rng = np.random.default_rng(42)
    return [lesion_image(random_spec(rng, size, bool(n % 2)), size, seed=n) for n in range(count)]


def model_rows(runner: Runner, pictures: list[np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    runner.predict(pictures[:2])  # warm up
    single = []
    for picture in pictures:
        t0 = time.perf_counter()
        runner.predict([picture])
        single.append(time.perf_counter() - t0)
    rows.append({"phase": "forward pass, batch 1", "p50_ms": statistics.median(single) * 1000,
                 "p95_ms": percentile(single, 0.95) * 1000, "images_s": 1 / statistics.mean(single)})  # fmt: skip
    for batch in (8, 32):
        t0 = time.perf_counter()
        for start in range(0, len(pictures), batch):
            runner.predict(pictures[start : start + batch])
        elapsed = time.perf_counter() - t0
        rows.append({"phase": f"forward pass, batch {batch}", "images_s": len(pictures) / elapsed})
    whole = []
    for picture in pictures:
        t0 = time.perf_counter()
        prediction = runner.predict([picture])[0]
        saliency_png(picture, runner.saliency(picture, prediction.top))
        analyse(picture, (0.02, 0.02))
        whole.append(time.perf_counter() - t0)
    rows.append({"phase": "worker compute per image, one after another (forward, saliency, ABCD, PNG)",
                 "p50_ms": statistics.median(whole) * 1000, "p95_ms": percentile(whole, 0.95) * 1000,
                 "images_s": 1 / statistics.mean(whole)})  # fmt: skip
    return rows


def end_to_end(count_images: int, pictures: list[np.ndarray]) -> list[dict[str, Any]]:
    from pynetdicom import AE

    from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY
    from tests.dicom_factories import dermoscopic
    from tests.fhir_server.test_consent import AI, consent
    from tests.server import free_port

    dimse = free_port()
    env = {"DERMBRIDGE_INFERENCE_ENABLED": "true", "DERMBRIDGE_DICOM_ANY_AE_TENANT": "default",
           "DERMBRIDGE_DICOM_PORT": str(dimse)}  # fmt: skip
    latencies: dict[str, list[float]] = {key: [] for key in END_TO_END}
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp) / "var", 120, env) as server:
        http = server.http
        body = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": "BENCH"}]}
        patient_id = http.post(f"{server.base}/Patient", json=body).json()["id"]
        permit = {"type": "permit", "purpose": [AI]}
        consent_body = consent(patient_id, permit)
        assert http.post(f"{server.base}/Consent", json=consent_body).status_code == 201
        subject = f"Patient/{patient_id}"
        risk = {"subject": subject, "code": "urn:dermbridge:ai-risk|probability-of-93655004", "_summary": "count"}
        maps = {"subject": subject, "modality": "urn:dermbridge:media|saliency-map", "_summary": "count"}

        def count(resource_type: str, params: dict[str, str]) -> int:
            return int(http.get(f"{server.base}/{resource_type}", params=params).json()["total"])

        def steps_recorded(after: float, deadline: float) -> dict[str, float]:
            """The recorded times of the image's two AuditEvents ("findings ..." and "explanations ..."),
            once both are found later than ``after`` (they are indexed off the request path)."""
            latest = {"subtype": "ai-analysis", "_sort": "-date", "_count": "2"}
            while True:
                entries = http.get(f"{server.base}/AuditEvent", params=latest).json().get("entry", [])
                steps = {e["resource"]["outcomeDesc"].split(" ", 1)[0]:
                         datetime.fromisoformat(e["resource"]["recorded"]).timestamp() for e in entries}  # fmt: skip
                if {"findings", "explanations"} <= steps.keys() and min(steps.values()) > after:
                    return steps
                assert time.perf_counter() < deadline, "the worker's AuditEvents were not found within 30 s"
                time.sleep(0.1)

        ae = AE(ae_title="BENCHSCU")
        ae.add_requested_context(DERMOSCOPIC_PHOTOGRAPHY, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", dimse, ae_title="DERMBRIDGE")
        assert assoc.is_established
        try:
            for n in range(count_images + 2):
                ds = dermoscopic(patient_id="BENCH", seed=n, accession=f"B{n}")
                picture = pictures[n % len(pictures)]
                ds.Rows, ds.Columns = picture.shape[:2]
                ds.PixelData = picture.tobytes()
                ds.PixelSpacing = [0.02, 0.02]
                ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
                quiet = n % 2 == 0  # alternate: a quiet client, then one polling every 10 ms
                pause = 0.1 if quiet else 0.01
                status = assoc.send_c_store(ds)
                acknowledged, wall = time.perf_counter(), time.time()
                assert status.Status == 0, status
                deadline = acknowledged + 30
                while count("Observation", risk) < n + 1:
                    assert time.perf_counter() < deadline, "no risk result within 30 s"
                    time.sleep(pause)
                found = time.perf_counter()
                while count("Media", maps) < n + 1:
                    assert time.perf_counter() < deadline, "no saliency map within 30 s"
                    time.sleep(pause)
                explained = time.perf_counter()
                if n < 2:  # the first two warm the worker up
                    continue
                if quiet:  # each step's AuditEvent is recorded after its commit
                    recorded = steps_recorded(wall, deadline)  # the previous image's were before it
                    latencies["quiet findings"].append(recorded["findings"] - wall)
                    latencies["quiet full"].append(recorded["explanations"] - wall)
                else:
                    latencies["polling findings"].append(found - acknowledged)
                    latencies["polling full"].append(explained - acknowledged)
        finally:
            assoc.release()
    return [{"phase": phase, "n": len(latencies[key]), "p50_ms": statistics.median(latencies[key]) * 1000,
             "p95_ms": percentile(latencies[key], 0.95) * 1000} for key, phase in END_TO_END.items()]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| phase | p50 ms | p95 ms | images/s |", "|---|---:|---:|---:|"]
    for row in rows:
        cells = [f"{row[k]:.1f}" if k in row else "" for k in ("p50_ms", "p95_ms", "images_s")]
        lines.append(f"| {row['phase']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="images for the model phases")
    parser.add_argument("--e2e", type=int, default=30, help="images sent one by one end to end (0: skip)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = pick_device(args.device)
    pictures = images(args.images)
    runner = Runner(load_model(DEMO_DIR), device)
    rows = model_rows(runner, pictures)
    if args.e2e:
        rows.extend(end_to_end(args.e2e, pictures))
        for row in rows[-4:]:
            row["vs forward pass"] = row["p50_ms"] / rows[0]["p50_ms"]
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    print(table(rows))
    if args.e2e:
        quiet = rows[-4]["p50_ms"]
        print(
            f"findings first p50 (quiet): {quiet:.1f} ms, aim 50 ms: {'met' if quiet < 50 else 'missed'}; "
            f"{rows[-4]['vs forward pass']:.1f}x the bare forward pass (batch 1)"
        )
    print(json.dumps({"device": str(device), "rows": rows}))


if __name__ == "__main__":
    main()
