"""Storage Commitment Push Model, SCP side (PS3.4 Annex J): a device asks (N-ACTION, Action Type 1
"Request Storage Commitment") whether the node has taken safekeeping of the instances it sent, and the
node answers with an N-EVENT-REPORT (Event Type 1 "all committed" or 2 "failures exist").

The answer is read from the durable store only (DESIGN: nothing is acknowledged before it is durable): an
instance is committed when its index record is committed in the caller's tenant and its file is on disk
under it (ingest publishes both in one transaction), with the SOP class the device names. Otherwise it
is listed in the Failed SOP Sequence with a Failure Reason (PS3.4 J.3.2.1.1.2 / C.14.1.1): 0x0112 "No such
object instance", 0x0119 "Class / Instance conflict". A device sees only its own tenant's instances, so
another tenant's instance reads as unknown.

The N-EVENT-REPORT goes on a new association the node opens to the device when its AE title has an address
(its ``move_destinations`` entry; the device may release the N-ACTION's association at once), proposing the
Storage Commitment context with the SCP role (SCP/SCU Role Selection, PS3.4 J.4.1.1, PS3.7 D.3.3.4); else on
the N-ACTION's own association (PS3.4 J.3.3: "the SCP may send it on the same association"), sent by the
association's thread once the N-ACTION response is out (``reactor.after_request``), unless the device has
asked to release it already. Either way the report is audited.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pynetdicom import build_role
from pynetdicom.association import Association

from dicom_node.attributes import INSTANCE
from dicom_node.blobs import BlobKey, BlobStore
from dicom_node.errors import DicomNodeError
from dicom_node.reactor import ClosingAE
from fhir_server.storage.port import Record, TenantStore
from fhir_server.storage.query import FieldMatch, RecordQuery

log = logging.getLogger(__name__)
STORAGE_COMMITMENT = UID("1.2.840.10008.1.20.1")  # Storage Commitment Push Model SOP Class
WELL_KNOWN_INSTANCE = UID("1.2.840.10008.1.20.1.1")  # its well-known SOP Instance (PS3.4 J.3.1)
REQUEST_COMMITMENT = 1  # N-ACTION Action Type ID (PS3.4 J.3.2.1.1)
ALL_COMMITTED, FAILURES_EXIST = 1, 2  # N-EVENT-REPORT Event Type IDs (PS3.4 J.3.2.2.1)
MAX_REFERENCES = 10_000  # instances in one request; more is refused (Resource limitation)
# the encoded Action Information that can hold MAX_REFERENCES items (about 150 bytes each): more is refused
# before it is decoded
MAX_ACTION_BYTES = MAX_REFERENCES * 256
LOOKUP_CHUNK = 500  # SOP Instance UIDs per store query (SQLite's bound parameters)

# N-ACTION failures (PS3.4 J.3.2.1.1.3, PS3.7 C)
NO_SUCH_ACTION = 0x0123
INVALID_ARGUMENT_VALUE = 0x0115
RESOURCE_LIMITATION = 0x0213
# Failure Reasons of the Failed SOP Sequence (PS3.3 C.14.1.1)
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119


class InvalidCommitmentRequest(DicomNodeError):
    """An N-ACTION the node cannot act on: ``status`` is its failure, ``comment`` the ErrorComment."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]


@dataclass(frozen=True, slots=True)
class Reference:
    sop_class: str
    sop_instance: str


@dataclass(frozen=True, slots=True)
class CommitmentRequest:
    transaction_uid: str
    references: tuple[Reference, ...]


@dataclass(frozen=True, slots=True)
class CommitmentResult:
    transaction_uid: str
    committed: tuple[Reference, ...]
    failed: tuple[tuple[Reference, int], ...]  # with the Failure Reason

    @property
    def event_type(self) -> int:
        return FAILURES_EXIST if self.failed else ALL_COMMITTED


_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _uid(value: object, what: str) -> str:
    """One UI value (PS3.5 9.1): a multi-valued or malformed one would be echoed where the device cannot match it."""
    text = value.strip().rstrip("\0") if isinstance(value, str) else ""
    if not text or len(text) > 64 or not _UID.match(text):
        raise InvalidCommitmentRequest(INVALID_ARGUMENT_VALUE, f"missing or invalid {what}")
    return text


def parse_request(action_type: int | None, dataset: Dataset | None) -> CommitmentRequest:
    """The request of an N-ACTION's Action Information (PS3.4 J.3.2.1.1.2), bounded and checked."""
    if action_type != REQUEST_COMMITMENT:
        raise InvalidCommitmentRequest(NO_SUCH_ACTION, f"Action Type {action_type} is not 1 (request commitment)")
    if dataset is None:
        raise InvalidCommitmentRequest(INVALID_ARGUMENT_VALUE, "no Action Information")
    transaction = _uid(dataset.get("TransactionUID"), "Transaction UID")
    items = dataset.get("ReferencedSOPSequence") or []
    if not items:
        raise InvalidCommitmentRequest(INVALID_ARGUMENT_VALUE, "empty Referenced SOP Sequence")
    if len(items) > MAX_REFERENCES:
        raise InvalidCommitmentRequest(RESOURCE_LIMITATION, f"more than {MAX_REFERENCES} instances in one request")
    references = tuple(
        Reference(
            _uid(item.get("ReferencedSOPClassUID"), "SOP Class UID"),
            _uid(item.get("ReferencedSOPInstanceUID"), "SOP Instance UID"),
        )
        for item in items
    )
    return CommitmentRequest(transaction, references)


