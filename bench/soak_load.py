"""The soak's mixed load: FHIR clients (creates, updates with If-Match, deletes, conditional creates,
transaction Bundles, reads, searches) and DICOM C-STORE clients, each recording into the ledger.

Every request has a timeout; every loop ends at the soak's deadline. A request refused at connect
never reached the server (it was down); one that failed after it was sent has an unknown outcome.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from bench.soak_ledger import KEY_SYSTEM, UNKNOWN, WRITE_SYSTEM, Ledger, Resource, Write
from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY
from tests.dicom_factories import ROOT, dermoscopic
from tests.factories import observation, patient

REQUEST_TIMEOUT_S = 30.0
CALLING_AE = "SOAKSCU"


@dataclass
class Target:
    """Where the server answers now (its HTTP port changes with each start), and whether it is up."""

    base: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    dicom_port: int = 0
    up: asyncio.Event = field(default_factory=asyncio.Event)
    deadline: float = 0.0
    refresh_token: Callable[[], Awaitable[None]] | None = None

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    async def wait_up(self) -> bool:
        """Wait until the server is up again (bounded by the deadline); False once the soak is over."""
        while not self.up.is_set():
            if not self.running():
                return False
            await asyncio.sleep(0.1)
        return self.running()


def marked(resource: dict[str, Any], marker: str, key: str | None = None) -> dict[str, Any]:
    identifiers = [{"system": WRITE_SYSTEM, "value": marker}]
    if key is not None:
        identifiers.append({"system": KEY_SYSTEM, "value": key})
    return {**resource, "identifier": identifiers}


def version_of(response: httpx2.Response) -> int:
    etag = response.headers.get("etag", "")
    return int(etag.removeprefix("W/").strip('"'))


class FhirClient:
    """One client's loop: it owns the resources it creates and writes them one request at a time."""

    def __init__(self, number: int, seed: int, target: Target, ledger: Ledger) -> None:
        self.number = number
        self.rng = random.Random(seed * 1000 + number)
        self.target = target
        self.ledger = ledger
        self.patients: list[str] = []
        self.observations: list[str] = []
        self.keys: list[str] = []
        self.sequence = 0

    def marker(self) -> str:
        self.sequence += 1
        return f"c{self.number}-{self.sequence}"

    async def run(self) -> None:
        limits = httpx2.Limits(max_connections=2, max_keepalive_connections=2)
        async with httpx2.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
            self.http = http
            while await self.target.wait_up():
                await self.step()

    async def step(self) -> None:
        if len(self.patients) < 2:
            return await self.create("Patient")
        operations: list[tuple[Callable[[], Awaitable[None]], int]] = [
            (lambda: self.create("Patient"), 1), (lambda: self.create("Observation"), 4), (self.update, 4),
            (self.delete, 1), (self.conditional, 2), (self.transaction, 1), (self.read, 3), (self.search, 3),
        ]  # fmt: skip
        choice = self.rng.choices([op for op, _ in operations], [w for _, w in operations])[0]
        await choice()

    async def send(
        self, method: str, path: str, write: Write | None, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx2.Response | None:
        """The answer, or None: refused at connect (not sent), or sent and unanswered (``write`` unknown)."""
        for attempt in range(2):
            try:
                response = await self.http.request(
                    method, f"{self.target.base}/{path}", headers={**self.target.headers, **(headers or {})}, **kwargs
                )
            except httpx2.ConnectError:
                self.ledger.not_sent += 1
                return None
            except httpx2.HTTPError:
                if write is not None:
                    self.ledger.unknown(write)
                return None
            if response.status_code != 401 or attempt or self.target.refresh_token is None:
                return response
            await self.target.refresh_token()  # tokens live 5 minutes; a 401 wrote nothing
        return None

    def expect(self, response: httpx2.Response, *statuses: int) -> bool:
        if response.status_code in statuses:
            return True
        path = response.request.url.path.rsplit("/fhir/", 1)[-1].split("/")
        kind = path[1] if len(path) > 1 and path[1] else "(transaction)"
        what = f"{response.request.method} {kind}{'/id' if len(path) > 2 else ''} -> {response.status_code}"
        self.ledger.odd(what, f"{response.request.url.path}: {response.text}")
        return False

    def own(self, body: dict[str, Any], response: httpx2.Response, write: Write) -> None:
        body = {**body, "id": response.json()["id"]}
        write.ref, write.version = f"{body['resourceType']}/{body['id']}", version_of(response)
        self.ledger.acked(write)
        self.ledger.resources[write.ref] = Resource(write.ref, write.version, body)
        (self.patients if body["resourceType"] == "Patient" else self.observations).append(write.ref)

    def new(self, resource_type: str, marker: str, key: str | None = None) -> dict[str, Any]:
        if resource_type == "Patient":
            return marked(patient(family=f"Soak{self.number}", given=marker), marker, key)
        subject = self.rng.choice(self.patients)
        return marked(observation(subject, value=self.rng.randint(40, 180)), marker, key)

    async def create(self, resource_type: str) -> None:
        marker = self.marker()
        body = self.new(resource_type, marker)
        write = Write("create", resource_type, marker, "pending")
        response = await self.send("POST", resource_type, write, json=body)
        if response is not None and self.expect(response, 201):
            self.own(body, response, write)

    def writable(self) -> Resource | None:
        candidates = [r for r in (self.observations + self.patients)[-200:] if self.live(r)]
        return self.ledger.resources[self.rng.choice(candidates)] if candidates else None

    def live(self, ref: str) -> bool:
        resource = self.ledger.resources[ref]
        return not (resource.deleted or resource.uncertain)

    async def update(self) -> None:
        resource = self.writable()
        if resource is None:
            return
        marker = self.marker()
        body = {**marked(resource.body, marker, self.key_of(resource.body)), "id": resource.ref.split("/")[1]}
        write = Write("update", resource.ref.split("/")[0], marker, "pending", ref=resource.ref)
        response = await self.send(
            "PUT", resource.ref, write, json=body, headers={"If-Match": f'W/"{resource.version}"'}
        )
        if response is not None and self.expect(response, 200):
            write.version = version_of(response)
            self.ledger.acked(write)
            resource.version, resource.body = write.version, body

    @staticmethod
    def key_of(body: dict[str, Any]) -> str | None:
        return next((i["value"] for i in body.get("identifier", []) if i["system"] == KEY_SYSTEM), None)

    async def delete(self) -> None:
        # a conditional create's resource stays: its key must keep matching it
        live = [r for r in self.observations[-200:] if self.live(r) and not self.key_of(self.ledger.resources[r].body)]
        if not live:
            return
        resource = self.ledger.resources[self.rng.choice(live)]
        write = Write("delete", "Observation", "", "pending", ref=resource.ref)
        response = await self.send("DELETE", resource.ref, write)
        if response is not None and self.expect(response, 200, 204):
            self.ledger.acked(write)
            resource.deleted = True

    async def conditional(self) -> None:
        """POST with If-None-Exist on a key: a new key creates, a known one must answer its resource."""
        again = self.keys and self.rng.random() < 0.3
        key = self.rng.choice(self.keys) if again else f"k{self.number}-{self.sequence}"
        marker = self.marker()
        body = self.new("Observation", marker, key)
        write = Write("conditional", "Observation", marker, "pending")
        response = await self.send(
            "POST", "Observation", write, json=body, headers={"If-None-Exist": f"identifier={KEY_SYSTEM}|{key}"}
        )
        if response is None or not self.expect(response, 200, 201):
            return
        if response.status_code == 201:
            if key in self.ledger.keys:
                self.ledger.odd("conditional create made a second resource", f"key {key}: {response.text}")
            self.own(body, response, write)
            self.ledger.keys[key] = write.ref or ""
            self.keys.append(key)
        elif (found := f"Observation/{response.json().get('id')}") != self.ledger.keys.get(key, found):
            self.ledger.odd("conditional create matched another resource", f"key {key}: {found}")

    async def transaction(self) -> None:
        """A Patient and two Observations referencing it by its urn:uuid, in one transaction."""
        markers = [self.marker() for _ in range(3)]
        full_url = f"urn:uuid:{uuid.uuid4()}"
        bodies = [self.new("Patient", markers[0])]
        bodies += [marked(observation(full_url, value=self.rng.randint(40, 180)), m) for m in markers[1:]]
        urls = [full_url] + [f"urn:uuid:{uuid.uuid4()}" for _ in bodies[1:]]
        entries = [{"fullUrl": url, "resource": body, "request": {"method": "POST", "url": body["resourceType"]}}
                   for url, body in zip(urls, bodies, strict=True)]  # fmt: skip
        writes = [
            Write("transaction", b["resourceType"], m, "pending", group=markers[0])
            for b, m in zip(bodies, markers, strict=True)
        ]
        response = await self.send(
            "POST", "", writes[0], json={"resourceType": "Bundle", "type": "transaction", "entry": entries}
        )
        if writes[0].outcome == UNKNOWN:
            for write in writes[1:]:
                self.ledger.unknown(write)
        if response is None or not self.expect(response, 200):
            return
        for body, write, entry in zip(bodies, writes, response.json()["entry"], strict=True):
            location = entry["response"]["location"]  # Type/id/_history/n
            resource_type, id, _, version = location.split("/")[-4:]
            body = {**body, "id": id}
            if body["resourceType"] == "Observation":
                body["subject"] = {"reference": f"Patient/{writes[0].ref.split('/')[1] if writes[0].ref else ''}"}
            write.ref, write.version = f"{resource_type}/{id}", int(version)
            self.ledger.acked(write)
            self.ledger.resources[write.ref] = Resource(write.ref, write.version, body)
            (self.patients if resource_type == "Patient" else self.observations).append(write.ref)

    async def read(self) -> None:
        ref = self.rng.choice(self.observations or self.patients)
        response = await self.send("GET", ref, None)
        if response is not None:
            self.ledger.reads += 1
            resource = self.ledger.resources[ref]
            expected = self.expect(response, 410 if resource.deleted else 200, 410)
            if expected and response.status_code == 200 and version_of(response) < resource.version:
                self.ledger.odd("read an older version than acknowledged", f"{ref}: {response.text}")

    async def search(self) -> None:
        if self.rng.random() < 0.5:
            path, params = "Observation", {"subject": self.rng.choice(self.patients), "_count": "20"}
        else:
            path, params = "Patient", {"family": f"Soak{self.number}", "_count": "20"}
        response = await self.send("GET", path, None, params=params)
        if response is not None:
            self.ledger.searches += 1
            self.expect(response, 200)


class DicomClient:
    """C-STOREs of new studies (1-3 dermoscopic images) into a few patients, one association each."""

    def __init__(self, number: int, seed: int, target: Target, ledger: Ledger) -> None:
        self.number = number
        self.rng = random.Random(seed * 1000 + 500 + number)
        self.target = target
        self.ledger = ledger
        self.ae = AE(ae_title=CALLING_AE)
        self.ae.add_requested_context(DERMOSCOPIC_PHOTOGRAPHY, ExplicitVRLittleEndian)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = REQUEST_TIMEOUT_S
        self.ae.connection_timeout = 5

    async def run(self) -> None:
        while await self.target.wait_up():
            await asyncio.to_thread(self.store_study)

    def store_study(self) -> None:
        patient_id = f"SOAK{self.number}-{self.rng.randrange(3)}"
        study = generate_uid(ROOT)
        images = [dermoscopic(patient_id=patient_id, patient_name=f"SOAK^P{patient_id}", study_uid=study,
                              accession=f"A{self.rng.randrange(10**8)}", seed=self.rng.randrange(1000))
                  for _ in range(self.rng.randint(1, 3))]  # fmt: skip
        assoc = self.ae.associate("127.0.0.1", self.target.dicom_port, ae_title="DERMBRIDGE")
        if not assoc.is_established:
            self.ledger.not_sent += 1
            time.sleep(0.2)  # refused or down: the controller is restarting it
            return
        try:
            for ds in images:
                write = Write("c-store", "DICOM", str(ds.SOPInstanceUID), "pending", study=study)
                if not assoc.is_established:
                    break
                status = assoc.send_c_store(ds)
                code = status.get("Status") if status else None
                if code == 0x0000:
                    self.ledger.acked(write)
                elif code is None:
                    self.ledger.unknown(write)  # no answer: the association died with the server
                    break
                else:
                    self.ledger.odd(f"C-STORE -> 0x{code:04X}", str(status.get("ErrorComment", "")))
        finally:
            if assoc.is_established:
                assoc.release()
