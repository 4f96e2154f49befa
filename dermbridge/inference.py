"""Wiring of the inference worker: the models from Settings, the worker on the engine and blobs."""

from __future__ import annotations

from dermbridge import __version__
from dermbridge.settings import Settings
from dermbridge.workflow import flow_library
from dicom_node.blobs import BlobStore
from dicom_node.lesions import ImagingConventions
from fhir_server.audit.trail import AuditTrail
from fhir_server.storage.port import Engine
from inference.registry import ModelRegistry
from inference.worker import InferenceWorker

STOP_SECONDS = 20.0


def build_worker(settings: Settings, engine: Engine, audit: AuditTrail | None) -> InferenceWorker:
    """Loads the models (seconds: call it off the event loop)."""
    registry = ModelRegistry.load(settings.inference_models)
    return InferenceWorker(
        engine,
        BlobStore(settings.blob_root()),
        registry.runners(settings.inference_device),
        audit=audit,
        server_version=__version__,
        batch=settings.inference_batch,
        human_review=False,  # the case's workflow opens reviews (fhir_server.workflow), not the worker
        flows=flow_library(settings.inference_human_review),
        abcd=settings.inference_abcd,
        conventions=ImagingConventions(settings.dicom_lesion_key, settings.dicom_timezone),
    )


async def run_standalone(settings: Settings) -> None:
    """``dermbridge serve --role inference``: the worker alone, on the same data directory as the
    API process; it polls the outbox (another process's commits do not wake it)."""
    import asyncio
    import logging

    from dermbridge.storage import open_audit_trail, open_engine

    engine = open_engine(settings)
    await engine.open()
    audit = open_audit_trail(settings)
    worker = await asyncio.to_thread(build_worker, settings, engine, audit if settings.audit_enabled else None)
    await worker.start()
    logging.getLogger(__name__).info("inference worker running on %s", settings.data_dir)
    try:
        await asyncio.Event().wait()
    finally:
        try:
            async with asyncio.timeout(STOP_SECONDS):  # a round in progress ends at its next await
                await worker.stop()
        except TimeoutError:
            logging.getLogger(__name__).error("the inference worker did not stop within %s s; closing", STOP_SECONDS)
        await audit.close()
        await engine.close()
