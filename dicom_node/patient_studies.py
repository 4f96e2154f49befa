"""The DICOM studies of a Patient: the Study Instance UIDs its ImagingStudy resources carry
(``identifier`` ``urn:dicom:uid``, imagingstudy.html#notes)."""

from __future__ import annotations

from dicom_node.fhir_sync import DICOM_UID_SYSTEM
from fhir_server.repository import Repository

MAX_STUDIES = 10_000


async def patient_study_uids(repo: Repository, patient_id: str) -> list[str]:
    uids = []
    for study in await repo.find("ImagingStudy", [("subject", f"Patient/{patient_id}")], MAX_STUDIES):
        for identifier in study.resource.get("identifier", []):
            value = identifier.get("value", "")
            if identifier.get("system") == DICOM_UID_SYSTEM and value.startswith("urn:oid:"):
                uids.append(value.removeprefix("urn:oid:"))
    return uids
