"""The soak's checks, through the API of a server started again on the soak's data directory.

(a) Every acknowledged write is there: each resource at its acknowledged version or later, that
    version (vread) holding the write's marker; deleted ones gone (410); each conditional-create
    key matching one resource at most; every acknowledged C-STORE found by QIDO-RS in its study.
(c) Every committed write has its AuditEvent: acknowledged ones, and unknown ones found to have
    committed after all. FHIR writes (fhir_server/api/http.py ``_write_event``): one AuditEvent of
    subtype create/update/delete whose entity is ``Type/id``; a transaction's one has no entity, so
    transactions are counted. C-STOREs (dicom_node/audit.py): subtype C-STORE, outcome 0, outcomeDesc
    ``C-STORE success: <study>/<SOP Instance UID>``.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx2

from bench.soak_ledger import ACKED, KEY_SYSTEM, WRITE_SYSTEM, Ledger, Write
from bench.soak_load import Target

INTERACTIONS = "http://hl7.org/fhir/restful-interaction"
DIMSE = "urn:dermbridge:dimse"
PAGE = 1000
MAX_PAGES = 10_000


@dataclass
class Findings:
    missing: list[str] = field(default_factory=list)  # acknowledged writes not found as acknowledged
    committed_unknown: Counter[str] = field(default_factory=Counter)  # unknown writes found committed, by kind
    unaudited: list[str] = field(default_factory=list)  # committed writes with no AuditEvent
    audit_events: int = 0


class Checker:
    def __init__(self, http: httpx2.AsyncClient, target: Target, ledger: Ledger, clients: int) -> None:
        self.http, self.target, self.ledger = http, target, ledger
        self.fhir, self.dicomweb = target.base, target.base.replace("/fhir/", "/dicomweb/")
        self.clients = clients
        self.found = Findings()
        self.committed: list[Write] = []  # every write known to have committed
        self.by_ref: defaultdict[str, list[Write]] = defaultdict(list)  # in the order they were answered

    async def run(self) -> Findings:
        for write in self.ledger.writes:
            if write.ref:
                self.by_ref[write.ref].append(write)
        await self.each(self.check_resource, sorted(self.by_ref))
        unknown = [w for w in self.ledger.writes if w.outcome != ACKED and w.ref is None and w.kind != "c-store"]
        await self.each(self.find_unknown_create, unknown)
        await self.each(self.check_key, sorted(self.ledger.keys))
        studies: defaultdict[str, list[Write]] = defaultdict(list)
        for write in self.ledger.writes:
            if write.kind == "c-store":
                studies[write.study].append(write)
        await self.each(self.check_study, list(studies.values()))
        await self.check_audit()
        return self.found

    async def each(self, check: Any, items: list[Any]) -> None:
        queue = iter(items)

        async def worker() -> None:
            for item in queue:
                await check(item)

        await asyncio.gather(*(worker() for _ in range(self.clients)))

    async def get(self, url: str, **params: str) -> httpx2.Response:
        response = await self.http.get(url, params=params or None)
        if response.status_code == 401 and self.target.refresh_token is not None:  # tokens live 5 minutes
            await self.target.refresh_token()
            self.http.headers.update(self.target.headers)
            response = await self.http.get(url, params=params or None)
        if response.status_code >= 500:
            self.found.missing.append(f"GET {url} {params} -> {response.status_code}: {response.text[:300]}")
        return response

    async def check_resource(self, ref: str) -> None:
        writes = self.by_ref[ref]
        acked = [w for w in writes if w.outcome == ACKED]
        self.committed += acked
        unknown = [w for w in writes if w.outcome != ACKED]
        current = await self.get(f"{self.fhir}/{ref}")
        if any(w.kind == "delete" for w in acked):
            if current.status_code != 410:
                self.found.missing.append(f"{ref}: deleted (acknowledged) but answers {current.status_code}")
            return
        last = [w for w in acked if w.version is not None][-1]
        if current.status_code == 410 and any(w.kind == "delete" for w in unknown):
            self.found.committed_unknown["delete"] += 1
            self.committed += [w for w in unknown if w.kind == "delete"]
        elif current.status_code != 200:
            self.found.missing.append(f"{ref}: acknowledged at version {last.version}, answers {current.status_code}")
            return
        elif int(current.json()["meta"]["versionId"]) < (last.version or 0):
            self.found.missing.append(f"{ref}: acknowledged at version {last.version}, "
                                      f"found at {current.json()['meta']['versionId']}")  # fmt: skip
        elif (marker := _marker(current.json())) != last.marker:
            update = [w for w in unknown if w.kind == "update" and w.marker == marker]
            self.found.committed_unknown["update"] += len(update)
            self.committed += update
        held = await self.get(f"{self.fhir}/{ref}/_history/{last.version}")
        if held.status_code != 200 or _marker(held.json()) != last.marker:
            self.found.missing.append(f"{ref}/_history/{last.version}: answers {held.status_code}, "
                                      f"not the acknowledged write {last.marker}")  # fmt: skip

    async def find_unknown_create(self, write: Write) -> None:
        """An unknown create (or transaction entry) committed if its marker is found."""
        found = await self.get(f"{self.fhir}/{write.resource_type}", identifier=f"{WRITE_SYSTEM}|{write.marker}")
        entries = found.json().get("entry", []) if found.status_code == 200 else []
        if len(entries) > 1:
            self.found.missing.append(f"{write.kind} {write.marker}: {len(entries)} resources carry it")
        if entries:
            write.ref = f"{write.resource_type}/{entries[0]['resource']['id']}"
            self.committed.append(write)
            self.found.committed_unknown[write.kind] += 1

    async def check_key(self, key: str) -> None:
        found = await self.get(f"{self.fhir}/Observation", identifier=f"{KEY_SYSTEM}|{key}", _total="accurate")
        if found.status_code != 200 or found.json().get("total") != 1:
            self.found.missing.append(f"conditional key {key}: {found.json().get('total')} resources, not 1")

    async def check_study(self, writes: list[Write]) -> None:
        study = writes[0].study
        found = await self.get(f"{self.dicomweb}/studies/{study}/instances")
        uids = {i["00080018"]["Value"][0] for i in (found.json() if found.status_code == 200 else [])}
        for write in writes:
            if write.marker in uids or write.outcome == ACKED:
                self.committed.append(write)
            if write.marker in uids and write.outcome != ACKED:
                self.found.committed_unknown[write.kind] += 1
            elif write.marker not in uids and write.outcome == ACKED:
                self.found.missing.append(f"C-STORE {study}/{write.marker}: acknowledged, QIDO answers "
                                          f"{found.status_code} without it")  # fmt: skip

    async def audit_events(self, **params: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        url: str | None = f"{self.fhir}/AuditEvent"
        query: dict[str, str] | None = {**params, "_count": str(PAGE)}
        for _ in range(MAX_PAGES):
            if url is None:
                break
            page = await self.get(url, **(query or {}))
            page.raise_for_status()
            bundle = page.json()
            events += [e["resource"] for e in bundle.get("entry", [])]
            url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
            query = None
        return events

    async def check_audit(self) -> None:
        rest = await self.audit_events(subtype=",".join(f"{INTERACTIONS}|{c}" for c in
                                                          ("create", "update", "delete", "transaction")))  # fmt: skip
        stores = await self.audit_events(subtype=f"{DIMSE}|C-STORE")
        self.found.audit_events = len(rest) + len(stores)
        by_entity: Counter[tuple[str, str]] = Counter()
        transactions = 0
        for event in rest:
            if event.get("outcome") != "0":
                continue
            code = event["subtype"][0]["code"]
            transactions += code == "transaction"
            for entity in event.get("entity", []):
                if reference := entity.get("what", {}).get("reference"):
                    by_entity[(reference, code)] += 1
        stored = {e.get("outcomeDesc", "").rsplit("/", 1)[-1] for e in stores if e.get("outcome") == "0"}
        expected: Counter[tuple[str, str]] = Counter()
        for write in self.committed:
            if write.kind == "c-store" and write.marker not in stored:
                self.found.unaudited.append(f"C-STORE {write.study}/{write.marker} ({write.outcome})")
            elif write.kind not in ("c-store", "transaction") and write.ref:
                expected[(write.ref, "create" if write.kind == "conditional" else write.kind)] += 1
        for (ref, code), count in expected.items():
            if by_entity[(ref, code)] < count:
                self.found.unaudited.append(f"{ref}: {count} {code} write(s), {by_entity[(ref, code)]} AuditEvent(s)")
        committed_transactions = len({w.group for w in self.committed if w.kind == "transaction"})
        if transactions < committed_transactions:
            self.found.unaudited.append(f"transactions: {committed_transactions} committed, "
                                        f"{transactions} AuditEvents")  # fmt: skip


def _marker(resource: dict[str, Any]) -> str | None:
    return next((i["value"] for i in resource.get("identifier", []) if i.get("system") == WRITE_SYSTEM), None)
