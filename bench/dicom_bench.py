"""DICOM side by side: DermBridge against Orthanc (and dcmtk's storescp as the C floor), one run.

    python bench/dicom_bench.py --count 300 --repeats 1
    python bench/dicom_bench.py --storage postgresql --skip-web   # C-STORE: PostgreSQL vs SQLite vs Orthanc

1. C-STORE ingest, through the vendored peer harness (bench/vendor/peerbench): dcmtk storescu
   on one association and pynetdicom with 4 associations, each peer fresh on an empty store.
2. QIDO-RS latency and WADO-RS retrieve throughput: DermBridge and Orthanc (with its DICOMweb
   plugin) loaded with the same corpus, queried by the same HTTP client.

Prerequisites (Debian): dcmtk, orthanc, orthanc-dicomweb (and orthanc-postgresql for ``--storage
postgresql``). Everything listens on 127.0.0.1; every loop is bounded by a count and a timeout; every server
is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.postgres import throwaway_postgres
from tests.server import create_client, fetch_token

HERE = Path(__file__).resolve().parent
PEERBENCH = HERE / "vendor" / "peerbench"
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ORTHANC_PG_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"
DERMBRIDGE = (
    "env DERMBRIDGE_DICOM_PORT={port} DERMBRIDGE_DICOM_AE_TITLE={aet} DERMBRIDGE_DICOM_ANY_AE_TENANT=default "
    "DERMBRIDGE_BLOB_DIR={store} {python} -m dermbridge serve --port 0 --data-dir {store}.db"
)


def corpus(count: int, size: str) -> Path:
    folder = Path(tempfile.gettempdir()) / "dermbridge-bench" / f"corpus-{size}-{count}"
    if len(list(folder.glob("*.dcm"))) != count:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.dcm"):
            old.unlink()
        subprocess.run([sys.executable, str(PEERBENCH / "make_corpus.py"), "--count", str(count), "--size", size,
                        "--out", str(folder)], check=True, timeout=600)  # fmt: skip
    return folder


def on_postgres(server: str) -> list[str]:
    """peers.py ``--extra`` peers on a fresh database of ``server`` each run: DermBridge on its PostgreSQL engine,
    and Orthanc with its PostgreSQL index plugin when Debian's ``orthanc-postgresql`` is installed."""
    wrapper = f"{{python}} {HERE / 'peer_on_postgres.py'} --server {server}"
    peers = [f"dermbridge-postgresql={wrapper} dermbridge -- {DERMBRIDGE}"]
    if Path(ORTHANC_PG_PLUGIN).exists():
        peers.append(f"orthanc-nodelay-postgresql={wrapper} orthanc --port {{port}} --store {{store}}")
    else:
        print(f"no {ORTHANC_PG_PLUGIN}: Orthanc on PostgreSQL left out (apt-get install orthanc-postgresql)")
    return peers


def ingest(folder: Path, repeats: int, results: Path, extra: list[str]) -> str:
    """C-STORE ingest through peers.py: Orthanc, dcmtk's storescp, DermBridge, and the ``extra`` peers."""
    peers = [f"dermbridge={DERMBRIDGE}", *extra]
    command = [
        sys.executable, str(PEERBENCH / "peers.py"), "--corpus", str(folder), "--repeats", str(repeats),
        "--peers", "orthanc,orthanc-nodelay,storescp", *(a for p in peers for a in ("--extra", p)),
        "--modes", "storescu,pynetdicom", "-k", "4", "--results", str(results), "--timeout", "600",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=True)
    return done.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(argv: list[str], env: dict[str, str], ready_url: str, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (cwd / "server.log").open("wb")
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited: see {cwd / 'server.log'}")
            try:
                if httpx2.get(ready_url, timeout=1).status_code < 500:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{argv[0]} did not start")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def dermbridge(work: Path) -> Iterator[tuple[str, int, dict[str, str]]]:
    """DermBridge as shipped: authentication on, so DICOMweb requests carry an admin token."""
    http, dimse = _free_port(), _free_port()
    env = {"DERMBRIDGE_DICOM_PORT": str(dimse), "DERMBRIDGE_DICOM_ANY_AE_TENANT": "default"}
    argv = [sys.executable, "-m", "dermbridge", "serve", "--port", str(http), "--data-dir", str(work / "db")]
    admin = create_client(work / "db")
    with process(argv, env, f"http://127.0.0.1:{http}/fhir/default/metadata", work):
        token = fetch_token(f"http://127.0.0.1:{http}", admin)
        yield f"http://127.0.0.1:{http}/dicomweb/default", dimse, {"Authorization": f"Bearer {token}"}


@contextmanager
def orthanc(work: Path) -> Iterator[tuple[str, int, dict[str, str]]]:
    http, dimse = _free_port(), _free_port()
    config = {
        "Name": "bench", "DicomAet": "ORTHANC", "DicomPort": dimse, "HttpPort": http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "StorageDirectory": str(work / "store"), "IndexDirectory": str(work / "index"),
        "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False, "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }  # fmt: skip
    path = work / "orthanc.json"
    path.write_text(json.dumps(config))
    with process([ORTHANC, str(path)], {"TCP_NODELAY": "1"}, f"http://127.0.0.1:{http}/system", work):
        yield f"http://127.0.0.1:{http}/dicom-web", dimse, {}


def load(folder: Path, port: int, aet: str) -> None:
    command = ["/usr/bin/storescu", "-aec", aet, "+sd", "127.0.0.1", str(port), str(folder)]
    subprocess.run(command, check=True, timeout=900, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def web_phases(base: str, auth: dict[str, str], headers: list[Any], requests: int) -> dict[str, Any]:
    patients = sorted({str(h.PatientID) for h in headers})
    rng = random.Random(5)
    row: dict[str, Any] = {}
    async with httpx2.AsyncClient(timeout=60, headers=auth) as client:
        latencies = []
        for _ in range(requests):
            t0 = time.perf_counter()
            response = await client.get(f"{base}/studies", params={"PatientID": rng.choice(patients)},
                                        headers={"Accept": "application/dicom+json"})  # fmt: skip
            latencies.append(time.perf_counter() - t0)
            assert response.status_code in (200, 204), response.text
        row["qido_p50_ms"] = statistics.median(latencies) * 1000
        row["qido_p99_ms"] = percentile(latencies, 0.99) * 1000
        sample = [rng.choice(headers) for _ in range(requests)]
        accept = {"Accept": 'multipart/related; type="application/dicom"'}

        async def retrieve(h: Any) -> int:
            url = f"{base}/studies/{h.StudyInstanceUID}/series/{h.SeriesInstanceUID}/instances/{h.SOPInstanceUID}"
            response = await client.get(url, headers=accept)
            assert response.status_code == 200, response.status_code
            return len(response.content)

        for clients in (1, 4):
            queue = iter(sample)
            sizes: list[int] = []

            async def worker(queue: Iterator[Any] = queue, sizes: list[int] = sizes) -> None:
                for h in queue:
                    sizes.append(await retrieve(h))

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(clients)))
            elapsed = time.perf_counter() - t0
            total = sum(sizes)
            row[f"wado_{clients}_inst_s"] = requests / elapsed
            row[f"wado_{clients}_mb_s"] = total / elapsed / 1e6
    return row


