"""DELETE of a study, series or instance over DICOMweb (as dcm4chee and the Google Cloud Healthcare API
offer it; PS3.18 leaves deletion to the origin server): the index records, the FHIR resources that name
the objects and the files go together.

In one transaction: the instances' records go; a series or study left empty loses its record, else
its counts are brought up to date; each instance's ``Media`` is deleted, and the images derived from it
(saliency maps, ``partOf`` it) with their ``Binary``; the AI results left without a source image become
``entered-in-error`` (``fhir_links``); the ``ImagingStudy`` loses
the series and instances (and is deleted when none is left); a DICOM "Study Deleted" AuditEvent
(PS3.15 A.5.3.5, DCM 110105) names the caller and the objects. The files are removed once that has
committed (a crash in between leaves files no record names, never a record without its file).
The caller needs delete on ``ImagingStudy`` under a ``user/`` or ``system/`` scope
(``AccessPolicy.delete_dicom``); a study it may not read answers 404 like an absent one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from dicom_node.attributes import INSTANCE, SERIES, STUDY, recorded_patient
from dicom_node.blobs import BlobKey, BlobStore
from dicom_node.fhir_sync import DICOM_UID_SYSTEM
from dicom_node.web.fhir_links import Removed, unlink_deleted
from fhir_server.audit.events import ENTITY_TYPE, OBJECT_ROLE
from fhir_server.audit.trail import AuditTrail
from fhir_server.repository import Repository
from fhir_server.storage.port import Engine, Record, TenantTransaction
from fhir_server.storage.query import FieldMatch, RecordQuery

log = logging.getLogger(__name__)
DCM = "http://dicom.nema.org/resources/ontology/DCM"
MAX_DELETED = 100_000
MAX_DERIVED = 1000  # the patient's Media searched for images derived from a deleted one


class DicomDeletion:
    def __init__(self, engine: Engine, blobs: BlobStore, audit: AuditTrail | None) -> None:
        self.engine, self.blobs, self.audit = engine, blobs, audit

    async def delete(self, tenant: str, records: list[Record], who: str, address: str) -> int:
        """Delete ``records`` (instances of one study, found under the caller's policy); how many went."""
        store = await self.engine.tenant(tenant)
        study = records[0].fields["StudyInstanceUID"][0]
        gone = {r.key: r.fields["SeriesInstanceUID"][0] for r in records}
        async with store.transaction() as tx:
            repo = Repository.system(store, reason="DICOMweb DELETE the caller may do", tx=tx)
            patient = recorded_patient(await tx.get_record(STUDY, study))
            for sop in gone:
                await tx.delete_record(INSTANCE, sop)
            case = _case_of(await tx.get_record(STUDY, study))
            imaging_study = await self._reindex(tx, study, set(gone.values()))
            removed = await _forget_in_fhir(repo, imaging_study, set(gone))
            marked = await unlink_deleted(repo, removed, case)
            if self.audit is not None:
                await self.audit.record_in(store, tx, _event(who, address, study, len(gone), patient, marked))
        for sop, series in gone.items():
            await self.blobs.delete(BlobKey(tenant, study, series, sop))
        log.info("DICOMweb delete: %d instance(s) of a study removed", len(gone))
        return len(gone)

    async def _reindex(self, tx: TenantTransaction, study: str, touched: set[str]) -> str | None:
        """The series' and study's records after the deletion; the study's ImagingStudy id."""
        left = await tx.find_records(RecordQuery(INSTANCE, (_in(study),), limit=MAX_DELETED))
        per_series = {s: sum(1 for r in left if r.fields["SeriesInstanceUID"][0] == s) for s in touched}
        for series, count in per_series.items():
            record = await tx.get_record(SERIES, series)
            if record is not None:
                if count:
                    await tx.put_record(_counted(record, instances=count))
                else:
                    await tx.delete_record(SERIES, series)
        record = await tx.get_record(STUDY, study)
        if record is None:
            return None
        imaging_study: str | None = (orjson.loads(record.body).get("fhir") or {}).get("imaging_study")
        if not left:
            await tx.delete_record(STUDY, study)
            return imaging_study
        series_left = await tx.find_records(RecordQuery(SERIES, (_in(study),), limit=MAX_DELETED))
        modalities = tuple(sorted({m for s in series_left for m in s.fields.get("Modality", ())}))
        counted = _counted(record, series=len(series_left), instances=len(left))
        await tx.put_record(Record(STUDY, study, counted.body, {**counted.fields, "ModalitiesInStudy": modalities}))
        return imaging_study


def _case_of(record: Record | None) -> str | None:
    fhir = orjson.loads(record.body).get("fhir") if record is not None else None
    report = fhir.get("report") if isinstance(fhir, dict) else None
    return report if isinstance(report, str) and report else None


async def _forget_in_fhir(repo: Repository, imaging_study: str | None, sops: set[str]) -> Removed:
    """The Media of the deleted instances go; the ImagingStudy keeps only what is left (imagingstudy.html).
    Returns what was deleted, for the references to it to be marked (``fhir_links``)."""
    removed = Removed()
    images: list[dict[str, Any]] = []
    for sop in sops:
        for media in await repo.find("Media", [("identifier", f"{DICOM_UID_SYSTEM}|urn:oid:{sop}")], 10):
            await repo.delete("Media", str(media.resource["id"]))
            removed.add(f"Media/{media.resource['id']}", f"urn:oid:{sop}", "image")
            images.append(media.resource)
    await _forget_derived(repo, images, removed)
    if imaging_study is None or (current := await repo.current("ImagingStudy", imaging_study)) is None:
        return removed
    study_uid = next((i.get("value") for i in current.get("identifier", []) if i.get("system") == DICOM_UID_SYSTEM),
                     None)  # fmt: skip
    body: dict[str, Any] = dict(current)
    series = [{**s, "instance": [i for i in s.get("instance", []) if i["uid"] not in sops]} for s in body["series"]]
    series = [{**s, "numberOfInstances": len(s["instance"])} for s in series if s["instance"]]
    if not series:
        await repo.delete("ImagingStudy", imaging_study)
        removed.add(f"ImagingStudy/{imaging_study}", str(study_uid or ""), "imaging study")
        return removed
    body["series"] = series
    body["numberOfSeries"] = len(series)
    body["numberOfInstances"] = sum(len(s["instance"]) for s in series)
    codes = {(s["modality"]["system"], s["modality"]["code"]) for s in series}
    body["modality"] = [{"system": system, "code": code} for system, code in sorted(codes)]
    await repo.update(body, resource_type="ImagingStudy", id=imaging_study, server_built=True)
    return removed


async def _forget_derived(repo: Repository, images: list[dict[str, Any]], removed: Removed) -> None:
    """The images made from deleted ones (``partOf`` their Media: the saliency maps, the patient's image with a heat
    map over it) go too, with their Binary: a copy of a deleted image is not kept (derm review 4, H3). One search
    of each patient's Media for all the deleted images (not one per image: dicom review 8)."""
    deleted = {f"Media/{image['id']}" for image in images}
    subjects = sorted({str((image.get("subject") or {}).get("reference") or "") for image in images} - {""})
    for subject in subjects:
        for derived in await repo.find("Media", [("subject", subject)], MAX_DERIVED):
            parts = {str(p.get("reference")) for p in derived.resource.get("partOf") or [] if isinstance(p, dict)}
            if not parts & deleted:
                continue
            url = str((derived.resource.get("content") or {}).get("url") or "")
            if url.startswith("Binary/") and await repo.current("Binary", url.split("/", 1)[1]) is not None:
                await repo.delete("Binary", url.split("/", 1)[1])
            await repo.delete("Media", str(derived.resource["id"]))
            removed.add(f"Media/{derived.resource['id']}", "", "image derived from a deleted image")


def _in(study: str) -> FieldMatch:
    return FieldMatch("StudyInstanceUID", "eq", (study,))


def _counted(record: Record, **counts: int) -> Record:
    body = {**orjson.loads(record.body), **counts}
    return Record(record.collection, record.key, orjson.dumps(body), record.fields)


def _event(who: str, address: str, study: str, count: int, patient: str | None,
           marked: list[str]) -> dict[str, Any]:  # fmt: skip
    """DICOM "Study Deleted" (PS3.15 A.5.3.5) as a FHIR AuditEvent: the caller, the study and its objects."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110105", "display": "DICOM Study Deleted"},
        "subtype": [{"system": "urn:dermbridge:dicomweb", "code": "DELETE"}],
        "action": "D",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": "0",
        "agent": [{"who": {"display": who}, "requestor": True}],
        "source": {"observer": {"display": "DermBridge DICOMweb"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "entity": [{"what": {"identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study}",
                                            "type": {"coding": [{"system": DCM, "code": "110180",
                                                                 "display": "Study Instance UID"}]}}},
                    "type": {"system": ENTITY_TYPE, "code": "2"}, "description": f"{count} instance(s) deleted"}],
    }  # fmt: skip
    if patient:
        role = {"system": OBJECT_ROLE, "code": "1"}
        event["entity"].append(
            {"what": {"reference": f"Patient/{patient}"}, "type": {"system": ENTITY_TYPE, "code": "1"}, "role": role}
        )
    for reference in marked:  # the resources whose references to the deleted objects were marked
        event["entity"].append({"what": {"reference": reference}, "type": {"system": ENTITY_TYPE, "code": "2"},
                                "description": "references to the deleted objects marked"})  # fmt: skip
    if address:
        event["agent"][0]["network"] = {"address": address, "type": "2"}
    return event