def too_large(encoded: object) -> bool:
    """Whether an N-ACTION's encoded Action Information (pynetdicom keeps it as a BytesIO until it is read) is
    beyond what ``MAX_REFERENCES`` references take: refused before it is decoded (0x0213 Resource limitation,
    PS3.7 Annex C)."""
    getbuffer = getattr(encoded, "getbuffer", None)
    return getbuffer is not None and getbuffer().nbytes > MAX_ACTION_BYTES


async def _records(store: TenantStore, instances: list[str]) -> dict[str, Record]:
    """The tenant's instance records of ``instances``, in one query per ``LOOKUP_CHUNK`` UIDs."""
    found: dict[str, Record] = {}
    for start in range(0, len(instances), LOOKUP_CHUNK):
        chunk = tuple(instances[start : start + LOOKUP_CHUNK])
        query = RecordQuery(INSTANCE, (FieldMatch("SOPInstanceUID", "in", chunk),), limit=len(chunk))
        found.update((record.key, record) for record in await store.find_records(query))
    return found


async def commitment(store: TenantStore, blobs: BlobStore, request: CommitmentRequest) -> CommitmentResult:
    """Which of the requested instances the tenant holds durably (record and file), with the SOP class named.
    A reference asked for twice is answered once; the records are read in batches, each object checked once."""
    references = list(dict.fromkeys(request.references))
    records = await _records(store, list(dict.fromkeys(r.sop_instance for r in references)))
    kept = {key for key, record in records.items() if await _stored(blobs, store.name, record.fields, key)}
    committed: list[Reference] = []
    failed: list[tuple[Reference, int]] = []
    for reference in references:
        record = records.get(reference.sop_instance)
        if record is None or reference.sop_instance not in kept:
            failed.append((reference, NO_SUCH_OBJECT_INSTANCE))
        elif str((record.fields.get("SOPClassUID") or ("",))[0]) != reference.sop_class:
            failed.append((reference, CLASS_INSTANCE_CONFLICT))
        else:
            committed.append(reference)
    return CommitmentResult(request.transaction_uid, tuple(committed), tuple(failed))


async def _stored(blobs: BlobStore, tenant: str, fields: dict[str, tuple[str, ...]], instance: str) -> bool:
    study, series = (fields.get("StudyInstanceUID") or ("",))[0], (fields.get("SeriesInstanceUID") or ("",))[0]
    return bool(study and series) and await blobs.exists(BlobKey(tenant, study, series, instance))


def _item(reference: Reference, ae_title: str | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = reference.sop_class
    item.ReferencedSOPInstanceUID = reference.sop_instance
    if ae_title:
        item.RetrieveAETitle = ae_title  # where the committed instance can be retrieved from (PS3.4 J.3.2.2.1)
    return item


def event_information(result: CommitmentResult, ae_title: str) -> Dataset:
    """The N-EVENT-REPORT's Event Information (PS3.4 Table J.3-2)."""
    info = Dataset()
    info.TransactionUID = result.transaction_uid
    if result.committed:
        info.RetrieveAETitle = ae_title
        info.ReferencedSOPSequence = Sequence([_item(r) for r in result.committed])
    if result.failed:
        failed = []
        for reference, reason in result.failed:
            item = _item(reference)
            item.FailureReason = reason
            failed.append(item)
        info.FailedSOPSequence = Sequence(failed)
    return info


def _sent(assoc: Association, result: CommitmentResult, info: Dataset) -> bool:
    status, _ = assoc.send_n_event_report(info, result.event_type, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
    code = int(status.get("Status", -1)) if status else -1
    if code != 0:
        log.warning(
            "storage commitment %s: the device answered the report with status %#06x", result.transaction_uid, code
        )
    return code == 0


def report_on(assoc: Association, result: CommitmentResult, info: Dataset) -> bool:
    """The report on the N-ACTION's association, if the device kept it open; True when it acknowledged it."""
    if not assoc.is_established or assoc.acse.is_release_requested():
        return False  # the device did not wait for it
    try:
        return _sent(assoc, result, info)
    except Exception:
        log.warning(
            "storage commitment %s: the report on the same association failed", result.transaction_uid, exc_info=True
        )
        return False


def report_anew(ae_title: str, peer: tuple[str, int, str], result: CommitmentResult, info: Dataset, *,
                acse_s: float, dimse_s: float) -> bool:  # fmt: skip
    """The report on a new association to the device (``peer``: host, port, AE title), the node as SCP; True when
    the device acknowledged it. ``acse_s`` bounds the connection and the association's negotiation and release,
    ``dimse_s`` the report's answer and any network silence (the node's own settings). The association is released
    (or aborted) and its socket closed whatever happens (``ClosingAE``)."""
    ae = ClosingAE(ae_title=ae_title)
    ae.connection_timeout = ae.acse_timeout = acse_s
    ae.dimse_timeout = ae.network_timeout = dimse_s
    ae.add_requested_context(STORAGE_COMMITMENT)
    host, port, called = peer
    assoc = ae.associate(host, port, ae_title=called, ext_neg=[build_role(STORAGE_COMMITMENT, scp_role=True)])
    if not assoc.is_established:
        log.warning(
            "storage commitment %s: no association with %s at %s:%d", result.transaction_uid, called, host, port
        )
        return False
    try:
        return _sent(assoc, result, info)
    except Exception:  # no context for the SCP role, the association lost part-way: audited as a failure
        log.warning("storage commitment %s: the report to %s failed", result.transaction_uid, called, exc_info=True)
        return False
    finally:
        if assoc.is_established:
            assoc.release()
        if not (assoc.is_released or assoc.is_aborted):
            assoc.abort()
