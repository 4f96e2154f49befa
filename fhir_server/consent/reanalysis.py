"""A Consent that arrives or changes after a patient's images were stored (consent.html): when the
patient's Consents now permit the AI analysis, the images of the patient's open cases go back in
the analysis queue (the package that owns the images says how, through ``requeue``).

An outbox consumer of ``resource.created``/``resource.updated`` on Consent. Idempotent: each
Consent version re-queues at most once (a marker record commits with the events), and the worker
skips images that have their results.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson

from fhir_server.consent.decision import AI_ANALYSIS, decide
from fhir_server.outbox import Subscription
from fhir_server.repository import Repository
from fhir_server.storage.port import Engine, OutboxEvent, Record

log = logging.getLogger(__name__)
PatientRequeue = Callable[[Repository, str], Awaitable[int]]  # (repository in a transaction, patient id) -> images
DONE = "consent.requeued"
TOPICS = ("resource.created", "resource.updated")


class ConsentWatcher:
    """Re-queues a patient's pending images when a permitting Consent arrives."""

    name = "consent-reanalysis"

    def __init__(self, engine: Engine, requeue: PatientRequeue) -> None:
        self.engine = engine
        self.requeue = requeue

    def subscription(self) -> Subscription:
        return Subscription(self.name, TOPICS, self.handle)

    async def handle(self, tenant: str, event: OutboxEvent) -> None:
        payload = event.payload
        if payload.get("type") != "Consent":
            return
        store = await self.engine.tenant(tenant)
        repo = Repository.system(store, reason="re-analysis after a permitting Consent")
        consent = await repo.current("Consent", str(payload["id"]))
        reference = ((consent or {}).get("patient") or {}).get("reference", "")
        if consent is None or consent.get("status") != "active" or not reference.startswith("Patient/"):
            return
        patient_id = reference.removeprefix("Patient/")
        decision = await decide(repo, patient_id, AI_ANALYSIS)
        if not decision.permit:
            return
        marker = f"Consent/{payload['id']}/{payload.get('version')}"
        async with store.transaction() as tx:
            if await tx.get_record(DONE, marker) is not None:
                return
            count = await self.requeue(repo.within(tx), patient_id)
            await tx.put_record(Record(DONE, marker, orjson.dumps({"images": count}), {}))
        log.info("%s permits AI analysis: %d image(s) of Patient/%s re-queued", marker, count, patient_id)
