"""The DICOM studies of a Patient: those the node filed under it at ingest (``attributes.PATIENT_FIELD``
of the study records), and, for study records written before that field, the Study Instance UIDs of its
ImagingStudy resources (``identifier`` ``urn:dicom:uid``, imagingstudy.html#notes) that the study
record confirms."""

from __future__ import annotations

from dicom_node.attributes import PATIENT_FIELD, STUDY, recorded_patient
from dicom_node.fhir_sync import DICOM_UID_SYSTEM
from fhir_server.repository import Repository
from fhir_server.storage.query import FieldMatch, RecordQuery

MAX_STUDIES = 10_000


async def patient_study_uids(repo: Repository, patient_id: str) -> list[str]:
    reader = repo.transaction or repo.store
    filed = await reader.find_records(
        RecordQuery(STUDY, (FieldMatch(PATIENT_FIELD, "eq", (patient_id,)),), MAX_STUDIES)
    )
    uids = [record.key for record in filed]
    for study in await repo.find("ImagingStudy", [("subject", f"Patient/{patient_id}")], MAX_STUDIES):
        for identifier in study.resource.get("identifier", []):
            value = identifier.get("value", "")
            if identifier.get("system") != DICOM_UID_SYSTEM or not value.startswith("urn:oid:"):
                continue
            uid = value.removeprefix("urn:oid:")
            if uid not in uids and recorded_patient(await reader.get_record(STUDY, uid)) == patient_id:
                uids.append(uid)
    return uids
