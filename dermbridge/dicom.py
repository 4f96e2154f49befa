"""Wiring of the DICOM node: the DIMSE server configured from Settings."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
from typing import Any

from dermbridge.settings import Settings
from dermbridge.storage import open_blobs
from dicom_node.admission import AssociationLimits
from dicom_node.association_log import AssociationLog
from dicom_node.audit import DicomAudit
from dicom_node.dimse import HANDLER_TIMEOUT_S, DimseConfig, DimseServer, MoveDestination
from dicom_node.forwarding.forwarder import Forwarder
from dicom_node.ingest import Ingestor
from dicom_node.instance_files import InstanceFiles
from dicom_node.lesions import ImagingConventions
from dicom_node.uid_claims import UID_RECORDS, guard_dicom_uids
from fhir_server.audit.trail import AuditTrail
from fhir_server.storage.port import Engine, TenantUnknownError
from fhir_server.write_guards import register_guard

log = logging.getLogger(__name__)


def _tls(settings: Settings) -> ssl.SSLContext | None:
    if settings.dicom_tls_port is None:
        return None
    if settings.dicom_tls_certificate is None or settings.dicom_tls_private_key is None:
        raise ValueError("DICOM TLS needs DERMBRIDGE_DICOM_TLS_CERTIFICATE and DERMBRIDGE_DICOM_TLS_PRIVATE_KEY")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.dicom_tls_certificate, settings.dicom_tls_private_key)
    if settings.dicom_tls_client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(settings.dicom_tls_client_ca)
    return context


def _destinations(settings: Settings) -> dict[str, MoveDestination]:
    found = {}
    for ae_title, address in settings.dicom_move_destinations.items():
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"C-MOVE destination {ae_title}: {address!r} is not host:port")
        found[ae_title] = MoveDestination(ae_title, host, int(port))
    return found


def build_ingestor(settings: Settings, engine: Engine, trail: AuditTrail | None = None) -> Ingestor:
    base = settings.base_url()

    def public_url(tenant: str, api: str) -> str:
        return f"{base}/{api}/{tenant}"

    for resource_type in UID_RECORDS:  # clients may not forge the links ingest follows between images and FHIR
        register_guard(resource_type, guard_dicom_uids)
    blobs = open_blobs(settings.blob_url())
    conventions = ImagingConventions(settings.dicom_lesion_key, settings.dicom_timezone)
    return Ingestor(engine, blobs, public_url=public_url, duplicates=settings.dicom_duplicates,
                    trail=trail, conventions=conventions)  # fmt: skip


class TrailSink:
    """Hands DICOM audit records to the tenant's audit trail, from pynetdicom's threads to the loop.

    With ``wait`` the calling thread (a DIMSE operation about to answer) waits until the event is
    durable; association events are written without holding up the association."""

    def __init__(self, engine: Engine, trail: AuditTrail, default_tenant: str) -> None:
        self.engine = engine
        self.trail = trail
        self.default_tenant = default_tenant
        self.loop: asyncio.AbstractEventLoop | None = None

    def __call__(self, tenant: str | None, event: dict[str, Any], wait: bool = False) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._record(tenant or self.default_tenant, event), self.loop)
        future.add_done_callback(_log_failure)
        if wait:
            try:
                future.result(timeout=HANDLER_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                log.error("a DICOM AuditEvent took over %.0f s to write; answering without waiting", HANDLER_TIMEOUT_S)
            except Exception:  # logged by the callback; the operation is answered all the same
                log.debug("DICOM AuditEvent failed", exc_info=True)

    async def _record(self, tenant: str, event: dict[str, Any]) -> None:
        try:
            store = await self.engine.tenant(tenant)
        except TenantUnknownError:
            store = await self.engine.tenant(self.default_tenant)
        await self.trail.record(store, event)


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    if future.cancelled():
        log.error("a DICOM AuditEvent was not written: the server is stopping")
    elif future.exception() is not None:
        log.error("a DICOM AuditEvent could not be written", exc_info=future.exception())


def build_dimse(settings: Settings, engine: Engine, ingestor: Ingestor, sink: TrailSink | None = None) -> DimseServer:
    config = DimseConfig(
        ae_title=settings.dicom_ae_title,
        host=settings.dicom_host,
        port=settings.dicom_port,
        ae_tenants=dict(settings.dicom_ae_tenants),
        any_ae_tenant=settings.dicom_any_ae_tenant,
        default_roles=frozenset(settings.dicom_default_roles),
        move_destinations=_destinations(settings),
        default_tenant=settings.default_tenant,
        tls=_tls(settings),
        tls_port=settings.dicom_tls_port,
        limits=AssociationLimits(
            max_associations=settings.dicom_max_associations,
            per_peer=settings.dicom_max_associations_per_peer,
            reserved=settings.dicom_reserved_associations,
            artim_s=settings.dicom_artim_timeout_seconds,
            read_timeout_s=settings.dicom_pdu_read_timeout_seconds,
            max_pdu=settings.dicom_max_pdu_bytes,
        ),
    )
    audit = DicomAudit(settings.data_dir / "audit", sink)
    audit.observers.append(AssociationLog())  # a log line and the metrics of each association
    return DimseServer(config, engine, ingestor, audit)


def build_forwarder(settings: Settings, engine: Engine, ingestor: Ingestor, trail: AuditTrail | None) -> Forwarder:
    """The forwarding loop (``dicom_node.forwarding``), in the processes that run the outbox consumers."""
    return Forwarder(engine, InstanceFiles(ingestor.blobs), settings.dicom_ae_title, trail)
