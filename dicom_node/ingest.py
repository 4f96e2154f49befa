"""Storing one instance (DESIGN data flow 1): validate, stage the bytes durably, then in one
tenant transaction index it, sync FHIR and append ``imaging.instance-stored`` to the outbox.
Only after that commit is the sender told Success.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydicom.dataset import Dataset

from dicom_node import statuses
from dicom_node.attributes import (
    INSTANCE,
    SERIES,
    STUDY,
    IndexedInstance,
    filed_under,
    index_instance,
    recorded_patient,
)
from dicom_node.blobs import BlobKey, BlobStore
from dicom_node.case_product import case_product
from dicom_node.errors import ForeignStudy, InvalidInstance
from dicom_node.fhir_sync import KnownIds, SyncResult, sync_instance
from dicom_node.instance_files import new_object_key, seal_object, seal_object_key, with_object_key
from dicom_node.iod import check_instance
from dicom_node.lesions import ImagingConventions
from dicom_node.order_match import order_mismatch_event
from dicom_node.patient_match import flag_foreign_study, identified_patient
from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError
from fhir_server.repository import Repository
from fhir_server.storage.port import Engine, Record, TenantStore, TenantTransaction

log = logging.getLogger(__name__)
DuplicatePolicy = Literal["keep", "replace"]


@dataclass(frozen=True, slots=True)
class StoredInstance:
    tenant: str
    study_uid: str
    series_uid: str
    instance_uid: str
    duplicate: bool
    sync: SyncResult | None


def content_digest(encoded: bytes) -> str:
    """The SHA-256 of the bytes stored for an instance: forwarding sends a replacing version again only when it
    differs (an identical re-send changes nothing a destination holds)."""
    return hashlib.sha256(encoded).hexdigest()


def _count(body: bytes, key: str) -> int:
    return int(orjson.loads(body).get(key, 0))


class Ingestor:
    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        *,
        public_url: Callable[[str, str], str],
        duplicates: DuplicatePolicy = "keep",
        trail: AuditTrail | None = None,
        conventions: ImagingConventions | None = None,
    ) -> None:
        self._engine = engine
        self.blobs = blobs
        self.public_url = public_url  # (tenant, "fhir" | "dicomweb") -> base URL
        self.duplicates = duplicates
        self.trail = trail
        self.conventions = conventions or ImagingConventions()

    async def store(
        self, tenant: str, ds: Dataset, encoded: bytes, transfer_syntax: str, audit: dict[str, Any] | None = None,
        calling_ae: str | None = None,
    ) -> StoredInstance:  # fmt: skip
        """Store one instance; raises InvalidInstance for what the sender must be told is wrong.

        ``audit``: the AuditEvent of this store's success, committed with the instance (when
        the node has an audit trail); ``calling_ae``: the DIMSE sender, for the tenant's product rules."""
        check_instance(ds, str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")))
        store = await self._engine.tenant(tenant)
        indexed = index_instance(ds, transfer_syntax, len(encoded))
        target = BlobKey(tenant, indexed.study_uid, indexed.series_uid, indexed.instance_uid)
        key = new_object_key() if store.encryption is not None else None
        payload = seal_object(encoded, key, indexed.instance_uid) if key is not None else encoded
        # The bytes are written and fsynced while the index and FHIR work runs.
        staging = asyncio.ensure_future(self.blobs.stage(tenant, payload))
        published = False
        try:
            try:
                async with store.transaction() as tx:
                    if audit is not None and self.trail is not None:
                        await self.trail.record_in(store, tx, audit)
                    await _refuse_foreign(self._repository(store, tx, "DICOM ingest"), tx, ds, indexed)
                    existing = await tx.get_record(INSTANCE, indexed.instance_uid)
                    sync = None
                    if existing is None or self.duplicates == "replace":
                        sync = await self._sync(tx, store, ds, indexed, key, new_instance=existing is None,
                                                calling_ae=calling_ae, digest=content_digest(encoded))  # fmt: skip
                        await self.blobs.publish(await staging, target)
                        published = True
            except ForeignStudy as refused:  # rolled back; the review Task commits on its own
                await self._review(store, ds, refused)
                raise
        finally:
            if not published:
                staged = await asyncio.shield(staging)
                await self.blobs.discard(staged)
        return StoredInstance(tenant, indexed.study_uid, indexed.series_uid, indexed.instance_uid,
                              existing is not None, sync)  # fmt: skip

    async def _sync(self, tx: TenantTransaction, store: TenantStore, ds: Dataset, indexed: IndexedInstance,
                    key: bytes | None, *, new_instance: bool, calling_ae: str | None,
                    digest: str) -> SyncResult:  # fmt: skip
        """The FHIR resources, the attribute index and the outbox event of a new (or replacing) instance."""
        tenant = store.name
        repo = self._repository(store, tx, "DICOM ingest")
        study = await tx.get_record(STUDY, indexed.study_uid)
        so_far: dict[str, Any] = orjson.loads(study.body) if study else {}  # counts and FHIR ids
        known = KnownIds(**so_far.get("fhir", {}))
        try:
            sync = await sync_instance(repo, ds, self.public_url(tenant, "dicomweb"), known,
                                       lesion_key=self.conventions.lesion_key(tenant),
                                       zone=self.conventions.zone(tenant),
                                       product=await case_product(tx, ds, calling_ae))  # fmt: skip
        except OperationOutcomeError as exc:  # attributes that cannot become valid FHIR
            raise InvalidInstance(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, f"not mappable: {exc}") from exc
        if sync.order_mismatch is not None and self.trail is not None:  # committed with the image, or not at all
            await self.trail.record_in(store, tx, order_mismatch_event(sync.patient_id, sync.media_id,
                                                                       sync.order_mismatch))  # fmt: skip
        sealed = await seal_object_key(tx, sync.patient_id, key, indexed.instance_uid) if key else None
        await index_records(tx, indexed, study, so_far, sync, new_instance=new_instance, object_key=sealed)
        await tx.append_event(
            "imaging.instance-stored",
            {**self._event(tenant, indexed, sync), "callingAE": calling_ae, "digest": digest},
        )
        return sync

    def _repository(self, store: TenantStore, tx: TenantTransaction, reason: str) -> Repository:
        return Repository.system(store, reason=reason, local_base=self.public_url(store.name, "fhir"), tx=tx)

    async def _review(self, store: TenantStore, ds: Dataset, refused: ForeignStudy) -> None:
        """The identity-review Task of a refused instance, for the tenant to resolve."""
        async with store.transaction() as tx:
            repo = self._repository(store, tx, "DICOM ingest: identity review")
            await flag_foreign_study(repo, ds, refused.uid, refused.owner, refused.claimed)
        log.warning("ingest: an instance refused, %s (identity review opened)", refused.comment)

    @staticmethod
    def _event(tenant: str, indexed: IndexedInstance, sync: SyncResult) -> dict[str, Any]:
        return {
            "tenant": tenant,
            "study": indexed.study_uid,
            "series": indexed.series_uid,
            "instance": indexed.instance_uid,
            "patient": sync.patient_id,
            "imagingStudy": sync.imaging_study_id,
            "media": sync.media_id,
            "report": sync.report_id,
            "lesion": sync.lesion_id,
            "sopClass": str(indexed.instance.fields.get("SOPClassUID", ("",))[0]),
        }


async def _refuse_foreign(repo: Repository, tx: TenantTransaction, ds: Dataset, indexed: IndexedInstance) -> None:
    """The identifier decides whose record an image joins (DESIGN data flow 1), never its UIDs: an image
    whose Study, Series or SOP Instance UID was filed under another Patient than the one its PatientID
    names is refused (PS3.4 B.2.3 failure A900, "Data Set does not match SOP Class"), a duplicate too."""
    study = await tx.get_record(STUDY, indexed.study_uid)
    filed = (
        ("StudyInstanceUID", study),
        ("SeriesInstanceUID", await tx.get_record(SERIES, indexed.series_uid)),
        ("SOPInstanceUID", await tx.get_record(INSTANCE, indexed.instance_uid)),
    )
    owners = [(uid, owner) for uid, record in filed if (owner := recorded_patient(record)) is not None]
    if not owners:
        return
    named = await identified_patient(repo, ds, recorded_patient(study))
    claimed = str(named.resource["id"]) if named is not None else None
    for uid, owner in owners:
        if owner != claimed:
            raise ForeignStudy(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, uid, owner, claimed)


async def index_records(
    tx: TenantTransaction, indexed: IndexedInstance, study: Record | None, so_far: dict[str, Any], sync: SyncResult,
    *, new_instance: bool, object_key: dict[str, str] | None,
) -> None:  # fmt: skip
    """The instance's, series' and study's records; the study's keeps the FHIR ids (``KnownIds``).

    ``study``: the study's record before this instance, ``so_far`` its parsed body."""
    series = await tx.get_record(SERIES, indexed.series_uid)
    series_count = _count(series.body, "instances") if series else 0
    study_series = int(so_far.get("series", 0))
    study_instances = int(so_far.get("instances", 0))
    modalities = set(study.fields.get("ModalitiesInStudy", ())) if study else set()
    modalities.update(indexed.series.fields.get("Modality", ()))
    added = 1 if new_instance else 0
    patient = sync.patient_id
    await tx.put_record(filed_under(_with_counts(indexed.series, instances=series_count + added), patient))
    study_record = _with_counts(
        indexed.study,
        series=study_series + (0 if series else 1),
        instances=study_instances + added,
        fhir={"patient": sync.patient_id, "imaging_study": sync.imaging_study_id, "report": sync.report_id},
    )
    await tx.put_record(filed_under(
        Record(study_record.collection, study_record.key, study_record.body,
               {**study_record.fields, "ModalitiesInStudy": tuple(sorted(modalities))}), patient)
    )  # fmt: skip
    await tx.put_record(filed_under(with_object_key(indexed.instance, object_key), patient))


def _with_counts(record: Record, **extra: Any) -> Record:
    body: dict[str, Any] = {"attributes": orjson.loads(record.body), **extra}
    return Record(record.collection, record.key, orjson.dumps(body), record.fields)
