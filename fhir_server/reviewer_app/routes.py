"""The reviewer app at ``/app/``: worklist, case view, claim / release and the decision, for the signed-in
person (``fhir_server.people.signed_in``). Every read and write is one FHIR interaction as that person
(``fhir_as``: the same router, AccessPolicy, reviewer eligibility and audit trail as the REST API); every form
post carries the session's CSRF token; no token ever reaches the browser (the session cookie is HttpOnly)."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from fhir_server.people.signed_in import Principal, SignedInUser, fhir_as
from fhir_server.reviewer_app import case_sections, case_view, worklist
from fhir_server.reviewer_app.decision_form import MANAGEMENT, FormError, operation
from fhir_server.reviewer_app.dermoscopy import is_abcd
from fhir_server.reviewer_app.posted import posted_form
from fhir_server.reviewer_app.rendering import page, problem, static_file
from fhir_server.workflow.review.codes import DECLINE_REASONS, URGENCIES, is_review_task

router = APIRouter(prefix="/app", include_in_schema=False)
DIAGNOSES = "https://dermbridge.org/fhir/ValueSet/skin-lesion-diagnoses"
MAX_LISTED = 200  # resources of one kind on the case view
ID_LENGTH = 64
WORKLIST_ROWS = 200  # rows on the worklist page; the counts say when the queue is longer


class Refused(Exception):
    """A FHIR interaction answered with an error: the page shows its words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _fhir(
    request: Request, me: Principal, method: str, path: list[str], params: Any = None, body: Any = None
) -> Any:
    answer = await fhir_as(request, me, method, path, params, body)
    if answer.status >= 400:
        issues = (answer.body or {}).get("issue") or [{}]
        raise Refused(answer.status, str(issues[0].get("diagnostics") or issues[0].get("code") or "refused"))
    return answer.body or {}


