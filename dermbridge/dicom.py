"""Wiring of the DICOM node: the DIMSE server configured from Settings."""

from __future__ import annotations

import ssl

from dermbridge.settings import Settings
from dicom_node.audit import DicomAudit
from dicom_node.blobs import BlobStore
from dicom_node.dimse import DimseConfig, DimseServer, MoveDestination
from dicom_node.ingest import Ingestor
from fhir_server.storage.port import Engine


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


def build_ingestor(settings: Settings, engine: Engine) -> Ingestor:
    base = settings.base_url()

    def public_url(tenant: str, api: str) -> str:
        return f"{base}/{api}/{tenant}"

    blobs = BlobStore(settings.blob_dir or settings.data_dir / "blobs")
    return Ingestor(engine, blobs, public_url=public_url,
                    duplicates=settings.dicom_duplicates)  # fmt: skip


def build_dimse(settings: Settings, engine: Engine, ingestor: Ingestor) -> DimseServer:
    config = DimseConfig(
        ae_title=settings.dicom_ae_title,
        host=settings.dicom_host,
        port=settings.dicom_port,
        ae_tenants=dict(settings.dicom_ae_tenants),
        any_ae_tenant=settings.dicom_any_ae_tenant,
        move_destinations=_destinations(settings),
        tls=_tls(settings),
        tls_port=settings.dicom_tls_port,
    )
    return DimseServer(config, engine, ingestor, DicomAudit(settings.data_dir / "audit"))
