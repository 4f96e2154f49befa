"""Which studies a DICOMweb caller may see. The ``AccessPolicy`` decides (``read_dicom``: read on
ImagingStudy and on Patient, fhir_server.security.policy); under a ``patient/`` decision a study is
visible when the ImagingStudy it is synced to (``identifier`` ``urn:dicom:uid``, imagingstudy.html#notes)
is the launch patient's: its ``subject``, which ingest set to the Patient the PatientID resolved to and
``Patient/$merge`` re-points."""

from __future__ import annotations

from dicom_node.fhir_sync import DICOM_UID_SYSTEM
from dicom_node.patient_studies import patient_study_uids
from fhir_server.repository import Repository
from fhir_server.search.escaping import token


async def searchable_studies(repo: Repository) -> tuple[str, ...] | None:
    """QIDO-RS (PS3.18 10.6): None when every study of the tenant may be searched, else the Study
    Instance UIDs of the launch patient's ImagingStudy resources (a search the policy bounds)."""
    if repo.policy.read_dicom("s") == "all":
        return None
    assert repo.policy.patient is not None  # a patient decision comes with a launch patient
    return tuple(await patient_study_uids(repo, repo.policy.patient))


async def may_read_study(repo: Repository, study_uid: str) -> bool:
    """WADO-RS (PS3.18 10.4): whether the caller may read study ``study_uid``; under a patient/ decision,
    when an ImagingStudy of that UID it may read belongs to the launch patient."""
    if repo.policy.read_dicom("r") == "all":
        return True
    criteria = [("identifier", token(DICOM_UID_SYSTEM, f"urn:oid:{study_uid}"))]
    found = await repo.search_visible(repo.parse(("ImagingStudy",), criteria).query)
    return any(repo.policy.owns(study.resource) for study in found)