async def _found(request: Request, me: Principal, kind: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    bundle = await _fhir(request, me, "GET", [kind], [*params, ("_count", str(MAX_LISTED))])
    return [e["resource"] for e in bundle.get("entry") or [] if (e.get("search") or {}).get("mode", "match") == "match"]


def _finder(request: Request, me: Principal) -> case_sections.Find:
    """A search as ``me`` for the case's extra sections: None when the person may not make it (403)."""

    async def find(kind: str, params: list[tuple[str, str]]) -> list[dict[str, Any]] | None:
        try:
            return await _found(request, me, kind, params)
        except Refused as refused:
            if refused.status == 403:
                return None
            raise

    return find


def _ids(references: list[dict[str, Any]], kind: str) -> str:
    refs = [str(r.get("reference") or "") for r in references]
    return ",".join(r.split("/", 1)[1] for r in refs if r.startswith(f"{kind}/"))[:4000]


def _user(me: Principal) -> dict[str, Any]:
    admin = "admin" in me.session.user.roles  # only shows the link: the admin pages check for themselves
    return {"username": me.username, "fhir_user": me.fhir_user, "csrf": me.csrf, "admin": admin}


@router.get("/static/{name}")
async def asset(name: str) -> Response:
    return static_file(name)


@router.get("/")
async def worklist_page(request: Request, me: SignedInUser, tier: str = "", status: str = "all") -> Response:
    """The reviewer's queue (``Task/$worklist``): most urgent first, then the earliest due date."""
    status = status if status in worklist.STATUSES else "all"
    params = [("_count", str(WORKLIST_ROWS)), *([("tier", tier[:ID_LENGTH])] if tier else [])]
    try:
        bundle = await _fhir(request, me, "GET", ["Task", "$worklist"], params)
    except Refused as refused:
        return problem("Worklist", refused.message, refused.status, user=_user(me))
    tasks = [e["resource"] for e in bundle.get("entry") or []]
    everything = [worklist.row(t, me.fhir_user) for t in tasks]
    listed = worklist.rows(tasks, me.fhir_user, status)
    tiers = sorted({r.tier for r in everything} | ({tier} if tier else set()))
    return page(
        "worklist.html", user=_user(me), rows=listed, counts=worklist.counts(everything, bundle.get("total")),
        tiers=tiers, tier=tier, status=status, statuses=worklist.STATUSES,
    )  # fmt: skip


@router.get("/cases/{task_id}")
async def case_page(request: Request, me: SignedInUser, task_id: str) -> Response:
    """One case: patient banner, consent, per lesion the AI findings, images and saliency maps, the decision."""
    try:
        return await _case(request, me, task_id[:ID_LENGTH], {})
    except Refused as refused:
        return problem("Case", refused.message, refused.status, user=_user(me))


async def _case(request: Request, me: Principal, task_id: str, form: dict[str, str], message: str = "") -> Response:
    task = await _fhir(request, me, "GET", ["Task", task_id])
    focus = str((task.get("focus") or {}).get("reference") or "")
    if not is_review_task(task) or not focus.startswith("DiagnosticReport/"):
        raise Refused(404, f"Task/{task_id} is not the review of a case")
    report = await _fhir(request, me, "GET", ["DiagnosticReport", focus.removeprefix("DiagnosticReport/")])
    patient_ref = str((report.get("subject") or {}).get("reference") or "")
    if not patient_ref.startswith("Patient/"):
        raise Refused(422, f"{focus} names no patient")
    patient = await _fhir(request, me, "GET", patient_ref.split("/", 1))
    results = report.get("result") or []
    observations = await _found(request, me, "Observation", [("_id", _ids(results, "Observation"))]) if results else []
    media_refs = [m.get("link") or {} for m in report.get("media") or []]
    derived = [d for o in observations for d in o.get("derivedFrom") or []]
    media_ids = _ids([*media_refs, *derived], "Media")
    media = await _found(request, me, "Media", [("_id", media_ids)]) if media_ids else []
    saliency = "|".join(case_view.SALIENCY)
    maps = await _found(request, me, "Media", [("subject", patient_ref), ("modality", saliency)])
    structures = await _found(request, me, "BodyStructure", [("patient", patient_ref)])
    consents = await _found(request, me, "Consent", [("patient", patient_ref)])
    diagnoses = await _diagnoses(request, me)
    ai = [o for o in observations if "device" in o]
    labels = {f"BodyStructure/{s['id']}": case_view._structure_label(s) for s in structures}
    extra = await case_sections.sections(
        _finder(request, me), patient_ref, task, report, observations, structures, labels
    )
    view = {
        "task": worklist.row(task, me.fhir_user), "task_status": task.get("status"), "report": report,
        "banner": case_view.banner(patient), "consent": case_view.consent_summary(consents),
        "lesions": case_view.lesions([o for o in observations if not is_abcd(o)], media, maps, structures),
        "structures": list(labels.items()), **extra,
        "demonstration": any(case_view.is_demonstration(o) for o in ai), "has_ai": bool(ai),
        "diagnoses": diagnoses, "urgencies": URGENCIES, "management": MANAGEMENT, "reasons": DECLINE_REASONS,
        "form": form, "message": message,
    }  # fmt: skip
    return page("case.html", 200 if not message else 422, user=_user(me), **view)


async def _diagnoses(request: Request, me: Principal) -> dict[str, str]:
    """The terminology service's expansion of the dermatology diagnoses value set: code -> display."""
    expanded = await _fhir(request, me, "GET", ["ValueSet", "$expand"], [("url", DIAGNOSES), ("count", "500")])
    contains = (expanded.get("expansion") or {}).get("contains") or []
    return {str(c["code"]): str(c.get("display") or c["code"]) for c in contains if "code" in c}


@router.post("/cases/{task_id}/{action}")
async def act(request: Request, me: SignedInUser, task_id: str, action: str) -> Response:
    """Claim, release or decide (a form post carrying the session's CSRF token)."""
    task_id = task_id[:ID_LENGTH]
    form = await posted_form(request, me)
    if not isinstance(form, dict):
        return form
    try:
        if action in ("claim", "release"):
            await _fhir(request, me, "POST", ["Task", task_id, f"${action}"], body={"resourceType": "Parameters"})
            return RedirectResponse(f"/app/cases/{task_id}" if action == "claim" else "/app/", 303)
        if action != "decide":
            return problem("Not found", "no such action", 404, user=_user(me))
        try:
            chosen = operation(form, await _diagnoses(request, me))
        except FormError as error:
            return await _case(request, me, task_id, form, str(error))
        try:
            await _fhir(request, me, "POST", ["Task", task_id, f"${chosen.name}"], body=chosen.parameters)
        except Refused as refused:  # the case page again, with what was typed and why it was not done
            return await _case(request, me, task_id, form, f"Not done: {refused.message}")
        return RedirectResponse(f"/app/?done={chosen.name}", 303)
    except Refused as refused:
        return problem("Not done", refused.message, refused.status, user=_user(me), task_id=task_id)


@router.get("/binary/{binary_id}")
async def binary(request: Request, me: SignedInUser, binary_id: str) -> Response:
    """A Binary's bytes (a saliency map's PNG), read as the signed-in person (binary.html#security)."""
    try:
        found = await _fhir(request, me, "GET", ["Binary", binary_id[:ID_LENGTH]])
    except Refused as refused:
        return Response(refused.message, refused.status, media_type="text/plain")
    media = str(found.get("contentType") or "")
    if media not in ("image/png", "image/jpeg"):
        return Response("not an image", 415, media_type="text/plain")
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}  # as every page: shared computers
    return Response(base64.b64decode(found.get("data") or ""), 200, media_type=media, headers=headers)
