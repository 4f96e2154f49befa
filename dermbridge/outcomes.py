"""Wiring of outcomes monitoring (``fhir_server.outcomes``): ``$ai-performance`` with the body-site groups of
``inference.body_site_groups``, and the histology linker as an outbox consumer that checks the models of
the lesions it linked for drift (``fhir_server.outcomes.drift``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fhir_server.api.router import FhirRouter
from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError
from fhir_server.outbox import OutboxDispatcher
from fhir_server.outcomes.drift import check_device, default_window, devices_of_lesions
from fhir_server.outcomes.histology import HistologyLinker
from fhir_server.outcomes.registration import register_outcomes
from fhir_server.storage.port import Engine, TenantStore
from inference.body_site_groups import site_group

log = logging.getLogger(__name__)
MIN_CASES = 20  # lesions with (without) the condition before a drift can be raised


def register(router: FhirRouter) -> None:
    register_outcomes(router, site_group)


class DriftOnHistology:
    """After new ground truth: the drift check of each model that analysed those lesions."""

    def __init__(self, audit: AuditTrail | None, min_cases: int = MIN_CASES) -> None:
        self.audit = audit
        self.min_cases = min_cases

    async def __call__(self, store: TenantStore, lesions: list[str]) -> None:
        start, end = default_window(datetime.now(UTC))
        for device in await devices_of_lesions(store, lesions):
            try:
                found = await check_device(
                    store, device, start, end, site_group=site_group, min_cases=self.min_cases, trail=self.audit
                )
            except OperationOutcomeError as error:  # e.g. too many results in the window: the CLI says so too
                log.warning("AI performance drift check of Device/%s skipped: %s", device.get("id"), error)
                continue
            for evaluation in found:
                if evaluation.issue:
                    log.warning("AI performance drift: %s (%s)", evaluation.sentence(start, end), evaluation.issue)


def start_linker(dispatcher: OutboxDispatcher, engine: Engine, audit: AuditTrail | None) -> HistologyLinker:
    linker = HistologyLinker(engine, audit, after_link=DriftOnHistology(audit))
    dispatcher.subscribe(linker.subscription())
    return linker
