"""The reviewer app's figures (issue 18): the worklist's first paint at ``--open-tasks`` open review Tasks and the
case view with its first image at ``--megapixels`` images, p50 over ``--loads`` loads in Debian's Chromium
(Playwright, ``/usr/bin/chromium``), read from the browser's Performance API.

    python bench/app_bench.py                                          # 10,000 Tasks, 4 MP images (~5 minutes)
    python bench/app_bench.py --open-tasks 200 --megapixels 0.25 --loads 3 --cases 1   # a smoke run

1. A fresh data directory is seeded with the open review Tasks through the repository, 500 per transaction
   (``workflow_bench.seed``: the same Tasks as the workflow figures; a few seconds per thousand).
2. ``dermbridge serve`` starts with the demo model; ``--cases`` consenting patients' images (square, of
   ``--megapixels``, the synthetic lesion generator) are C-STOREd and run through ``ai-then-signoff``: their
   review Tasks are real cases with findings and a saliency map.
3. A reviewer (built-in user directory, a Dermatology PractitionerRole) signs in once; then ``--loads`` times:
   ``/app/`` (the worklist: ``first-contentful-paint`` of the navigation), and a case page until its first
   image is drawn (the rendered image's ``responseEnd`` in Resource Timing, once it has decoded; the page loads
   it at viewport size, ``?viewport=1024,1024``). The first load of each is a warm-up, not counted.

Every wait is bounded by a deadline. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from workflow_bench import percentile, seed  # noqa: E402

from inference.synthetic import lesion_image, random_spec  # noqa: E402
from tests.dicom_factories import dermoscopic  # noqa: E402
from tests.interop.clinic import DERMATOLOGY, SERVER_ENV, Clinic  # noqa: E402
from tests.server import free_port, running_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "a long bench password 42"
DEADLINE_MS = 300_000
FIRST_PAINT = """() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime"""
FIRST_IMAGE = """() => { const img = document.querySelector('img.image');
  if (!img || !img.complete || !img.naturalWidth) return null;
  const entry = performance.getEntriesByType('resource').find(e => e.name === img.currentSrc);
  return entry ? entry.responseEnd : null; }"""


def big_image(path: Path, mrn: str, megapixels: float, n: int) -> Path:
    side = int(math.sqrt(megapixels * 1_000_000))
    ds = dermoscopic(patient_id=mrn, seed=n, accession=mrn)
    pixels = lesion_image(random_spec(np.random.default_rng(n), side, True), side, seed=n)
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PixelData = pixels.tobytes()
    ds.PixelSpacing = [0.01, 0.01]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def reviewer(clinic: Clinic, username: str) -> None:
    practitioner = clinic.post("Practitioner", {"resourceType": "Practitioner", "name": [{"text": username}]})["id"]
    clinic.post("PractitionerRole", {"resourceType": "PractitionerRole", "active": True, "specialty": [DERMATOLOGY],
                                     "practitioner": {"reference": f"Practitioner/{practitioner}"}})  # fmt: skip
    command = [sys.executable, "-m", "dermbridge", "user", "create", "--tenant", "default", "--username", username,
               "--practitioner", practitioner, "--role", "clinician-reviewer", "--password-stdin",
               "--data-dir", str(clinic.data_dir)]  # fmt: skip
    made = subprocess.run(command, input=PASSWORD, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr


def cases(clinic: Clinic, tmp: Path, count: int, megapixels: float) -> list[str]:
    """``count`` real cases through AI-then-sign-off: their review Task ids."""
    tasks = []
    for n in range(count):
        patient = clinic.consenting_patient(f"APPBENCH-{n}")
        clinic.storescu(big_image(tmp / f"case-{n}.dcm", f"APPBENCH-{n}", megapixels, n))
        report, _root = clinic.case(patient)
        tasks.append(str(clinic.review(report["id"])["id"]))
    clinic.settled()
    return tasks


def measure(root: str, tasks: list[str], loads: int) -> tuple[list[float], list[float]]:
    from playwright.sync_api import sync_playwright

    paints, images = [], []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        # every load fetches the image again (a reviewer opens each case once; a memory-cached image would
        # also leave no Resource Timing entry to read)
        context.new_cdp_session(page).send("Network.setCacheDisabled", {"cacheDisabled": True})
        page.goto(f"{root}/app/")
        page.get_by_label("Username").fill("bench")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{root}/app/", timeout=DEADLINE_MS)
        for n in range(loads + 1):
            page.goto(f"{root}/app/", timeout=DEADLINE_MS)
            paint = page.wait_for_function(FIRST_PAINT, timeout=DEADLINE_MS).json_value()
            page.goto(f"{root}/app/cases/{tasks[n % len(tasks)]}", timeout=DEADLINE_MS)
            image = page.wait_for_function(FIRST_IMAGE, timeout=DEADLINE_MS).json_value()
            if n:  # the first of each is a warm-up
                paints.append(float(paint))
                images.append(float(image))
        browser.close()
    return paints, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--open-tasks", type=int, default=10_000, help="open review Tasks seeded")
    parser.add_argument("--megapixels", type=float, default=4.0, help="size of each case's image")
    parser.add_argument("--cases", type=int, default=3, help="real cases (images through the AI)")
    parser.add_argument("--loads", type=int, default=20, help="measured loads of each page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # a server file may still close
        data, dimse = Path(tmp) / "var", free_port()
        started = time.monotonic()
        seeded = asyncio.run(seed(data, args.open_tasks))
        with running_server(data, env={**SERVER_ENV, "DERMBRIDGE_DICOM_PORT": str(dimse)}) as server:
            clinic = Clinic(server, data, dimse)
            clinic.activate("ai-then-signoff")
            reviewer(clinic, "bench")
            tasks = cases(clinic, Path(tmp), args.cases, args.megapixels)
            paints, images = measure(server.root, tasks, args.loads)
    print(f"seeded {args.open_tasks} open review Tasks in {seeded:.1f} s; all in {time.monotonic() - started:.0f} s")
    print("| page | open Tasks | image | n | p50 ms | p95 ms |\n|---|---:|---|---:|---:|---:|")
    for name, values in (("worklist first contentful paint", paints), ("case view, first image drawn", images)):
        print(f"| {name} | {args.open_tasks} | {args.megapixels:g} MP | {len(values)} | "
              f"{percentile(values, 0.5):.0f} | {percentile(values, 0.95):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
