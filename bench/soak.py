"""Soak with kill -9: mixed FHIR and DICOM load against `dermbridge serve`, killed and restarted
on the same data directory every --kill-every seconds, then checked: nothing acknowledged is lost.

    python bench/soak.py                                # 30 minutes, a kill every 60 s (+-25%)
    python bench/soak.py --minutes 3 --kill-every 40 --data-dir /tmp/soak   # keep the data to inspect

The server runs as `make run` starts it (embedded SQLite, authentication, audit trail and
encryption on; the inference worker off, as in the tests' servers), on loopback and free ports,
started by ``tests.server.running_server``; an admin client is made once with the CLI. Each kill
stops the server and its audit loader process at one instant (SIGSTOP to each, then SIGKILL):
a crash of the whole machine's worth of processes, not a shutdown. Then, after a final clean
stop: ``dermbridge audit verify``, and the checks of ``bench/soak_verify.py`` through the API of
the server started once more. Exit status 1 if anything acknowledged is missing or unaudited,
the audit trail does not verify, the server failed to come back, or it answered 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import crash
from bench.soak_ledger import ACKED, UNKNOWN, Ledger
from bench.soak_load import CALLING_AE, DicomClient, FhirClient, Target
from bench.soak_verify import Checker, Findings
from tests.server import Server, cli, create_client, fetch_token, free_port, running_server

START_TIMEOUT_S = 180.0  # a start after a crash recovers the staging log and sweeps .incoming


@dataclass
class Restart:
    at_s: float  # seconds into the soak
    ready_s: float  # from the start (after the kill and a verify) to /metadata answering
    processes: int = 0  # killed at once
    answered: bool = False  # a read of an acknowledged resource answered after the restart
    verified: str = ""  # what `audit verify` said of the data as the crash left it ("" : intact)


@dataclass
class Soak:
    data_dir: Path
    env: dict[str, str]
    client: dict[str, str]
    target: Target
    ledger: Ledger
    log: IO[str]
    restarts: list[Restart] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _server: AbstractContextManager[Server] | None = None
    _drain: threading.Thread | None = None
    server: Server | None = None

    def start(self) -> None:
        """Start the server (blocking) and point the clients at it."""
        starting = running_server(self.data_dir, START_TIMEOUT_S, self.env, admin=False)
        self.server = starting.__enter__()  # a failed start stops its process itself
        self._server = starting
        stdout = self.server.process.stdout
        self._drain = threading.Thread(target=self._copy, args=(stdout,), daemon=True)
        self._drain.start()  # a pipe nobody reads would block the server once full
        self.target.base = self.server.base
        self.target.headers = {"Authorization": f"Bearer {fetch_token(self.server.root, self.client)}"}

    def _copy(self, stream: IO[str] | None) -> None:
        for line in stream or ():
            self.log.write(line)
        self.log.flush()

    def stop(self, kill: bool) -> int:
        """Kill -9 the server and its children, or stop it as Ctrl-C does; blocking."""
        killed = crash(self.server.process.pid) if kill and self.server else 0
        if self._server is not None:
            self._server.__exit__(None, None, None)
        if self._drain is not None:
            self._drain.join(30)
        self._server = self.server = None
        return killed

    async def refresh_token(self) -> None:
        if self.server is not None:
            root = self.server.root
            token = await asyncio.to_thread(fetch_token, root, self.client)
            self.target.headers = {"Authorization": f"Bearer {token}"}

    async def killer(self, every: float, rng: random.Random, started: float) -> None:
        while True:
            wait = every * rng.uniform(0.75, 1.25)
            if time.monotonic() + wait >= self.target.deadline - 5:
                return
            await asyncio.sleep(wait)
            self.target.up.clear()
            t0 = time.monotonic()
            processes = await asyncio.to_thread(self.stop, True)
            intact, said = await asyncio.to_thread(verify_trail, self.data_dir)  # as the crash left it
            t1 = time.monotonic()
            try:
                await asyncio.to_thread(self.start)
            except (RuntimeError, TimeoutError) as exc:
                self.failures.append(f"the server did not come back after kill {len(self.restarts) + 1}: {exc}")
                self.target.deadline = 0  # the clients stop
                return
            restart = Restart(t0 - started, time.monotonic() - t1, processes, verified="" if intact else said)
            restart.answered = await self.answers()
            self.restarts.append(restart)
            print(f"  kill {len(self.restarts)} at {restart.at_s:.0f} s: {processes} processes, back in "
                  f"{restart.ready_s:.1f} s", file=sys.stderr)  # fmt: skip
            self.target.up.set()

    async def answers(self) -> bool:
        """The restarted server reads an acknowledged resource (or any, before the first)."""
        refs = [w.ref for w in self.ledger.writes if w.outcome == ACKED and w.kind == "create" and w.ref]
        path = refs[-1] if refs else "metadata"
        async with httpx2.AsyncClient(timeout=30, headers=self.target.headers) as http:
            try:
                response = await http.get(f"{self.target.base}/{path}")
            except httpx2.HTTPError:
                return False
        return response.status_code in (200, 410)


async def load_and_kill(soak: Soak, args: argparse.Namespace) -> float:
    started = time.monotonic()
    soak.target.deadline = started + args.minutes * 60
    soak.target.up.set()
    fhir = [FhirClient(n, args.seed, soak.target, soak.ledger) for n in range(args.clients)]
    dicom = [DicomClient(n, args.seed, soak.target, soak.ledger) for n in range(max(1, args.clients // 2))]
    killer = asyncio.create_task(soak.killer(args.kill_every, random.Random(args.seed), started))
    await asyncio.gather(*(c.run() for c in fhir), *(c.run() for c in dicom))
    await killer  # it kills no later than 5 s before the deadline; a restart under way finishes
    return (time.monotonic() - started) / 60


def verify_trail(data_dir: Path) -> tuple[bool, str]:
    done = cli("audit", "verify", "--tenant", "default", "--data-dir", str(data_dir))
    text = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode == 0, text[-1] if text else f"exit {done.returncode}"


async def check(soak: Soak, clients: int) -> Findings:
    async with httpx2.AsyncClient(timeout=120, headers=soak.target.headers) as http:
        return await Checker(http, soak.target, soak.ledger, clients).run()


def summary(soak: Soak, minutes: float, findings: Findings, trail: list[tuple[str, bool, str]]) -> str:
    acked, unknown = soak.ledger.counts(ACKED), soak.ledger.counts(UNKNOWN)  # a transaction counts its 3 entries
    kinds = ("create", "update", "delete", "conditional", "transaction", "c-store")
    ready = [r.ready_s for r in soak.restarts]
    rows = [
        ("minutes of load", f"{minutes:.1f}"),
        ("kill -9 (server and audit loader at once)", f"{len(soak.restarts)}"),
        ("start to /metadata after a kill, max s", f"{max(ready):.1f}" if ready else "-"),
        ("server answered after each restart", f"{sum(r.answered for r in soak.restarts)}/{len(soak.restarts)}"),
        (
            "audit verify intact after each kill, before the restart",
            f"{sum(not r.verified for r in soak.restarts)}/{len(soak.restarts)}",
        ),
        *((f"acknowledged {kind}", f"{acked[kind]:,}") for kind in kinds),
        ("unknown outcomes (in flight at a kill)", ", ".join(f"{k} {unknown[k]}" for k in kinds if unknown[k]) or "0"),
        ("  of which found committed", ", ".join(f"{k} {n}" for k, n in findings.committed_unknown.items()) or "0"),
        ("requests refused at connect (server down)", f"{soak.ledger.not_sent:,}"),
        ("reads, searches", f"{soak.ledger.reads:,}, {soak.ledger.searches:,}"),
        ("**acknowledged writes missing**", f"{len(findings.missing)}"),
        ("**committed writes without AuditEvent**", f"{len(findings.unaudited)}"),
        *((f"audit verify ({when})", line if ok else f"FAILED: {line}") for when, ok, line in trail),
        ("unexpected answers", ", ".join(f"{k} x{n}" for k, n in soak.ledger.unexpected.items()) or "0"),
    ]
    lines = ["| soak | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    crashed = [f"kill {n}: {r.verified}" for n, r in enumerate(soak.restarts, 1) if r.verified]
    for title, items in (("missing", findings.missing), ("unaudited", findings.unaudited),
                         ("audit verify after a kill", crashed),
                         ("unexpected", soak.ledger.examples), ("failures", soak.failures)):  # fmt: skip
        lines += [f"\n{title} (first 20 of {len(items)}):", *(f"  {item}" for item in items[:20])] if items else []
    return "\n".join(lines)


def run(args: argparse.Namespace, data_dir: Path) -> bool:
    ledger = Ledger()
    env = {"DERMBRIDGE_DICOM_PORT": str(free_port()), "DERMBRIDGE_DICOM_AE_TENANTS": f'{{"{CALLING_AE}": "default"}}'}
    target = Target(dicom_port=int(env["DERMBRIDGE_DICOM_PORT"]))
    print(f"soak on {data_dir}; server output in {data_dir.parent / 'server.log'}", file=sys.stderr)
    with (data_dir.parent / "server.log").open("a") as log:
        soak = Soak(data_dir, env, create_client(data_dir), target, ledger, log)
        target.refresh_token = soak.refresh_token
        soak.start()
        try:
            minutes = asyncio.run(load_and_kill(soak, args))
        finally:
            soak.stop(kill=False)
        trail = [("after the final clean stop", *verify_trail(data_dir))]
        findings = Findings()
        if not soak.failures:
            soak.start()
            try:
                findings = asyncio.run(check(soak, args.clients))
            finally:
                soak.stop(kill=False)
            trail.append(("after the checks", *verify_trail(data_dir)))
    print(summary(soak, minutes, findings, trail))
    fivexx = [k for k in ledger.unexpected if k.rsplit("-> ", 1)[-1].startswith("5")]
    broken = [r for r in soak.restarts if not r.answered or r.verified]
    return not (findings.missing or findings.unaudited or soak.failures or fivexx or broken
                or not all(ok for _, ok, _ in trail))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of load (default 30)")
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between kills, +-25%% (default 60)")
    parser.add_argument("--clients", type=int, default=4, help="FHIR clients; half as many DICOM clients")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--data-dir", type=Path, help="kept for inspection (default: a temporary one, removed)")
    args = parser.parse_args()
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # aborted associations are expected here
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        ok = run(args, args.data_dir.resolve() / "var")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="dermbridge-soak-"))
        ok = run(args, tmp / "var")
        if ok:
            shutil.rmtree(tmp)
        else:
            print(f"kept {tmp} for inspection", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
