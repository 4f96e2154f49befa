"""The server's own DICOM objects stored into a study (IHE AI Results: the AI results as SR and SEG, built by
``inference.dicom_results``): new series of the study of the images they were derived from, filed under the
study's patient, durable and indexed like any ingested instance (``dicom_node.ingest``: staged and fsynced,
published and indexed in one tenant transaction, sealed under the patient's key when encryption is on), so
C-FIND, QIDO-RS, C-GET, C-MOVE and WADO-RS find them, and listed in the study's ImagingStudy.

What ingest does beside that is left out on purpose: no patient matching (the study's patient is known), no
identity review, no Media, lesion or case, and no ``imaging.instance-stored`` event (the AI never analyses
its own results): an ``imaging.derived-stored`` event instead, for forwarding (``dicom_node.forwarding``). The
study's indexed attributes stay those of its images. A SOP Instance UID already
stored is left as it is (the objects' UIDs are deterministic: a redelivered event stores nothing twice).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.attributes import INSTANCE, STUDY, IndexedInstance, index_instance, recorded_patient
from dicom_node.blobs import BlobKey, BlobStore
from dicom_node.fhir_sync import SyncResult, add_derived_instance
from dicom_node.forwarding.events import DERIVED_STORED, DerivedOrigin, DerivedStored
from dicom_node.ingest import index_records
from dicom_node.instance_files import new_object_key, seal_object, seal_object_key
from dicom_node.iod import check_ai_result
from dicom_node.sop_classes import AI_RESULT_CLASSES
from fhir_server.repository import Repository
from fhir_server.storage.port import Record, TenantStore

REASON = "DICOM AI results"  # the named system context of these writes
AI_RESULT = DerivedOrigin()  # an AI result whose source and outcome are not given


@dataclass(frozen=True, slots=True)
class StudyHome:
    """Where a derived object goes: the FHIR resources of the study it was derived from."""

    patient_id: str
    imaging_study_id: str
    report_id: str


Linked = Callable[[Repository], Awaitable[None]]  # more FHIR writes in the same transaction


def encoded(ds: Dataset) -> bytes:
    """The object as a DICOM file (PS3.10), in its own transfer syntax."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _study_as_indexed(indexed: IndexedInstance, study: Record) -> IndexedInstance:
    """The study level as its images made it: a derived object does not rewrite the study's attributes."""
    attributes = orjson.loads(study.body).get("attributes", {})
    fields = {k: v for k, v in study.fields.items() if k != "ModalitiesInStudy"}
    kept = Record(STUDY, study.key, orjson.dumps(attributes), fields)
    return IndexedInstance(indexed.study_uid, indexed.series_uid, indexed.instance_uid, kept, indexed.series,
                           indexed.instance)  # fmt: skip


class UidTaken(RuntimeError):
    """An AI result object's UID is held by an object a peer stored (its UIDs are derived from the image's:
    a peer could store one first); the failure is recorded, never a silent skip."""


async def store_derived(
    store: TenantStore, blobs: BlobStore, ds: Dataset, home: StudyHome, *, title: str, linked: Linked | None = None,
    audit: Callable[[Any], Awaitable[None]] | None = None, origin: DerivedOrigin = AI_RESULT,
) -> bool:  # fmt: skip
    """Store ``ds`` into its study (which must be on record); False when it was stored already (``UidTaken``
    when another object holds its UID). ``linked``
    runs in the same transaction (the FHIR links to it), ``audit`` too (with the transaction); ``origin``: what
    the object is, for the tenant's forwarding rules."""
    data = await asyncio.to_thread(encoded, ds)
    ds = await asyncio.to_thread(dcmread, io.BytesIO(data))  # indexed as stored (plain values, as a peer sends them)
    check_ai_result(ds)
    indexed = index_instance(ds, str(ds.file_meta.TransferSyntaxUID), len(data))
    key = new_object_key() if store.encryption is not None else None
    payload = seal_object(data, key, indexed.instance_uid) if key is not None else data
    staged = await blobs.stage(store.name, payload)
    published = False
    try:
        async with store.transaction() as tx:
            study = await tx.get_record(STUDY, indexed.study_uid)
            if study is None:
                raise LookupError(f"study {indexed.study_uid} is not on record")
            held = await tx.get_record(INSTANCE, indexed.instance_uid)
            if held is not None:
                if str((held.fields.get("SOPClassUID") or ("",))[0]) in AI_RESULT_CLASSES:
                    return False  # stored by an earlier delivery (only the server stores these classes)
                raise UidTaken(f"the UID {indexed.instance_uid} of the AI's {title} is held by another object "
                               f"(SOP class {(held.fields.get('SOPClassUID') or ('?',))[0]}): not stored")  # fmt: skip
            patient = recorded_patient(study) or home.patient_id  # the node's own record of whose study it is
            repo = Repository.system(store, reason=REASON, tx=tx)
            await add_derived_instance(repo, ds, home.imaging_study_id, title)
            if linked is not None:
                await linked(repo)
            sealed = await seal_object_key(tx, patient, key, indexed.instance_uid) if key else None
            so_far: dict[str, Any] = orjson.loads(study.body)
            sync = SyncResult(patient, home.imaging_study_id, "", home.report_id)
            await index_records(tx, _study_as_indexed(indexed, study), study, so_far, sync, new_instance=True,
                                object_key=sealed)  # fmt: skip
            if audit is not None:
                await audit(tx)
            await tx.append_event(DERIVED_STORED, DerivedStored(
                indexed.study_uid, indexed.series_uid, indexed.instance_uid, str(ds.SOPClassUID), patient, origin.kind,
                origin.source, origin.outcome).payload())  # fmt: skip
            target = BlobKey(store.name, indexed.study_uid, indexed.series_uid, indexed.instance_uid)
            await blobs.publish(staged, target)
            published = True
    finally:
        if not published:
            await blobs.discard(staged)
    return True
