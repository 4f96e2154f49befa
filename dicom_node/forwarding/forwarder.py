"""The forwarding loop (DESIGN data flow 2: "forwarded where the tenant says"): two outbox consumers.

- ``dicom-forwarding-planner`` turns stored objects into jobs (``planner``);
- ``dicom-forwarding-sender`` claims ``dicom.forward`` events, groups them by destination and sends each group
  on its own association, the destinations side by side (``scu``), so one unreachable or refusing PACS delays
  none of the others. A failed attempt is deferred in the outbox (``retrySeconds``, doubling, at most 30
  minutes) until ``maxAttempts``; then, or at once for an object that is gone or erased, the job is ``failed``.
  Each round's attempts per destination and study are one "Export" AuditEvent (``audit``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_node.attributes import INSTANCE, STUDY, recorded_patient
from dicom_node.forwarding.audit import export_event
from dicom_node.forwarding.config import Destination, Forwarding, read_forwarding
from dicom_node.forwarding.events import DERIVED_STORED, FORWARD, INSTANCE_STORED, ForwardRequested
from dicom_node.forwarding.jobs import FAILED, JOBS, PENDING, SENT, Outcome, job_body, record_outcome
from dicom_node.forwarding.planner import plan
from dicom_node.forwarding.scu import Delivery, send
from dicom_node.instance_files import InstanceFiles, ObjectErased
from fhir_server.audit.trail import AuditTrail
from fhir_server.outbox import OutboxLoop
from fhir_server.storage.port import Engine, OutboxEvent, TenantStore

log = logging.getLogger(__name__)
PLANNER, SENDER = "dicom-forwarding-planner", "dicom-forwarding-sender"
PLANNED_TOPICS = (INSTANCE_STORED, DERIVED_STORED)
SENDING_THREADS = 8  # destinations sent to at once; their own threads, so a slow PACS starves no ingest


@dataclass(frozen=True, slots=True)
class Attempt:
    event: OutboxEvent
    request: ForwardRequested
    study: str = ""
    digest: str = ""  # the content its job was for when claimed (``jobs.record_outcome``)


class Forwarder(OutboxLoop):
    name = "dicom-forwarder"

    def __init__(
        self, engine: Engine, files: InstanceFiles, calling_ae: str, audit: AuditTrail | None = None, *,
        lease_seconds: float = 300.0, poll_seconds: float = 1.0, batch: int = 100,
    ) -> None:  # fmt: skip
        super().__init__(engine, poll_seconds)
        self._engine = engine
        self.files = files
        self.calling_ae = calling_ae
        self.audit = audit
        self._lease = lease_seconds
        self._batch = batch
        self._threads = ThreadPoolExecutor(SENDING_THREADS, thread_name_prefix="dicom-forward")

    async def stop(self) -> None:
        await super().stop()
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._threads = ThreadPoolExecutor(SENDING_THREADS, thread_name_prefix="dicom-forward")  # startable again

    async def drain(self) -> int:
        """Plan and send what is due in every tenant, the tenants side by side (one tenant's slow PACS holds up
        no other tenant); returns how many events were handled."""
        names = await self._engine.tenant_names()
        handled = 0
        rounds = await asyncio.gather(*map(self._drain, names), return_exceptions=True)
        for name, done in zip(names, rounds, strict=True):
            if isinstance(done, BaseException):
                log.error("forwarding: tenant %s's round failed; retried next round", name, exc_info=done)
            else:
                handled += done
        return handled

    async def _drain(self, tenant: str) -> int:
        store = await self._engine.tenant(tenant)
        return await self._plan(store) + await self._send(store)

    async def _claimed(self, store: TenantStore, consumer: str, topics: tuple[str, ...]) -> list[OutboxEvent]:
        """Events of ``topics`` due for ``consumer``, the others acknowledged (empty: none left). A claim of
        fewer than a batch took every due event: no second claim to learn that none is left (every FHIR write
        wakes this loop, so that claim was one more statement on the writer per write)."""
        while True:
            events = await store.claim_events(consumer, self._batch, self._lease)
            if not events:
                return []
            await store.ack_events(consumer, [e.seq for e in events if e.topic not in topics])
            wanted = [e for e in events if e.topic in topics]
            if wanted or len(events) < self._batch:
                return wanted

    async def _plan(self, store: TenantStore) -> int:
        handled = 0
        while events := await self._claimed(store, PLANNER, PLANNED_TOPICS):
            forwarding = await read_forwarding(store)
            if forwarding.rules:
                async with store.transaction() as tx:
                    for event in events:
                        await plan(tx, event, forwarding)
            await store.ack_events(PLANNER, [e.seq for e in events])
            handled += len(events)
        return handled

    async def _send(self, store: TenantStore) -> int:
        handled = 0
        while events := await self._claimed(store, SENDER, (FORWARD,)):
            await self._send_round(store, events)
            handled += len(events)
        return handled

    async def _send_round(self, store: TenantStore, events: list[OutboxEvent]) -> None:
        forwarding = await read_forwarding(store)
        by_destination: dict[str, list[Attempt]] = defaultdict(list)
        settled: list[tuple[Attempt, Outcome]] = []
        claimed: set[str] = set()  # a job reopened by a replacing version may have two events in one round
        for event in events:
            request = ForwardRequested.of(event.payload)
            record = await store.get_record(JOBS, request.job)
            if record is None or job_body(record).get("state") != PENDING or request.job in claimed:
                settled.append((Attempt(event, request), Outcome(request.job, "", event.attempts)))  # nothing to do
                continue
            claimed.add(request.job)
            body = job_body(record)
            attempt = Attempt(event, request, str(body.get("study", "")), str(body.get("digest") or ""))
            if request.destination not in forwarding.destinations:
                error = f"destination {request.destination!r} is no longer configured"
                settled.append((attempt, Outcome(request.job, FAILED, event.attempts, error)))
                continue
            by_destination[request.destination].append(attempt)
        rounds = [self._to(store, forwarding, forwarding.destinations[name], attempts)
                  for name, attempts in by_destination.items()]  # fmt: skip
        for outcomes in await asyncio.gather(*rounds):
            settled += outcomes
        await self._settle(store, forwarding, settled)

    async def _to(
        self, store: TenantStore, forwarding: Forwarding, destination: Destination, attempts: list[Attempt]
    ) -> list[tuple[Attempt, Outcome]]:
        """One destination's share of a round: read the objects, send them, judge each delivery."""
        outcomes: list[tuple[Attempt, Outcome]] = []
        items: list[tuple[str, Dataset]] = []
        for attempt in attempts:
            dataset, error = await self._read(store, attempt.request.instance)
            if dataset is None:
                outcomes.append((attempt, Outcome(attempt.request.job, FAILED, attempt.event.attempts, error)))
            else:
                items.append((attempt.request.job, dataset))
        try:
            sending = asyncio.get_running_loop().run_in_executor
            deliveries = await sending(self._threads, send, destination, self.calling_ae, items) if items else []
        except Exception as exc:  # pynetdicom refusing a context, a codec crashing: a failed, retried attempt
            log.exception("forwarding to %s: the round failed", destination.name)
            deliveries = [
                Delivery(job, False, None, f"not sent: {type(exc).__name__}: {exc}"[:500]) for job, _ in items
            ]
        by_job = {a.request.job: a for a in attempts}
        outcomes += [(by_job[d.job], _judged(d, by_job[d.job].event.attempts, forwarding)) for d in deliveries]
        return outcomes

    async def _read(self, store: TenantStore, instance: str) -> tuple[Dataset | None, str]:
        record = await store.get_record(INSTANCE, instance)
        if record is None:
            return None, "the object is no longer stored"
        try:
            return await self.files.read_dataset(store, store.name, record), ""
        except ObjectErased:
            return None, "the object's patient was erased"
        except Exception as exc:  # a missing or unreadable file (pydicom's errors are ValueError, OSError, ...)
            return None, f"the stored object cannot be read: {type(exc).__name__}"

    async def _settle(self, store: TenantStore, forwarding: Forwarding, settled: list[tuple[Attempt, Outcome]]) -> None:
        """The jobs' new states and the round's AuditEvents in one commit; then acks and deferrals."""
        real = [(a, o) for a, o in settled if o.state]
        audited = await _export_events(store, forwarding, self.calling_ae, real) if self.audit is not None else []
        async with store.transaction() as tx:
            for attempt, outcome in real:
                await record_outcome(tx, outcome, attempt.digest)
            for event in audited:
                await self.audit.record_in(store, tx, event)  # type: ignore[union-attr]
        retried = {a.event.seq: o.retry_in for a, o in settled if o.state == PENDING and o.retry_in is not None}
        for seq, seconds in retried.items():
            await store.defer_event(SENDER, seq, seconds)
        await store.ack_events(SENDER, [a.event.seq for a, _ in settled if a.event.seq not in retried])
        for _, outcome in real:
            if outcome.state != SENT:
                log.warning("forwarding %s: %s (attempt %d, %s)", outcome.job, outcome.error, outcome.attempts,
                            outcome.state)  # fmt: skip


