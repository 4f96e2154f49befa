"""One-time backfill of the owner field (``attributes.PATIENT_FIELD``) on index records written before it.

DICOMweb access for ``patient/`` tokens goes by that field, so a study indexed by an earlier version is
listed to nobody's ``patient/`` token (it fails closed). Each study record without the field gets the
Patient its body names (``recorded_patient``), and so do its series and instance records.

Runs when the node starts, per tenant. Work is committed in small transactions (``BATCH`` records), so
the tenant's write lock is never held for long; a study record is written last, so a run cut short is
resumed by running again (records that have the field are skipped). When a run completes, the tenant
setting ``MARKER`` records it and later starts skip the scan.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from dicom_node.attributes import INSTANCE, PATIENT_FIELD, SERIES, STUDY, filed_under, recorded_patient
from fhir_server.storage.port import Engine, Record, RecordReader, TenantStore
from fhir_server.storage.query import FieldMatch, RecordQuery
from fhir_server.tenant_settings import read_setting, write_setting

log = logging.getLogger(__name__)

MARKER = "dicom.index.backfill"
VERSION = 1  # raise when a later backfill is needed
BATCH = 200


async def _pages(store: RecordReader, query: RecordQuery) -> AsyncIterator[list[Record]]:
    """The query's records a page at a time (the order is the record key's, which a backfill never changes)."""
    offset = 0
    while page := await store.find_records(RecordQuery(query.collection, query.where, BATCH, offset)):
        yield page
        offset += len(page)


async def _file_level(store: TenantStore, collection: str, study_uid: str, patient_id: str) -> None:
    in_study = (FieldMatch("StudyInstanceUID", "eq", (study_uid,)),)
    async for page in _pages(store, RecordQuery(collection, in_study)):
        missing = [record for record in page if not record.fields.get(PATIENT_FIELD)]
        if missing:
            async with store.transaction() as tx:
                for record in missing:
                    await tx.put_record(filed_under(record, patient_id))


async def _file_study(store: TenantStore, study: Record) -> bool:
    """File one study, its series and instances under its Patient; False when that cannot be told."""
    patient_id = recorded_patient(study)
    if patient_id is None:
        return False
    await _file_level(store, INSTANCE, study.key, patient_id)
    await _file_level(store, SERIES, study.key, patient_id)
    async with store.transaction() as tx:
        current = await tx.get_record(STUDY, study.key)  # re-read: a merge may have moved it meanwhile
        if current is not None and not current.fields.get(PATIENT_FIELD):
            await tx.put_record(filed_under(current, patient_id))
    return True


async def backfill_patient_field(tenant: str, store: TenantStore) -> int:
    """File the tenant's older index records under their Patient; returns the number of studies filed."""
    if await read_setting(store, MARKER) == VERSION:
        return 0
    filed = unknown = 0
    async for page in _pages(store, RecordQuery(STUDY)):
        for study in page:
            if study.fields.get(PATIENT_FIELD):
                continue
            if await _file_study(store, study):
                filed += 1
            else:
                unknown += 1
    if unknown:
        log.warning("tenant %s: %d DICOM studies name no Patient and stay out of patient/ access", tenant, unknown)
    if filed:
        log.info("tenant %s: %d DICOM studies filed under their Patient", tenant, filed)
    await write_setting(store, MARKER, VERSION)
    return filed


async def backfill_tenants(engine: Engine) -> None:
    """Run the backfill on every tenant (cheap once done: one setting read each)."""
    for tenant in await engine.tenant_names():
        await backfill_patient_field(tenant, await engine.tenant(tenant))
