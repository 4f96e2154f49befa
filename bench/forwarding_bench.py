"""Forwarding throughput to Orthanc (issue 17): instances per second from the outbox to a real Orthanc
(Debian's, on loopback), C-STORE by DermBridge's forwarding SCU (``dicom_node.forwarding``).

    python bench/forwarding_bench.py                        # 200 synthetic images of 512 x 512 RGB per row
    python bench/forwarding_bench.py --images 500

Two rows, each on a fresh server and a fresh Orthanc: the images stored uncompressed and forwarded as they are;
the images stored in JPEG-LS (lossless) and forwarded to an Orthanc that accepts only uncompressed, so each is
decompressed on the way. The images are stored first (STOW-RS, the forwarder stopped), then the clock runs from
the forwarder's start to the last job ``sent``: planning (rules, job records, ``dicom.forward`` events), reading
and opening the sealed objects, the associations (one per batch of 100) and Orthanc's own storing. Encryption
at rest and the audit trail are on, as by default; authentication is off (no HTTP client in the timed part).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dermbridge.app import create_app
from dermbridge.settings import Settings
from dicom_node.forwarding.config import set_forwarding
from dicom_node.forwarding.jobs import JOBS, SENT
from fhir_server.storage.query import FieldMatch, RecordQuery
from inference.synthetic import lesion_image, random_spec
from tests.dicom_factories import dermoscopic, stow_body, with_pixels
from tests.orthanc import UNCOMPRESSED, running_orthanc

SIZE = 512
STOW_BATCH = 20
TIMEOUT_S = 600.0


def images(count: int, syntax: str) -> list[Any]:
    rng = np.random.default_rng(7)
    made = []
    for n in range(count):
        pixels = lesion_image(random_spec(rng, SIZE, bool(n % 2)), SIZE, seed=n)  # a dermoscopic-like scene
        ds = with_pixels(dermoscopic(patient_id=f"FWB-{n % 10}", seed=n, sop_uid=f"2.25.{10**20 + n}"), pixels)
        if syntax != ExplicitVRLittleEndian:
            ds.compress(syntax, pixels)
        made.append(ds)
    return made


def run(count: int, syntax: str, work: Path, **orthanc: Any) -> dict[str, Any]:
    """Store ``count`` images in ``syntax``, then time their forwarding to a fresh Orthanc."""
    with running_orthanc(work / "orthanc", **orthanc) as peer:
        settings = Settings(data_dir=work / "var", auth_enabled=False, dicom_enabled=False, inference_enabled=False,
                            retention_every_hours=0, review_sweep_seconds=0)  # fmt: skip
        app = create_app(settings)
        with TestClient(app) as client:
            forwarder = app.state.forwarder
            client.portal.call(forwarder.stop)
            store = client.portal.call(app.state.engine.tenant, "default")
            config = {"destinations": {"orthanc": peer.destination()}, "rules": [{"destination": "orthanc"}]}
            client.portal.call(set_forwarding, store, config)
            made = images(count, syntax)
            for start in range(0, count, STOW_BATCH):
                body, media = stow_body(*made[start : start + STOW_BATCH])
                response = client.post("/dicomweb/default/studies", content=body, headers={"Content-Type": media})
                assert response.status_code == 200, response.text
            sent_query = RecordQuery(JOBS, (FieldMatch("state", "eq", (SENT,)),), count + 1)
            started = time.perf_counter()
            client.portal.call(forwarder.start)
            while len(client.portal.call(store.find_records, sent_query)) < count:
                assert time.perf_counter() - started < TIMEOUT_S, "forwarding did not finish"
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            client.portal.call(forwarder.stop)
        assert len(peer.get("/instances")) == count
    size = sum(len(ds.PixelData) for ds in made) / count
    return {"images": count, "seconds": elapsed, "per_second": count / elapsed, "pixel_kib": size / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        native = run(args.images, ExplicitVRLittleEndian, Path(work) / "native")
        rows.append(("uncompressed, sent as stored", native))
        decoded = run(args.images, JPEGLSLossless, Path(work) / "jpegls", ae_title="PLAIN",
                      AcceptedTransferSyntaxes=UNCOMPRESSED)  # fmt: skip
        rows.append(("JPEG-LS stored, decompressed for an uncompressed-only Orthanc", decoded))
    print(f"| Objects ({SIZE} x {SIZE} RGB) | Images | Pixel data per image | Seconds | Instances/s |")
    print("|---|---|---|---|---|")
    for name, row in rows:
        print(f"| {name} | {row['images']} | {row['pixel_kib']:.0f} KiB | {row['seconds']:.2f} |"
              f" {row['per_second']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
