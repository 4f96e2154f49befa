"""The DICOM side of a patient's erasure: the studies of the patient's ImagingStudy resources lose
their attribute index records (where names, dates and identifiers sit in clear), their forwarding jobs and
origins (``dicom_node.forwarding``: UIDs and AE titles) and their objects."""

from __future__ import annotations

import logging

from dicom_node.attributes import INSTANCE, SERIES, STUDY
from dicom_node.blobs import BlobStore
from dicom_node.forwarding.jobs import JOBS
from dicom_node.forwarding.planner import ORIGINS
from dicom_node.patient_studies import patient_study_uids
from fhir_server.repository import Repository
from fhir_server.storage.query import FieldMatch, RecordQuery

log = logging.getLogger(__name__)


class DicomErasure:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def __call__(self, repo: Repository, patient_id: str) -> None:
        tx = repo.transaction
        assert tx is not None, "erasure runs in a transaction"
        for uid in await patient_study_uids(repo, patient_id):
            for collection in (INSTANCE, SERIES, JOBS):
                query = RecordQuery(collection, (FieldMatch("StudyInstanceUID", "eq", (uid,)),), limit=1_000_000)
                for record in await tx.find_records(query):
                    await tx.delete_record(collection, record.key)
                    if collection == INSTANCE:
                        await tx.delete_record(ORIGINS, record.key)
            await tx.delete_record(STUDY, uid)
            removed = await self.blobs.remove_study(repo.tenant, uid)
            log.info("erasure: a study's index and %d objects deleted", removed)