def _judged(delivery: Delivery, attempts: int, forwarding: Forwarding) -> Outcome:
    if delivery.stored:
        return Outcome(delivery.job, SENT, attempts, "", delivery.status, delivery.syntax)
    if attempts >= forwarding.max_attempts:
        return Outcome(delivery.job, FAILED, attempts, delivery.error, delivery.status, delivery.syntax)
    return Outcome(delivery.job, PENDING, attempts, delivery.error, delivery.status, delivery.syntax,
                   forwarding.backoff(attempts))  # fmt: skip


async def _export_events(
    store: TenantStore, forwarding: Forwarding, calling_ae: str, settled: Sequence[tuple[Attempt, Outcome]]
) -> list[dict[str, object]]:
    """One "Export" AuditEvent per destination and study of the round's attempts."""
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for attempt, outcome in settled:
        groups[(attempt.request.destination, attempt.study)].append(outcome)
    events = []
    for (name, study), outcomes in groups.items():
        destination = forwarding.destinations.get(name) or Destination(name, name, "", 0)
        patient = recorded_patient(await store.get_record(STUDY, study)) if study else None
        stored = sum(o.state == SENT for o in outcomes)
        errors = sorted({o.error for o in outcomes if o.error})
        events.append(export_event(destination, destination.calling_ae or calling_ae, study, patient, stored,
                                   len(outcomes) - stored, "; ".join(errors)[:500]))  # fmt: skip
    return events
