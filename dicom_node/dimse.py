"""The DIMSE SCP (pynetdicom): C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE and Storage Commitment (N-ACTION,
answered by N-EVENT-REPORT: ``dicom_node.storage_commitment``).

pynetdicom runs each association in its own thread; handlers hand the work to the server's
asyncio loop and wait for it. Intervention handlers always answer a status (named in
``statuses``); a failure never drops the association.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import pydicom.config
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node import charsets, listener, peers, statuses, transcoding
from dicom_node import storage_commitment as commitment
from dicom_node.admission import Admission, AssociationLimits
from dicom_node.audit import DicomAudit, audit_event
from dicom_node.bounded_worker import BoundedWorker
from dicom_node.callers import (
    DIMSE_NAMES,
    SERVICES,
    Callers,
    DicomCaller,
    Service,
    context_services,
    service_of,
    withheld,
)
from dicom_node.errors import InvalidInstance
from dicom_node.ingest import Ingestor
from dicom_node.instance_files import InstanceFiles, ObjectErased
from dicom_node.peers import MoveDestination, Peers
from dicom_node.query import QueryError, find, identifier_keys, response_dataset
from dicom_node.sop_classes import (
    AI_RESULT_CLASSES,
    AI_RESULT_SYNTAXES,
    QR_FIND,
    QR_GET,
    QR_MOVE,
    RETRIEVABLE_CLASSES,
    STORAGE_CLASSES,
    TRANSFER_SYNTAXES,
)
from fhir_server.storage.port import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")
AcceptedSyntaxes = Callable[[str], list[str]]  # SOP class UID -> the syntaxes the peer accepted for it
HANDLER_TIMEOUT_S = 120.0
PEER_TIMEOUT_S = 120  # the node's DIMSE and network timeouts, also of the associations it opens
ADMITTED_TENANT = "dermbridge_tenant"  # the association's attribute: the tenant it was admitted for
MAX_PENDING_REPORTS = 64  # Storage Commitment reports waiting for (or on) a new association; more: 0x0213


@dataclass(slots=True)
class DimseConfig:
    ae_title: str = "DERMBRIDGE"
    host: str = "127.0.0.1"
    port: int = 11112
    ae_tenants: dict[str, str | DicomCaller] = field(default_factory=dict)  # calling AE title -> tenant (and roles)
    any_ae_tenant: str | None = None  # tenant for callers not in ae_tenants; None: refuse them
    default_roles: frozenset[Service] = frozenset(SERVICES)  # of plain {"AE": "tenant"} entries and any-AE callers
    move_destinations: dict[str, MoveDestination] = field(default_factory=dict)  # the environment's, every tenant's
    tls: ssl.SSLContext | None = None
    tls_port: int | None = None
    limits: AssociationLimits = field(default_factory=AssociationLimits)
    default_tenant: str = "default"
    peers: Peers = field(init=False)  # as read last (``DimseServer.use_stored_peers``: before each association)

    def __post_init__(self) -> None:
        self.peers = peers.from_settings(self.ae_tenants, self.default_roles, self.any_ae_tenant,
                                         self.move_destinations, self.default_tenant)  # fmt: skip

    @property
    def callers(self) -> Callers:
        return self.peers.callers

    def is_mapped(self, calling_ae: str) -> bool:
        """Whether the calling AE title is mapped to a tenant by name (it may use reserved slots)."""
        return calling_ae.strip() in self.peers.callers.by_ae


class _CallerCheckingAE(AE):
    """An AE that refuses, at association (A-ASSOCIATE-RJ, calling AE not recognised), every caller
    not mapped to a tenant, unless a tenant takes any caller. With no caller configured it refuses all.
    A backstop: ``DimseServer._on_requested`` decides first, with the caller's address and roles."""

    def __init__(self, config: DimseConfig) -> None:
        self._config = config
        super().__init__(ae_title=config.ae_title)

    @property
    def require_calling_aet(self) -> list[str]:
        if self._config.any_ae_tenant is not None:
            return []
        return list(self._config.callers.by_ae) or [""]  # AE titles are never empty: nobody matches

    @require_calling_aet.setter
    def require_calling_aet(self, value: list[str]) -> None:
        pass  # the configuration decides


