"""The workflow engine (DESIGN data flow 2): an outbox consumer that runs each case's flow as a Task tree.

- ``imaging.instance-stored``: the case's flow is chosen (``library``); none: the root Task is ``rejected``
  with an OperationOutcome saying why, and nothing runs. Store-only: done. Human only: review opened. A flow
  with AI: the consent gate (pass, or its ``onRefused`` branch), then the AI step waits for the worker,
  which consumes the same event directly (no hop before the model).
- ``ai.findings-committed`` / ``ai.not-analysed``: escalation -> review, autonomous discharge or sign-off.
- ``workflow.resumed``: an event deferred while the case was halted, appended again by ``$resume``/``$retry``.
- ``resource.created`` of a case the EHR created through FHIR (a ``DiagnosticReport`` naming its product in
  ``meta.tag``, open, with no image yet): the flow starts at once. Human only: the review opens before any
  image; a flow with AI waits for the images ("awaiting images"). The image path finds what creation did:
  the same review Task, the same root, nothing twice.

Each event is handled in one transaction (Task tree, review Task, notifications together), with Tasks
of deterministic ids: a redelivered event (a crash before the acknowledgement) changes nothing twice.
"""

from __future__ import annotations

import logging
from typing import Any

from fhir_server.consent.decision import AI_ANALYSIS, decide
from fhir_server.outbox import Subscription
from fhir_server.repository import Repository
from fhir_server.storage.port import Engine, OutboxEvent
from fhir_server.workflow import codes, tree
from fhir_server.workflow.definition import Flow
from fhir_server.workflow.escalation import DISCHARGE, Verdict, judge
from fhir_server.workflow.events import (
    CASE_OPENED,
    FINDINGS_COMMITTED,
    INSTANCE_STORED,
    NOT_ANALYSED,
    NOTIFICATION,
    RESOURCE_CREATED,
    RESUMED,
    TOPICS,
    FindingsCommitted,
    NotAnalysed,
    Notification,
)
from fhir_server.workflow.library import Choice, FlowLibrary, tagged_product
from fhir_server.workflow.review import open_review
from fhir_server.workflow.review.codes import URGENCIES
from fhir_server.workflow.review.policy import urgency_for_risk
from fhir_server.workflow.routing import Image, uncovered

log = logging.getLogger(__name__)
CONSUMER = "workflow"
CLOSED = ("cancelled", "completed", "failed", "entered-in-error")
OPEN_CASE = ("registered", "partial", "preliminary")  # diagnosticreport.html status: not yet final
AWAITING_IMAGES = "awaiting images"
HUMAN_ONLY = Verdict("sign-off", "human review (this flow has no AI analysis)")


class Case:
    """One case's flow, tree and root Task inside one transaction."""

    def __init__(self, repo: Repository, choice: Choice, report: dict[str, Any] | None, report_id: str,
                 patient_id: str) -> None:  # fmt: skip
        self.repo, self.choice, self.report = repo, choice, report
        self.tree = tree.Tree(repo, report_id, patient_id)
        self.root: dict[str, Any] = {}

    @property
    def flow(self) -> Flow:
        assert self.choice.flow is not None
        return self.choice.flow

    async def notify(self, event: str, detail: str, extra: dict[str, Any] | None = None) -> None:
        if self.choice.flow is None or event in self.flow.notify or event == "refused":
            root = str(self.root.get("id"))
            message = Notification(event, self.tree.report_id, self.tree.patient_id, root, detail, extra or {})
            assert self.repo.transaction is not None
            await self.repo.transaction.append_event(NOTIFICATION, message.payload())

    async def finish(self, status: str, business: str) -> None:
        self.root.update(status=status, businessStatus={"text": business})
        self.root = await self.tree.save(self.root)