def web(folder: Path, requests: int) -> dict[str, dict[str, Any]]:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]
    rows = {}
    for name, server, aet in (("dermbridge", dermbridge, "DERMBRIDGE"), ("orthanc", orthanc, "ORTHANC")):
        with tempfile.TemporaryDirectory() as tmp, server(Path(tmp)) as (base, dimse, auth):
            load(folder, dimse, aet)
            rows[name] = asyncio.run(web_phases(base, auth, headers, requests))
    return rows


def web_table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| server | QIDO p50 ms | QIDO p99 ms | WADO inst/s (1 client) | MB/s | WADO inst/s (4 clients) | MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['qido_p50_ms']:.1f} | {r['qido_p99_ms']:.1f} | {r['wado_1_inst_s']:.0f} | "
            f"{r['wado_1_mb_s']:.0f} | {r['wado_4_inst_s']:.0f} | {r['wado_4_mb_s']:.0f} |"
        )
    d, o = rows["dermbridge"], rows["orthanc"]
    lines.append(
        f"| ratio dermbridge/orthanc | {d['qido_p50_ms'] / o['qido_p50_ms']:.2f}x | | "
        f"{d['wado_1_inst_s'] / o['wado_1_inst_s']:.2f}x | | {d['wado_4_inst_s'] / o['wado_4_inst_s']:.2f}x | |"
    )
    return "\n".join(lines)


def estimate_s(args: argparse.Namespace) -> float:
    """A rough duration on this 2-core machine: a DermBridge peer starts in about 40 s, another in about 5 s, a
    peer ingests about 40 images/s (Orthanc without TCP_NODELAY about 19 on one association); the web part loads
    both servers and runs its requests at about 50/s."""
    on_pg = args.storage == "postgresql"
    dermbridges, others = 1 + on_pg, 3 + on_pg  # + DermBridge and Orthanc on PostgreSQL
    runs = 2 * args.repeats  # storescu, pynetdicom
    per_run = dermbridges * 40 + others * 5 + (dermbridges + others) * args.count / 40
    ingest = 0.0 if args.skip_ingest else runs * per_run
    web_part = 0.0 if args.skip_web else 2 * (40 + args.count / 40) + 2 * 3 * args.requests / 50
    return ingest + web_part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--requests", type=int, default=200, help="QIDO and WADO requests per server")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-web", action="store_true", help="C-STORE ingest only")
    parser.add_argument(
        "--storage",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="postgresql: also DermBridge (and Orthanc) on a throw-away PostgreSQL, side by side in the ingest",
    )
    args = parser.parse_args()
    for tool in ("/usr/bin/storescu", "/usr/bin/storescp", ORTHANC, DICOMWEB_PLUGIN):
        if not Path(tool).exists():
            sys.exit(f"missing {tool}: apt-get install -y dcmtk orthanc orthanc-dicomweb")
    print(f"dicom bench: estimated {estimate_s(args) / 60:.0f} min", file=sys.stderr)
    folder = corpus(args.count, args.size)
    results = Path(tempfile.gettempdir()) / "dermbridge-bench" / f"ingest-{int(time.time())}.jsonl"
    if not args.skip_ingest:
        print("## C-STORE ingest\n")
        with throwaway_postgres() if args.storage == "postgresql" else contextlib.nullcontext() as postgres:
            print(ingest(folder, args.repeats, results, on_postgres(postgres.dsn()) if postgres else []))
    rows = {}
    if not args.skip_web:
        print("\n## QIDO-RS and WADO-RS\n")
        rows = web(folder, args.requests)
        print(web_table(rows))
    print(json.dumps({"count": args.count, "size": args.size, "ingest_results": str(results), "web": rows}))


if __name__ == "__main__":
    shlex.split(DERMBRIDGE)  # the peer command must split cleanly
    main()
