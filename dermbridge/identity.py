"""Wiring of patient identity and consent follow-ups: ``Patient/$merge`` (with the DICOM node's
part), ``$issuer-systems``, ``Consent/$ai-purposes``, ``DiagnosticReport/$analyze``, and the
consent watcher that re-queues a patient's images once a Consent permits their analysis."""

from __future__ import annotations

from dicom_node.analysis_queue import ANALYZE_DEFINITION, analyze, requeue_patient
from dicom_node.merge import merge_dicom
from fhir_server.api.router import FhirRouter, Operation
from fhir_server.audit.trail import AuditTrail
from fhir_server.consent.purposes import AI_PURPOSES_DEFINITION, ai_purposes_operation
from fhir_server.consent.reanalysis import ConsentWatcher
from fhir_server.identity.issuers import ISSUER_SYSTEMS_DEFINITION, issuer_systems_operation
from fhir_server.identity.merge import PatientMerge
from fhir_server.identity.merge_input import MERGE_DEFINITION
from fhir_server.repository import Repository
from fhir_server.storage.port import Engine
from inference.tasks import note_requeued


def register_identity(router: FhirRouter, trail: AuditTrail | None) -> None:
    merge = PatientMerge(trail)
    merge.hooks.append(merge_dicom)
    router.register(Operation("merge", ("Patient",), False, merge, MERGE_DEFINITION, True, "u"))
    router.register(Operation("issuer-systems", (), False, issuer_systems_operation, ISSUER_SYSTEMS_DEFINITION, True))
    router.register(Operation("ai-purposes", ("Consent",), False, ai_purposes_operation, AI_PURPOSES_DEFINITION, True))
    router.register(Operation("analyze", ("DiagnosticReport",), True, analyze, ANALYZE_DEFINITION, True, "u"))


async def _requeue_after_consent(repo: Repository, patient_id: str) -> int:
    """The patient's waiting images back in the queue, and their review Tasks saying so."""
    count = await requeue_patient(repo, patient_id)
    if count:
        await note_requeued(repo, patient_id, "a Consent now permits it")
    return count


def consent_watcher(engine: Engine) -> ConsentWatcher:
    return ConsentWatcher(engine, _requeue_after_consent)
