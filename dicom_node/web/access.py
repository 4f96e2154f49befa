"""Which studies a DICOMweb caller may see. The ``AccessPolicy`` decides (``read_dicom``: read on
ImagingStudy and on Patient, fhir_server.security.policy); under a ``patient/`` decision a study is
visible when the node filed it under the launch patient: the Patient its PatientID resolved to at
ingest, kept in the study, series and instance records (``attributes.PATIENT_FIELD``, written by the
server only and re-pointed by ``Patient/$merge``), never a client-writable ImagingStudy identifier."""

from __future__ import annotations

from dicom_node.attributes import STUDY, recorded_patient
from fhir_server.repository import Repository


def searchable_patient(repo: Repository) -> str | None:
    """QIDO-RS (PS3.18 10.6): None when every study of the tenant may be searched, else the launch
    patient, whose records alone the query matches."""
    if repo.policy.read_dicom("s") == "all":
        return None
    assert repo.policy.patient is not None  # a patient decision comes with a launch patient
    return repo.policy.patient


async def may_read_study(repo: Repository, study_uid: str) -> bool:
    """WADO-RS (PS3.18 10.4): whether the caller may read study ``study_uid``; under a patient/ decision,
    when the node filed the study under the launch patient."""
    if repo.policy.read_dicom("r") == "all":
        return True
    return recorded_patient(await repo.store.get_record(STUDY, study_uid)) == repo.policy.patient
