"""DICOMweb behaviour, free of HTTP: store (STOW-RS), search (QIDO-RS), retrieve (WADO-RS)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import orjson
from pydicom import dcmread
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node import statuses
from dicom_node.attributes import INSTANCE
from dicom_node.errors import DicomNodeError, InvalidInstance
from dicom_node.ingest import Ingestor
from dicom_node.instance_files import InstanceFiles
from dicom_node.query import Match, QueryError, find
from dicom_node.web.access import may_read_study, searchable_patient
from dicom_node.web.deletion import DicomDeletion
from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError
from fhir_server.limits import MAX_NUMBER_DIGITS, whole_number
from fhir_server.repository import Repository
from fhir_server.security.policy import AccessPolicy
from fhir_server.storage.port import Engine, Record, TenantStore
from fhir_server.storage.query import FieldMatch, RecordQuery

RETRIEVE_URL = "00081190"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"
MAX_QIDO_LIMIT = 1000
NO_SUCH_OBJECT = "no such study, series or instance"
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}


class NotFound(DicomNodeError):
    """No such study, series or instance in this tenant."""


@dataclass(frozen=True, slots=True)
class StowResult:
    status: int  # HTTP: 200 all stored, 202 some failed, 409 none stored
    body: dict[str, Any]


def _element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)}


def _keyword(name: str) -> str | None:
    """A QIDO attribute: a keyword, or a tag as 8 hex digits."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        keyword = keyword_for_tag(int(name, 16))
        return keyword or None
    return name if tag_for_keyword(name) is not None else None


