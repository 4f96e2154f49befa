"""The DICOM side of a patient's erasure: the studies of the patient's ImagingStudy resources lose
their attribute index records (where names, dates and identifiers sit in clear) and their objects."""

from __future__ import annotations

import asyncio
import logging

from dicom_node.attributes import INSTANCE, SERIES, STUDY
from dicom_node.blobs import BlobStore
from dicom_node.fhir_sync import DICOM_UID_SYSTEM
from fhir_server.repository import Repository
from fhir_server.storage.query import FieldMatch, RecordQuery

log = logging.getLogger(__name__)


class DicomErasure:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def __call__(self, repo: Repository, patient_id: str) -> None:
        studies = await repo.find("ImagingStudy", [("subject", f"Patient/{patient_id}")], 10_000)
        tx = repo.transaction
        assert tx is not None, "erasure runs in a transaction"
        for study in studies:
            for identifier in study.resource.get("identifier", []):
                value = identifier.get("value", "")
                if identifier.get("system") != DICOM_UID_SYSTEM or not value.startswith("urn:oid:"):
                    continue
                uid = value.removeprefix("urn:oid:")
                for collection in (INSTANCE, SERIES):
                    query = RecordQuery(collection, (FieldMatch("StudyInstanceUID", "eq", (uid,)),), limit=1_000_000)
                    for record in await tx.find_records(query):
                        await tx.delete_record(collection, record.key)
                await tx.delete_record(STUDY, uid)
                removed = await asyncio.to_thread(self.blobs.remove_study, repo.tenant, uid)
                log.info("erasure: a study's index and %d objects deleted", removed)
