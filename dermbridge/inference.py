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


def build_worker(settings: Settings, engine: Engine, blobs: BlobStore, audit: AuditTrail | None) -> InferenceWorker:
    """Loads the models (seconds: call it off the event loop); ``blobs``: the node's object store."""
    registry = ModelRegistry.load(settings.inference_models)
    return InferenceWorker(
        engine,
        blobs,
        registry.runners(settings.inference_device),
        audit=audit,
        server_version=__version__,
        batch=settings.inference_batch,
        human_review=False,  # the case's workflow opens reviews (fhir_server.workflow), not the worker
        flows=flow_library(settings.inference_human_review),
        abcd=settings.inference_abcd,
        conventions=ImagingConventions(settings.dicom_lesion_key, settings.dicom_timezone),
    )