def _prefer_proposed(supported: list[PresentationContext], proposed: list[PresentationContext]) -> None:
    """Order each supported context's syntaxes as the requestor proposed them (``transcoding.preference``).
    The contexts are this association's own copies (pynetdicom deep-copies them per association)."""
    proposals: dict[str, list[list[str]]] = {}
    for context in proposed:
        proposals.setdefault(str(context.abstract_syntax), []).append(list(context.transfer_syntax))
    for context in supported:
        if len(context.transfer_syntax) > 1:
            ordered = transcoding.preference(context.transfer_syntax, proposals.get(str(context.abstract_syntax), []))
            context.transfer_syntax = list(ordered)


def _accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    """The transfer syntaxes ``assoc`` accepted for ``sop_class`` with the node as Storage SCU (on a C-GET
    association: the requestor took the SCP role, PS3.7 D.3.3.4; on a C-MOVE sub-association: by default)."""
    return [
        str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class and cx.as_scu
    ]


def failure(status: int, comment: str) -> Dataset:
    """A DIMSE response status with an ErrorComment (0000,0902)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:64]
    return response


def application_entity(config: DimseConfig) -> AE:
    """The node's AE: the presentation contexts it accepts and, for C-MOVE sub-associations, proposes
    (the DICOM conformance statement is generated from it)."""
    ae = _CallerCheckingAE(config)
    ae.dimse_timeout = PEER_TIMEOUT_S
    ae.network_timeout = PEER_TIMEOUT_S
    ae.maximum_pdu_size = config.limits.max_pdu  # also announced on C-MOVE sub-associations
    ae.add_supported_context(Verification)
    for sop_class in RETRIEVABLE_CLASSES:  # a C-STORE of an AI result class is refused (iod: not supported)
        # scp_role/scu_role: we also send these classes back on C-GET associations
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES), scu_role=True, scp_role=True)
    for sop_class in (*QR_FIND, *QR_GET, *QR_MOVE):
        ae.add_supported_context(sop_class)
    ae.add_supported_context(commitment.STORAGE_COMMITMENT)  # SCP: N-ACTION in, N-EVENT-REPORT out
    for sop_class in STORAGE_CLASSES:  # C-MOVE sub-associations: one context per syntax, sent as stored
        for syntax in TRANSFER_SYNTAXES:
            ae.add_requested_context(sop_class, syntax)
    for sop_class in AI_RESULT_CLASSES:  # stored in explicit VR LE: two contexts each (128 at most in all)
        for syntax in AI_RESULT_SYNTAXES:
            ae.add_requested_context(sop_class, syntax)
    return ae


class DimseServer:
    def __init__(self, config: DimseConfig, engine: Engine, ingestor: Ingestor, audit: DicomAudit) -> None:
        self.config = config
        self._engine = engine
        self._ingestor = ingestor
        self._audit = audit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[Any] = []
        self._stored_peers = False
        self._reports = BoundedWorker("storage-commitment", MAX_PENDING_REPORTS)
        self._initial_peers = config.peers  # the configuration's (environment) peers

    async def use_stored_peers(self) -> None:
        """Seed the tenants' stored peers from the configuration (first start) and from now on read them before
        each association (``dicom_node.peers``): an admin's change applies without a restart."""
        await peers.seed(self._engine, self._initial_peers)
        self.config.peers = await self._current_peers()
        self._stored_peers = True

    async def _current_peers(self) -> Peers:
        config = self.config
        return await peers.load(self._engine, self._initial_peers, config.default_roles, config.any_ae_tenant)

    def _refresh_peers(self) -> None:
        """The peers as stored now; on a failure to read them, the last ones read (logged)."""
        if not self._stored_peers:
            return
        try:
            self.config.peers = self._run(self._current_peers)
        except Exception:
            log.exception("could not read the DICOM peers; the last ones read apply")

    # -- lifecycle -------------------------------------------------------------------------
    def _application_entity(self) -> AE:
        return application_entity(self.config)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        # The node checks what it needs itself (iod.py); pydicom's own warnings on odd values
        # received from devices would only fill the log.
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        self._loop = loop
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_N_ACTION, self._on_commitment_request),
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        admission = Admission(self.config.limits, self.config.is_mapped)  # one count for both ports
        address = (self.config.host, self.config.port)
        self._servers.append(listener.start_server(self._application_entity(), address, handlers, None, admission))
        if self.config.tls is not None and self.config.tls_port is not None:
            tls_address = (self.config.host, self.config.tls_port)
            tls_ae = self._application_entity()
            self._servers.append(listener.start_server(tls_ae, tls_address, handlers, self.config.tls, admission))

    @property
    def ports(self) -> list[int]:
        return [int(server.server_address[1]) for server in self._servers]

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
        self._servers.clear()
        self._reports.shutdown()

    # -- plumbing --------------------------------------------------------------------------
    def _run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        assert self._loop is not None
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(work(), self._loop)
        return future.result(timeout=HANDLER_TIMEOUT_S)

    def _caller(self, assoc: Association) -> DicomCaller | None:
        """The calling AE's entry as read last (a revoked service applies at once), or None once its title no
        longer works for the tenant the association was admitted for: an open association keeps its tenant."""
        caller = self.config.callers.named(assoc.requestor.ae_title)
        return caller if caller is not None and caller.tenant == getattr(assoc, ADMITTED_TENANT, None) else None

    def _caller_tenant(self, assoc: Association) -> str | None:
        caller = self._caller(assoc)
        return caller.tenant if caller is not None else None

    def tenant_of(self, assoc: Association) -> str:
        calling = assoc.requestor.ae_title.strip()
        caller = self._caller(assoc)
        if caller is None:  # refused at association (_on_requested), or no longer this tenant's
            raise InvalidInstance(statuses.CANNOT_UNDERSTAND, f"calling AE {calling} is not configured")
        return caller.tenant

    def _entry(self, event: Any, action: str, outcome: str, detail: str = "") -> dict[str, Any]:
        assoc = event.assoc
        return self._audit.entry(
            action=action,
            outcome=outcome,
            calling_ae=assoc.requestor.ae_title.strip(),
            called_ae=assoc.acceptor.ae_title.strip(),
            peer=f"{assoc.requestor.address}:{assoc.requestor.port}",
            tenant=caller.tenant if (caller := self.config.callers.named(assoc.requestor.ae_title)) else None,
            detail=detail,
        )

    def _record(self, event: Any, action: str, outcome: str, detail: str = "", *, wait: bool = True) -> None:
        """Audit an operation before its answer (``wait``), or an association event as it happens."""
        self._audit.record(self._entry(event, action, outcome, detail), wait=wait)

    # -- notification handlers -------------------------------------------------------------
    @staticmethod
    def _on_connection(event: Any) -> None:
        """No Nagle delay: DIMSE exchanges small PDUs that would otherwise wait out delayed ACKs."""
        try:
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            log.debug("could not set TCP_NODELAY", exc_info=True)

    def _on_requested(self, event: Any) -> None:
        """The association's admission (PS3.8 §9.3.3), before pynetdicom negotiates it: a calling AE that
        is not configured, or calls from an address its entry does not list, is rejected (A-ASSOCIATE-RJ,
        rejected-permanent, calling AE title not recognised); else only the presentation contexts of the
        services its roles allow are offered. Fails closed: any error offers no context at all."""
        assoc = event.assoc
        try:
            calling = assoc.requestor.primitive.calling_ae_title.strip()
            assoc.requestor.ae_title = calling  # as pynetdicom's negotiation would: the audit names the caller
            self._refresh_peers()
            caller = self.config.callers.admit(calling, str(assoc.requestor.address))
            if caller is None:
                assoc.acse.send_reject(0x01, 0x01, 0x03)
                evt.trigger(assoc, evt.EVT_REJECTED, {})
                assoc.kill()
                return
            setattr(assoc, ADMITTED_TENANT, caller.tenant)  # fixed for the association's life (_caller)
            offered = context_services(caller.roles)
            contexts = [cx for cx in assoc.acceptor.supported_contexts if service_of(cx.abstract_syntax) in offered]
            _prefer_proposed(contexts, assoc.requestor.primitive.presentation_context_definition_list)
            assoc.acceptor.supported_contexts = contexts
        except Exception:
            log.exception("DICOM association admission failed; no presentation context is offered")
            with contextlib.suppress(Exception):
                assoc.acceptor.supported_contexts = []

    def _on_accepted(self, event: Any) -> None:
        assoc = event.assoc
        caller = self.config.callers.named(assoc.requestor.ae_title)
        proposed = [cx.abstract_syntax for cx in assoc.requestor.primitive.presentation_context_definition_list]
        refused = withheld(caller, proposed) if caller is not None else []
        detail = f"not permitted for this AE: {', '.join(refused)}" if refused else ""
        self._record(event, "association", "accepted", detail, wait=False)

    def _on_rejected(self, event: Any) -> None:
        self._record(event, "association", "rejected", wait=False)

    def _on_released(self, event: Any) -> None:
        self._record(event, "association", "released", wait=False)

    def _on_aborted(self, event: Any) -> None:
        self._record(event, "association", "aborted", wait=False)

    # -- intervention handlers -------------------------------------------------------------
    def _on_echo(self, event: Any) -> int:
        self._record(event, "C-ECHO", "success")
        return statuses.SUCCESS

    def _on_store(self, event: Any) -> int | Dataset:
        """PS3.4 B.2: Success only once the instance is durable and indexed."""
        if (refusal := self._refusal(event, "store")) is not None:
            return refusal
        try:
            tenant = self.tenant_of(event.assoc)
            ds = event.dataset
            ds.file_meta = event.file_meta
            transfer_syntax = str(event.context.transfer_syntax)
            encoded = event.encoded_dataset(include_meta=True)
        except InvalidInstance as exc:
            return failure(exc.status, exc.comment)
        except Exception as exc:  # undecodable: truncated, bad VR, bad length
            self._record(event, "C-STORE", "failure", "cannot decode")
            return failure(statuses.CANNOT_UNDERSTAND, f"cannot decode the dataset: {type(exc).__name__}")
        success = self._entry(event, "C-STORE", "success", f"{ds.get('StudyInstanceUID')}/{ds.get('SOPInstanceUID')}")
        try:  # the success's AuditEvent commits with the instance: durable before the sender hears Success
            calling = event.assoc.requestor.ae_title.strip()
            self._run(lambda: self._ingestor.store(tenant, ds, encoded, transfer_syntax, audit_event(success), calling))
        except InvalidInstance as exc:
            self._record(event, "C-STORE", "failure", exc.comment)
            return failure(exc.status, exc.comment)
        except Exception:
            log.exception("C-STORE failed")
            self._record(event, "C-STORE", "failure", "internal error")
            return failure(statuses.OUT_OF_RESOURCES, "the instance could not be stored")
        self._audit.log(success)
        return statuses.SUCCESS

    def _refusal(self, event: Any, service: Service) -> Dataset | None:
        """0124 Refused: Not authorized (PS3.7 Annex C), audited, if the caller's roles lack ``service``;
        reached for C-STORE on a storage context kept for C-GET sub-operations (``callers``)."""
        calling = event.assoc.requestor.ae_title.strip()
        caller = self._caller(event.assoc)
        if caller is not None and service in caller.roles:
            return None
        action = DIMSE_NAMES[service]
        self._record(event, action, "failure", f"not authorized: AE {calling} may not use {action}")
        return failure(statuses.NOT_AUTHORIZED, f"AE {calling} may not use {action}")

    def _matches(self, event: Any) -> tuple[str, list[Any], list[str]]:
        tenant = self.tenant_of(event.assoc)
        level, keys, requested = identifier_keys(event.identifier)

        async def work() -> list[Any]:
            store = await self._engine.tenant(tenant)
            return await find(store, level, keys)

        return level, self._run(work), requested

    def _on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """PS3.4 C.4.1: one pending response per match, then Success."""
        try:
            level, matches, requested = self._matches(event)
        except (QueryError, InvalidInstance) as exc:
            self._record(event, "C-FIND", "failure", str(exc))
            yield failure(statuses.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
            return
        except Exception:
            log.exception("C-FIND failed")
            yield failure(statuses.UNABLE_TO_PROCESS, "the query could not be processed"), None
            return
        self._record(event, "C-FIND", "success", f"{level}: {len(matches)} matches")
        character_set = charsets.requested(event.identifier)
        for match in matches:
            if event.is_cancelled:
                yield statuses.CANCEL, None
                return
            response = response_dataset(match, requested, level)
            yield statuses.PENDING, charsets.with_character_set(response, character_set)

    def _instances(self, event: Any) -> list[Callable[[], Coroutine[Any, Any, Dataset]]]:
        """Readers of the stored objects a retrieve's identifier names, at any level."""
        tenant = self.tenant_of(event.assoc)
        level, keys, _ = identifier_keys(event.identifier)
        if level not in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
            raise QueryError(f"unknown QueryRetrieveLevel {level!r}")
        files = InstanceFiles(self._ingestor.blobs)

        async def work() -> list[Callable[[], Coroutine[Any, Any, Dataset]]]:
            store = await self._engine.tenant(tenant)
            if level == "IMAGE":
                images = await find(store, "IMAGE", keys)
            elif level == "SERIES":
                images = [
                    image
                    for series in await find(store, "SERIES", keys)
                    for image in await find(store, "IMAGE", {"SeriesInstanceUID": series.record.key})
                ]
            else:  # PATIENT and STUDY: the studies matching the (patient and study) keys
                images = [
                    image
                    for study in await find(store, "STUDY", keys)
                    for image in await find(store, "IMAGE", {"StudyInstanceUID": study.record.key})
                ]
            return [partial(files.read_dataset, store, tenant, image.record) for image in images]

        return self._run(work)

    def _sub_operations(self, event: Any, action: str, detail: str, accepted: AcceptedSyntaxes) -> Iterator[Any]:
        """The retrieve's count of sub-operations, then one (Pending, dataset) per matching instance, each
        decompressed when the peer accepted only native syntaxes for its SOP class (``accepted``)."""
        try:
            readers = self._instances(event)
        except (QueryError, InvalidInstance) as exc:
            self._record(event, action, "failure", str(exc))
            yield 1  # not 0: pynetdicom answers Success to zero sub-operations without asking for a status
            yield failure(statuses.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
            return
        self._record(event, action, "success", f"{len(readers)} instances{detail}")
        yield len(readers)
        for read in readers:
            if event.is_cancelled:
                yield statuses.CANCEL, None
                return
            try:
                dataset = self._run(read)
                dataset = transcoding.deliverable(dataset, accepted(str(dataset.SOPClassUID)))
            except ObjectErased:  # erased since the query: left out (counted as a failed sub-operation)
                continue
            except transcoding.TranscodingError as exc:  # sent as stored: the peer refuses it, a failed sub-operation
                log.warning("%s sub-operation: %s", action, exc)
            yield statuses.PENDING, dataset

    def _on_get(self, event: Any) -> Iterator[Any]:
        """PS3.4 C.4.3: the number of sub-operations, then one C-STORE per instance on this association."""
        yield from self._sub_operations(
            event, "C-GET", "", lambda sop_class: _accepted_syntaxes(event.assoc, sop_class)
        )

    def _on_move(self, event: Any) -> Iterator[Any]:
        """PS3.4 C.4.2: sub-operations on a new association to a configured destination."""
        destination = self.config.peers.destination(self._caller_tenant(event.assoc), str(event.move_destination))
        if destination is None:
            self._record(event, "C-MOVE", "failure", f"unknown destination {event.move_destination}")
            yield None, None
            return
        sub_association: list[Association] = []  # pynetdicom opens it once given the destination
        on_accepted = (evt.EVT_ACCEPTED, lambda accepted: sub_association.append(accepted.assoc))
        yield destination.host, destination.port, {"ae_title": destination.ae_title, "evt_handlers": [on_accepted]}

        def accepted(sop_class: str) -> list[str]:
            return _accepted_syntaxes(sub_association[0], sop_class) if sub_association else []

        yield from self._sub_operations(event, "C-MOVE", f" to {destination.ae_title}", accepted)

    def _on_commitment_request(self, event: Any) -> tuple[int | Dataset, Dataset | None]:
        """PS3.4 J.3.2.1: an N-ACTION "Request Storage Commitment" (a device that may store may ask), checked and
        answered at once from the durable store; the result goes in an N-EVENT-REPORT after the response."""
        if (refusal := self._refusal(event, "store")) is not None:
            return refusal, None
        if commitment.too_large(event.request.ActionInformation):  # refused before it is decoded
            comment = f"more than {commitment.MAX_ACTION_BYTES} bytes of Action Information"
            self._record(event, "N-ACTION", "failure", comment)
            return failure(commitment.RESOURCE_LIMITATION, comment), None
        try:
            tenant = self.tenant_of(event.assoc)
            request = commitment.parse_request(event.request.ActionTypeID, event.action_information)
        except commitment.InvalidCommitmentRequest as exc:
            self._record(event, "N-ACTION", "failure", exc.comment)
            return failure(exc.status, exc.comment), None
        except Exception as exc:  # an undecodable Action Information
            self._record(event, "N-ACTION", "failure", "cannot decode")
            return failure(commitment.INVALID_ARGUMENT_VALUE, f"cannot decode the request: {type(exc).__name__}"), None

        anew = self.config.peers.destination(tenant, event.assoc.requestor.ae_title) is not None
        if anew and not self._reports.reserve():  # one worker sends them: a bounded number wait for it
            comment = "too many commitment reports pending; ask again later"
            self._record(event, "N-ACTION", "failure", comment)
            return failure(commitment.RESOURCE_LIMITATION, comment), None

        async def work() -> commitment.CommitmentResult:
            return await commitment.commitment(await self._engine.tenant(tenant), self._ingestor.blobs, request)

        try:
            result = self._run(work)
        except Exception:
            log.exception("storage commitment failed")
            self._record(event, "N-ACTION", "failure", "internal error")
            if anew:
                self._reports.release()
            return failure(statuses.UNABLE_TO_PROCESS, "the request could not be processed"), None
        detail = f"transaction {result.transaction_uid}: {len(result.committed)} committed, {len(result.failed)} failed"
        self._record(event, "N-ACTION", "success", detail)
        if anew:
            self._reports.submit(partial(self._report_commitment, event, result))
        elif hasattr(event.assoc, "after_request"):
            event.assoc.after_request(partial(self._report_commitment, event, result))
        return statuses.SUCCESS, None

    def _report_commitment(self, event: Any, result: commitment.CommitmentResult) -> None:
        """The N-EVENT-REPORT (PS3.4 J.3.3): on a new association to the device's configured address when it has
        one (it may release the N-ACTION's association at once), else on the N-ACTION's association (pynetdicom
        sends it once the N-ACTION response is out); audited either way."""
        calling = event.assoc.requestor.ae_title.strip()
        info = commitment.event_information(result, self.config.ae_title)
        destination = self.config.peers.destination(self._caller_tenant(event.assoc), calling)
        if destination is not None:
            peer = (destination.host, destination.port, destination.ae_title)
            timeouts = {"acse_s": self.config.limits.artim_s, "dimse_s": PEER_TIMEOUT_S}
            reported = commitment.report_anew(self.config.ae_title, peer, result, info, **timeouts)
            how = "a new association"
        else:
            reported, how = commitment.report_on(event.assoc, result, info), "the same association"
        outcome = "success" if reported else "failure"
        self._record(event, "N-EVENT-REPORT", outcome, f"transaction {result.transaction_uid} on {how}", wait=False)
