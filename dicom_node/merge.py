"""The DICOM side of ``Patient/$merge`` (fhir_server.identity.merge): the source's studies follow
the target. Each instance's object key, sealed under the source's data key, is sealed again under
the target's (the object itself, sealed under its own key, is not rewritten), and the study, series and
instance records name the target as their Patient (``attributes.PATIENT_FIELD``), so later images of those
studies join it and the target's patient/ tokens see them."""

from __future__ import annotations

import logging

import orjson

from dicom_node.attributes import INSTANCE, SERIES, STUDY, filed_under
from dicom_node.patient_studies import patient_study_uids
from fhir_server.repository import Repository
from fhir_server.storage.port import Record, TenantTransaction
from fhir_server.storage.query import FieldMatch, RecordQuery

log = logging.getLogger(__name__)


async def _reseal(tx: TenantTransaction, record: Record, target: str) -> Record:
    body = orjson.loads(record.body)
    sealed = body.get("objectKey")
    encryption = tx.encryption
    if encryption is None or not isinstance(sealed, dict) or sealed.get("ref") == target:
        return record
    key = await encryption.open_secret(sealed, record.key.encode())
    if key is None:  # its patient was erased: nothing left to move
        return record
    body["objectKey"] = await encryption.seal_secret(target, key, record.key.encode())
    return Record(record.collection, record.key, orjson.dumps(body), record.fields)


async def _repoint_study(tx: TenantTransaction, uid: str, target_id: str) -> None:
    study = await tx.get_record(STUDY, uid)
    if study is None:
        return
    body = orjson.loads(study.body)
    if isinstance(body.get("fhir"), dict):
        body["fhir"]["patient"] = target_id
    await tx.put_record(filed_under(Record(study.collection, study.key, orjson.dumps(body), study.fields), target_id))


async def merge_dicom(repo: Repository, source_id: str, target_id: str) -> None:
    """Runs in the merge's transaction, before the FHIR resources are re-pointed."""
    tx = repo.transaction
    assert tx is not None, "a merge runs in a transaction"
    uids = await patient_study_uids(repo, source_id)
    for uid in uids:
        in_study = (FieldMatch("StudyInstanceUID", "eq", (uid,)),)
        for record in await tx.find_records(RecordQuery(INSTANCE, in_study, limit=1_000_000)):
            await tx.put_record(filed_under(await _reseal(tx, record, f"Patient/{target_id}"), target_id))
        for record in await tx.find_records(RecordQuery(SERIES, in_study, limit=1_000_000)):
            await tx.put_record(filed_under(record, target_id))
        await _repoint_study(tx, uid, target_id)
    log.info("merge: %d studies moved to the target patient", len(uids))