class WorkflowEngine:
    def __init__(self, engine: Engine, library: FlowLibrary) -> None:
        self.engine = engine
        self.library = library

    def subscription(self) -> Subscription:
        return Subscription(CONSUMER, TOPICS, self.handle)

    async def handle(self, tenant: str, event: OutboxEvent) -> None:
        topic, payload = event.topic, dict(event.payload)
        if topic == RESOURCE_CREATED and payload.get("type") != "DiagnosticReport":
            return  # every creation comes here: only a case's is the engine's business
        store = await self.engine.tenant(tenant)
        if topic == RESUMED:
            topic, payload = str(payload["topic"]), dict(payload["payload"])
        if topic == RESOURCE_CREATED:  # read before any write transaction: most reports start nothing
            opened = await _created_case(Repository.system(store, reason="workflow engine"), str(payload.get("id")))
            if opened is None:
                return
            topic, payload = CASE_OPENED, opened
        async with store.transaction() as tx:
            repo = Repository.system(store, reason="workflow engine", tx=tx)
            await self.run(repo, topic, payload)

    async def run(self, repo: Repository, topic: str, payload: dict[str, Any]) -> None:
        """One event of a case, in the repository's transaction."""
        report_id, patient_id = str(payload.get("report") or ""), str(payload.get("patient") or "")
        if not report_id or report_id == "None":
            return  # an image without a case (never opened by ingest): nothing to run
        report = await repo.current("DiagnosticReport", report_id)
        choice = await self.library.for_case(repo, report_id)
        case = Case(repo, choice, report, report_id, patient_id)
        canonical = choice.flow.canonical if choice.flow is not None else None
        case.root = await case.tree.root(canonical, report)
        if case.root["status"] == "on-hold":
            if tree.record(case.root, tree.DEFERRED, {"topic": topic, "payload": payload}):
                case.root = await case.tree.save(case.root)
            return
        if (case.root["status"] in CLOSED and topic != INSTANCE_STORED) or case.root["status"] == "cancelled":
            return
        if choice.flow is None:
            await self._refuse(case)
            return
        if topic == CASE_OPENED:
            await self._opened(case)
        elif topic == INSTANCE_STORED:
            await self._image(case, payload)
        elif topic == FINDINGS_COMMITTED:
            await self._findings(case, FindingsCommitted.of(payload))
        elif topic == NOT_ANALYSED:
            failure = NotAnalysed.of(payload)
            await case.tree.step(codes.AI_ANALYSIS, "failed" if failure.kind == "failed" else "completed",
                                 f"not analysed ({failure.kind}): {failure.reason}")  # fmt: skip
            await self._review(case, Verdict("review", f"escalated: image not analysed ({failure.kind}): "
                                             f"{failure.reason}"))  # fmt: skip

    async def _refuse(self, case: Case) -> None:
        """No applicable definition: the root Task is rejected with an OperationOutcome; nothing runs."""
        reason = case.choice.refusal
        if case.root["status"] == "rejected":
            return
        case.root["statusReason"] = {"text": reason}
        case.root["contained"] = [{"resourceType": "OperationOutcome", "id": "refusal", "issue": [
            {"severity": "error", "code": "not-found", "diagnostics": reason}]}]  # fmt: skip
        case.root["output"] = [{"type": {"text": "OperationOutcome"}, "valueReference": {"reference": "#refusal"}}]
        await case.finish("rejected", "refused: no workflow")
        await case.notify("refused", reason)

    async def _opened(self, case: Case) -> None:
        """A case the EHR created: human only opens its review now; other flows wait for the images."""
        if case.flow.store_only or case.flow.runs_ai:
            if case.root["businessStatus"]["text"] == tree.STARTED:
                case.root["businessStatus"] = {"text": AWAITING_IMAGES}
                case.root = await case.tree.save(case.root)
            return
        await self._review(case, HUMAN_ONLY)

    async def _image(self, case: Case, payload: dict[str, Any]) -> None:
        event = {k: v for k, v in payload.items() if k != "requeued"}
        new = tree.record(case.root, tree.IMAGE_EVENT, event)  # False: a redelivery, or a retry's re-run
        arrived = case.root["businessStatus"]["text"] == AWAITING_IMAGES  # the first image of an EHR's case
        if arrived:
            case.root["businessStatus"] = {"text": tree.STARTED}
        before = case.root["status"]
        if before == "rejected" or (new and before == "completed"):  # a definition now applies, or a new image
            for element in ("contained", "output", "statusReason"):
                case.root.pop(element, None)
            case.root.update(status="in-progress", instantiatesCanonical=case.flow.canonical)
        if new or arrived or case.root["status"] != before:
            case.root = await case.tree.save(case.root)
        flow = case.flow
        if flow.store_only:
            await case.tree.step(codes.STORE_ONLY, "completed", "stored")
            if case.root["status"] != "completed":
                await case.finish("completed", "stored")
                await case.notify("stored", "images stored; this flow runs nothing else")
            return
        if not flow.runs_ai:
            await self._review(case, HUMAN_ONLY)
            return
        if flow.consent_on_refused is not None and not await self._consent(case):
            return
        media = await case.repo.current("Media", str(payload.get("media") or "")) or {}
        unrouted = uncovered(flow, Image.of(media, str(payload.get("sopClass") or "")))
        if unrouted is not None:
            await self._review(case, Verdict("review", f"escalated: {unrouted}"))
            return
        analysis = await case.tree.get(codes.AI_ANALYSIS)
        if new or analysis is None or analysis["status"] in ("cancelled", "failed"):
            await case.tree.step(codes.AI_ANALYSIS, "in-progress", "awaiting findings")

    async def _consent(self, case: Case) -> bool:
        """The consent gate: True when the AI analysis may go on (pass branch)."""
        decision = await decide(case.repo, case.tree.patient_id, AI_ANALYSIS)
        if decision.permit:
            await case.tree.step(codes.CONSENT_GATE, "completed", "passed")
            return True
        await case.tree.step(codes.CONSENT_GATE, "completed", f"failed: {decision.reason}")
        await case.tree.step(codes.AI_ANALYSIS, "cancelled", "not run: no consent to the AI analysis")
        if self._on_refused(case) == "review":
            await self._review(case, Verdict("review", f"no AI analysis: {decision.reason}"))
        elif case.root["status"] != "completed":
            await case.finish("completed", "stopped: no consent to the AI analysis")
        return False

    @staticmethod
    def _on_refused(case: Case) -> str:
        return case.flow.consent_on_refused or "review"

    async def _findings(self, case: Case, findings: FindingsCommitted) -> None:
        verdict = judge(case.flow, findings)
        await case.tree.step(codes.AI_ANALYSIS, "completed", "findings committed",
                             [_output("findings", f"{findings.instance}|{findings.model}")])  # fmt: skip
        if case.flow.escalation is not None:
            key = f"{findings.instance}|{findings.model}|{verdict.action}"
            await case.tree.step(codes.ESCALATION, "completed", "escalated" if verdict.escalated else "not escalated",
                                 [_output("verdict", key)])  # fmt: skip
        if verdict.action != DISCHARGE:
            await self._review(case, verdict)
            return
        escalation = await case.tree.get(codes.ESCALATION) or {}
        verdicts = {o["valueString"] for o in escalation.get("output", [])}
        waiting = [m for m in findings.routed if f"{findings.instance}|{m}|{DISCHARGE}" not in verdicts]
        reviewing = await case.tree.get(codes.HUMAN_REVIEW)
        if waiting or (reviewing is not None and reviewing["status"] not in CLOSED):
            return  # another model has still to report, or a human reads the case already
        if await case.tree.step(codes.DISCHARGE, "completed", verdict.reason):
            await case.finish("completed", "discharged by the AI")
            await case.notify("discharged", verdict.reason)

    async def _review(self, case: Case, verdict: Verdict) -> None:
        """Open (or keep) the case's review of the flow's tier; urgent when the verdict says so."""
        review = case.flow.review
        assert review is not None
        urgency = urgency_for_risk(verdict.risk) if verdict.urgent else "routine"
        step = await case.tree.get(codes.HUMAN_REVIEW)
        if step is not None and step["status"] not in CLOSED:
            before = str(step["businessStatus"]["text"]).split(" ", 1)[0]
            if before in URGENCIES and URGENCIES.index(before) <= URGENCIES.index(urgency):
                return  # opened already, as urgently as this verdict asks
        task = await open_review(case.repo, report_id=case.tree.report_id, patient_id=case.tree.patient_id,
                                 tier=review.tier, reason=verdict.reason, urgency=urgency)  # fmt: skip
        reference = {"reference": f"Task/{task.resource['id']}"}
        await case.tree.step(codes.HUMAN_REVIEW, "in-progress", f"{urgency} review opened: {verdict.reason}",
                             [{"type": {"text": "review"}, "valueReference": reference}])  # fmt: skip
        if case.root["status"] != "in-progress":
            case.root["status"] = "in-progress"
        case.root["businessStatus"] = {"text": "in review"}
        case.root = await case.tree.save(case.root)
        opened = {"urgency": urgency, "tier": review.tier, "review": str(task.resource["id"])}
        await case.notify("review-opened", verdict.reason, opened)
        if verdict.escalated:
            await case.notify("escalated", verdict.reason, opened)


async def _created_case(repo: Repository, report_id: str) -> dict[str, str] | None:
    """The ids of a case the EHR just created through FHIR, when its flow starts now: it names its product,
    it is open, it has no image yet (ingest opens cases with their first image, whose event follows), and
    its subject is a Patient. None otherwise (another report, or a case whose images start it)."""
    report = await repo.current("DiagnosticReport", report_id) if report_id else None
    if report is None or tagged_product(report) is None or report.get("status") not in OPEN_CASE:
        return None
    if report.get("media") or report.get("imagingStudy"):
        return None
    subject = str((report.get("subject") or {}).get("reference") or "")
    if not subject.startswith("Patient/"):
        return None
    return {"report": report_id, "patient": subject.removeprefix("Patient/")}


def _output(kind: str, value: str) -> dict[str, Any]:
    return {"type": {"text": kind}, "valueString": value}