class DicomWeb:
    def __init__(self, engine: Engine, ingestor: Ingestor, public_url: Any, audit: AuditTrail | None = None) -> None:
        self._engine = engine
        self._files = InstanceFiles(ingestor.blobs)
        self._ingestor = ingestor
        self._public_url = public_url
        self._deletion = DicomDeletion(engine, ingestor.blobs, audit)

    async def _store(self, tenant: str) -> TenantStore:
        return await self._engine.tenant(tenant)

    async def _repository(self, tenant: str, policy: AccessPolicy) -> Repository:
        """The tenant's resources as the caller may see them: every access decision is the policy's."""
        return Repository(await self._store(tenant), policy)

    def base(self, tenant: str) -> str:
        return str(self._public_url(tenant, "dicomweb"))

    # -- STOW-RS (PS3.18 10.5) ----------------------------------------------------------------
    async def stow(self, tenant: str, parts: list[bytes], study: str | None) -> StowResult:
        referenced: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for data in parts:
            try:
                data = part10(data)
                ds = dcmread(io.BytesIO(data), force=False)
                sop_class, sop_instance = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
            except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
                failed.append(self._failed("", "", statuses.CANNOT_UNDERSTAND, str(exc)))
                continue
            if study is not None and str(ds.get("StudyInstanceUID", "")) != study:
                failed.append(self._failed(sop_class, sop_instance, statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, "study"))
                continue
            try:
                syntax = str(ds.file_meta.TransferSyntaxUID)
                stored = await self._ingestor.store(tenant, ds, data, syntax)
            except InvalidInstance as exc:
                failed.append(self._failed(sop_class, sop_instance, exc.status, exc.comment))
                continue
            except (AttributeError, ValueError, TypeError, KeyError) as exc:
                failed.append(self._failed(sop_class, sop_instance, statuses.CANNOT_UNDERSTAND, str(exc)))
                continue
            url = f"{self.base(tenant)}/studies/{stored.study_uid}/series/{stored.series_uid}/instances/{sop_instance}"
            referenced.append(
                {
                    "00081150": _element("UI", sop_class),
                    "00081155": _element("UI", sop_instance),
                    RETRIEVE_URL: _element("UR", url),
                }
            )
        body: dict[str, Any] = {}
        if study is not None:
            body[RETRIEVE_URL] = _element("UR", f"{self.base(tenant)}/studies/{study}")
        if referenced:
            body[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": referenced}
        if failed:
            body[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else (202 if referenced else 409)
        return StowResult(status, body)

    @staticmethod
    def _failed(sop_class: str, sop_instance: str, reason: int, comment: str) -> dict[str, Any]:
        item: dict[str, Any] = {FAILURE_REASON: _element("US", reason)}
        if sop_class:
            item["00081150"] = _element("UI", sop_class)
        if sop_instance:
            item["00081155"] = _element("UI", sop_instance)
        item["00000902"] = _element("LO", comment[:64])  # ErrorComment: why
        return item

    # -- QIDO-RS (PS3.18 10.6) ----------------------------------------------------------------
    async def search(
        self, tenant: str, policy: AccessPolicy, level: str, fixed: dict[str, str], params: list[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        """The matches of the studies the caller may search (``searchable_patient``), filtered in the query."""
        keys = dict(fixed)
        limit, offset = MAX_QIDO_LIMIT, 0
        for name, value in params:
            if name == "limit":
                limit = min(_whole(name, value), MAX_QIDO_LIMIT)
            elif name == "offset":
                offset = _whole(name, value)
            elif name in _CONTROL:
                continue
            else:
                keyword = _keyword(name)
                if keyword is None:
                    raise QueryError(f"unknown attribute {name!r}")
                keys[keyword] = value
        repo = await self._repository(tenant, policy)
        matches = await find(repo.store, level, keys, limit, offset, searchable_patient(repo))
        return [self._qido_entry(tenant, level, match) for match in matches]

    def _qido_entry(self, tenant: str, level: str, match: Match) -> dict[str, Any]:
        attributes = dict(match.attributes)
        fields = match.record.fields
        study = fields.get("StudyInstanceUID", (match.record.key,))[0] if level != "STUDY" else match.record.key
        url = f"{self.base(tenant)}/studies/{study}"
        if level == "SERIES":
            url += f"/series/{match.record.key}"
        elif level == "IMAGE":
            url += f"/series/{fields['SeriesInstanceUID'][0]}/instances/{match.record.key}"
        attributes[RETRIEVE_URL] = _element("UR", url)
        return dict(sorted(attributes.items()))

    # -- WADO-RS (PS3.18 10.4) ----------------------------------------------------------------
    async def instances(
        self, tenant: str, policy: AccessPolicy, study: str, series: str | None = None, instance: str | None = None
    ) -> list[Record]:
        """The instances of a study, series or one instance; another patient's answer as absent ones do
        (404, as a FHIR read of another patient's resource)."""
        where = [FieldMatch("StudyInstanceUID", "eq", (study,))]
        if series is not None:
            where.append(FieldMatch("SeriesInstanceUID", "eq", (series,)))
        repo = await self._repository(tenant, policy)
        if not await may_read_study(repo, study):
            raise NotFound(NO_SUCH_OBJECT)
        store = repo.store
        if instance is not None:
            record = await store.get_record(INSTANCE, instance)
            found = [record] if record is not None and _belongs(record, study, series) else []
        else:
            found = await store.find_records(RecordQuery(INSTANCE, tuple(where), limit=100_000))
        if not found:
            raise NotFound(NO_SUCH_OBJECT)
        return found

    async def delete(
        self, tenant: str, policy: AccessPolicy, who: str, address: str, uids: tuple[str, str | None, str | None]
    ) -> int:
        """Delete a study, series or instance (``deletion``): 403 unless the policy allows it, 404 when absent."""
        policy.delete_dicom()
        found = await self.instances(tenant, AccessPolicy.system("DICOMweb DELETE: the caller may delete"), *uids)
        return await self._deletion.delete(tenant, found, who, address)

    async def read_bytes(self, tenant: str, record: Record) -> bytes:
        return await self._files.read_bytes(await self._engine.tenant(tenant), tenant, record)

    async def read_dataset(self, tenant: str, record: Record) -> Dataset:
        return await self._files.read_dataset(await self._engine.tenant(tenant), tenant, record)

    def metadata(self, tenant: str, record: Record) -> dict[str, Any]:
        body = orjson.loads(record.body)
        metadata: dict[str, Any] = dict(body["metadata"])
        base = (
            f"{self.base(tenant)}/studies/{record.fields['StudyInstanceUID'][0]}"
            f"/series/{record.fields['SeriesInstanceUID'][0]}/instances/{record.key}"
        )
        if int(record.fields.get("Rows", ("0",))[0] or 0) > 0:
            metadata["7FE00010"] = {"vr": "OB", "BulkDataURI": f"{base}/frames/1"}
        return metadata


def part10(data: bytes) -> bytes:
    """A PS3.10 file: some clients send the File Meta group without the preamble and 'DICM' prefix."""
    if data[128:132] == b"DICM":
        return data
    if data[:2] == b"\x02\x00":  # starts with the (0002,xxxx) File Meta group
        return b"\x00" * 128 + b"DICM" + data
    raise InvalidDicomError("the part is not a DICOM file: no File Meta Information")


def _belongs(record: Record, study: str, series: str | None) -> bool:
    if record.fields.get("StudyInstanceUID", ("",))[0] != study:
        return False
    return series is None or record.fields.get("SeriesInstanceUID", ("",))[0] == series


def _whole(name: str, value: str) -> int:
    """QIDO-RS ``limit``/``offset`` (PS3.18 8.3.4.4): a whole number, bounded like FHIR ``_offset``
    (``fhir_server.limits``; SQLite integers stop at 2**63-1)."""
    try:
        number = whole_number(value, name)
    except OperationOutcomeError as exc:
        raise QueryError(f"{name} must be a whole number of at most {MAX_NUMBER_DIGITS} digits") from exc
    if number is None:
        raise QueryError(f"{name} must be a whole number (0, 1, 2, ...), not {value[:40]!r}")
    return number
