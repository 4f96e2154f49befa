"""Wiring of the clinical workflow (``fhir_server.workflow``): the definitions' lifecycle (write hooks,
``PlanDefinition/$activate``, ``$retire``), the interventions on a case (``Task/$halt`` ...), and the engine
as an outbox consumer. ``DERMBRIDGE_INFERENCE_HUMAN_REVIEW`` chooses the shipped default flow of the
skin-cancer product (ai-then-signoff, or ai-only when false); a tenant's active definition replaces it."""

from __future__ import annotations

from fhir_server import managed_content
from fhir_server.api.messages import FhirRequest
from fhir_server.api.router import FhirRouter, Operation, WriteHook
from fhir_server.outbox import OutboxDispatcher
from fhir_server.repository import Repository
from fhir_server.storage.port import Engine
from fhir_server.workflow.engine import WorkflowEngine
from fhir_server.workflow.guard import workflow_task_rule
from fhir_server.workflow.interventions import DEFINITIONS, intervene
from fhir_server.workflow.library import FlowLibrary
from fhir_server.workflow.lifecycle import ACTIVATE_DEFINITION, RETIRE_DEFINITION, activate, case_hook, definition_hook
from fhir_server.workflow.lifecycle import retire as retire_definition


def flow_library(human_review: bool) -> FlowLibrary:
    return FlowLibrary.with_human_review(human_review)


def _chained(first: WriteHook | None, second: WriteHook) -> WriteHook:
    if first is None:
        return second

    async def both(repo: Repository, request: FhirRequest) -> None:
        await first(repo, request)
        await second(repo, request)

    return both


def register_workflow(router: FhirRouter, library: FlowLibrary) -> None:
    router.write_hooks["PlanDefinition"] = _chained(router.write_hooks.get("PlanDefinition"), definition_hook)
    router.write_hooks["DiagnosticReport"] = _chained(router.write_hooks.get("DiagnosticReport"), case_hook(library))
    router.register(Operation("activate", ("PlanDefinition",), True, activate, ACTIVATE_DEFINITION, True, "u"))
    router.register(Operation("retire", ("PlanDefinition",), True, retire_definition, RETIRE_DEFINITION, True, "u"))
    for name, definition in DEFINITIONS.items():
        router.register(Operation(name, ("Task",), True, intervene, definition, True, "u"))
    managed_content.register("Task", workflow_task_rule)  # the case's Task tree: the engine's only


def start_engine(dispatcher: OutboxDispatcher, engine: Engine, library: FlowLibrary) -> WorkflowEngine:
    workflow = WorkflowEngine(engine, library)
    dispatcher.subscribe(workflow.subscription())
    return workflow
