"""From stored objects to deliveries: each ``imaging.instance-stored`` and ``imaging.derived-stored`` event is
matched against the tenant's rules (``config``), and each destination it goes to gets a job record and a
``dicom.forward`` event, in one transaction (at least once: a redelivered event finds its jobs and adds none).

An image's calling AE title is kept (``ORIGINS``) when a rule names one, so that an AI result derived from the
image later can be matched by it too. An AI result's event carries the outcome the model called for its source
image: rules naming outcomes send the image then, with its results.
"""

from __future__ import annotations

import logging

import orjson

from dicom_node.attributes import INSTANCE
from dicom_node.forwarding.config import Candidate, Destination, Forwarding
from dicom_node.forwarding.events import AI_RESULTS, FORWARD, IMAGES, INSTANCE_STORED, DerivedStored, ForwardRequested
from dicom_node.forwarding.jobs import ForwardedObject, job_key, open_job
from fhir_server.storage.port import OutboxEvent, Record, TenantTransaction

log = logging.getLogger(__name__)
ORIGINS = "dicom.forward-origin"  # image SOP Instance UID -> the AE title that sent it
Planned = list[tuple[Destination, ForwardedObject]]


async def _calling_ae(tx: TenantTransaction, instance: str) -> str | None:
    record = await tx.get_record(ORIGINS, instance)
    return None if record is None else str(orjson.loads(record.body).get("callingAE") or "") or None


async def _image(tx: TenantTransaction, instance: str) -> ForwardedObject | None:
    record = await tx.get_record(INSTANCE, instance)
    if record is None:
        return None
    fields = record.fields
    sop_class = (fields.get("SOPClassUID") or ("",))[0]
    return ForwardedObject(fields["StudyInstanceUID"][0], fields["SeriesInstanceUID"][0], instance, sop_class, IMAGES)


async def _image_stored(tx: TenantTransaction, payload: dict[str, object], forwarding: Forwarding) -> Planned:
    instance, ae = str(payload.get("instance", "")), str(payload.get("callingAE") or "") or None
    if ae and forwarding.names_calling_ae:
        await tx.put_record(Record(ORIGINS, instance, orjson.dumps({"callingAE": ae}), {}))
    image = ForwardedObject(str(payload.get("study", "")), str(payload.get("series", "")), instance,
                            str(payload.get("sopClass", "")), IMAGES, str(payload.get("digest") or ""))  # fmt: skip
    return [(d, image) for d in forwarding.targets(Candidate(IMAGES, image.sop_class, ae, None))]


async def _derived_stored(tx: TenantTransaction, derived: DerivedStored, forwarding: Forwarding) -> Planned:
    ae = await _calling_ae(tx, derived.source) if derived.source and forwarding.names_calling_ae else None
    outcome = derived.outcome or None
    made = ForwardedObject(derived.study, derived.series, derived.instance, derived.sop_class, derived.kind)
    planned = [(d, made) for d in forwarding.targets(Candidate(derived.kind, derived.sop_class, ae, outcome))]
    if derived.kind == AI_RESULTS and derived.source and outcome is not None:
        image = await _image(tx, derived.source)
        if image is not None:
            wanted = Candidate(IMAGES, image.sop_class, ae, outcome)
            planned += [(d, image) for d in forwarding.targets(wanted, outcome_rules_only=True)]
    return planned


async def plan(tx: TenantTransaction, event: OutboxEvent, forwarding: Forwarding) -> int:
    """The jobs ``event`` calls for under ``forwarding``, opened in ``tx``; returns how many are new."""
    try:
        if event.topic == INSTANCE_STORED:
            planned = await _image_stored(tx, event.payload, forwarding)
        else:
            planned = await _derived_stored(tx, DerivedStored.of(event.payload), forwarding)
    except (KeyError, TypeError, ValueError, IndexError):  # an event this node cannot read blocks no other
        log.exception("forwarding: event %s (%s) cannot be planned; skipped", event.seq, event.topic)
        return 0
    opened = 0
    for destination, obj in planned:
        if await open_job(tx, destination, obj, forwarding.max_attempts):
            job = job_key(destination.name, obj.instance)
            await tx.append_event(FORWARD, ForwardRequested(job, destination.name, obj.instance).payload())
            opened += 1
    return opened
