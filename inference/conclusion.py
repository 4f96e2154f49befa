"""The case (DiagnosticReport) after an analysis: its results, and a conclusion that follows the
model card's risk hierarchy across every lesion and image of the case.

- The conclusion is recomputed from all the case's results each time, and the most concerning
  predicted diagnosis (tier of the hierarchy, then probability) decides: a later benign image never
  lowers it, and the order in which images arrive does not matter.
- Only models for clinical use conclude: a demonstration model's diagnoses (tagged ``demonstration``
  by ``inference.findings``) never reach ``conclusionCode`` nor a clinical conclusion. When the case has
  only demonstration results, the conclusion is the demonstration's, labelled as such. The model
  named is the one that produced the deciding finding (``Observation.device``).
- The text names every lesion with the deciding finding (of the lesions analysed), each by its
  BodyStructure location, qualifiers and series with its image and score, never by a bare resource
  id; says how many of the case's images have no AI result (recounted when an image is refused:
  ``refresh_conclusion``), never shows a score as 1.00 or 0.00, and a benign conclusion also gives
  the highest malignant-class score. A risk result whose reading crossed its threshold since the
  lesion's earlier visit is named with both scores (``inference.lesion_history``).
  ``effectiveDateTime`` is the first analysed image's acquisition time, ``issued`` the last AI update.
- AI-written ``conclusion`` / ``conclusionCode`` carry the AIAST inline security label (the AI
  Transparency IG's labelling example: the DS4P ``extension-inline-sec-label``, and
  PROCESSINLINELABEL on the report).
- A clinician's conclusion is never overwritten: a report a clinician made ``final`` (amended,
  corrected; a clinician must sign it off, ``fhir_server.report_sign_off``) becomes ``appended`` with the
  late results; a draft whose conclusion the AI did not write gets the results and a note, its
  conclusion stays. The note says whose the conclusion is (the clinician's, or still the AI's). An
  ``appended`` case is back in the review queue (``fhir_server.workflow.review.reopen_review``: a new
  round of its last review's tier).

R4 DiagnosticReport has no ``note``; notes use the R5 element's cross-version extension.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from fhir_server.repository import Repository, Stored
from fhir_server.workflow.review import reopen_review
from inference.findings import DEMO_NOTE, DEMO_TAG, DIAGNOSIS, ImageContext, component_value, shown
from inference.governance import AIAST
from inference.lesion_history import change_since_earlier
from inference.model_card import ModelCard

INLINE_LABEL = "http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-inline-sec-label"
PROCESS_INLINE = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PROCESSINLINELABEL",
                  "display": "process inline security label"}  # fmt: skip
NOTE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note"
SIGNED_OFF = ("final", "amended", "corrected", "appended")
CLOSED = ("cancelled", "entered-in-error")
MAX_RESULTS = 5000
AI_PREFIX = "AI (preliminary, "
DEMO_PREFIX = "DEMONSTRATION ONLY, NOT A DIAGNOSIS"
NO_RESULT = "no consent, failed, unsuitable or still pending"


def _ai_label() -> list[dict[str, Any]]:
    return [{"url": INLINE_LABEL, "valueCoding": AIAST}]


def _add_note(report: dict[str, Any], text: str, time: str | None = None) -> None:
    notes = report.setdefault("extension", [])
    if any(n.get("url") == NOTE and n.get("valueAnnotation", {}).get("text") == text for n in notes):
        return
    annotation: dict[str, Any] = {"text": text}
    if time:
        annotation["time"] = time
    notes.append({"url": NOTE, "valueAnnotation": annotation})


def _add_security(report: dict[str, Any], label: dict[str, str], key: str = "security") -> None:
    labels = report.setdefault("meta", {}).setdefault(key, [])
    if not any(existing.get("code") == label["code"] for existing in labels):
        labels.append(label)


def is_demonstration(result: dict[str, Any]) -> bool:
    return any(t.get("system") == DEMO_TAG["system"] and t.get("code") == DEMO_TAG["code"]
               for t in result.get("meta", {}).get("tag", []))  # fmt: skip


def is_diagnosis(result: dict[str, Any]) -> bool:
    return any(c.get("code") == DIAGNOSIS["code"] for c in result.get("code", {}).get("coding", []))


def _tier(result: dict[str, Any]) -> str:
    tier = component_value(result, "risk-tier") or {}
    return str((tier.get("coding") or [{}])[0].get("code", ""))


def _score(result: dict[str, Any]) -> float:
    value = component_value(result, "probability") if is_diagnosis(result) else result.get("valueQuantity", {})
    return float(value.get("value", 0.0) if isinstance(value, dict) else value or 0.0)


def _concern(card: ModelCard, diagnosis: dict[str, Any]) -> tuple[int, float, str]:
    return card.rank(_tier(diagnosis)), _score(diagnosis), str(diagnosis.get("id"))


def _focus(result: dict[str, Any]) -> str:
    return str((result.get("focus") or [{}])[0].get("reference", ""))


def _model(result: dict[str, Any]) -> str:
    device = result.get("device", {})
    return str(device.get("display") or device.get("reference") or "unknown model")


def _where(result: dict[str, Any], lesions: dict[str, str]) -> str:
    """The lesion for people (site, laterality, series), never a bare resource id."""
    name = lesions.get(_focus(result)) or result.get("bodySite", {}).get("text")
    return f"the lesion at {name}" if name else "a lesion whose site is not recorded"


def _image(result: dict[str, Any]) -> str:
    return next((str(d["reference"]) for d in result.get("derivedFrom", [])
                 if str(d.get("reference", "")).startswith("Media/")), "image not recorded")  # fmt: skip


def _called(result: dict[str, Any]) -> str:
    return str(result.get("valueCodeableConcept", {}).get("text", ""))


def _lesions_called(pool: list[dict[str, Any]], top: dict[str, Any], lesions: dict[str, str]) -> list[str]:
    """Every lesion whose predicted diagnosis is the deciding one's (its best image first), most concerning
    first: a case with three melanoma calls names all three, not the first."""
    best: dict[str, dict[str, Any]] = {}
    for result in pool:
        same = is_diagnosis(result) and _tier(result) == _tier(top) and _called(result) == _called(top)
        if same and (_focus(result) not in best or _score(result) > _score(best[_focus(result)])):
            best[_focus(result)] = result
    ordered = sorted(best.values(), key=_score, reverse=True)
    return [f"{_where(r, lesions)} (image {_image(r)}, probability {shown(_score(r))})" for r in ordered]


def _highest_malignant(card: ModelCard, pool: list[dict[str, Any]], lesions: dict[str, str]) -> str:
    scores = [r for r in pool if not is_diagnosis(r) and "valueQuantity" in r and card.malignant(_tier(r) or "benign")]
    if not scores:
        return ""
    top = max(scores, key=_score)
    assessed = (top["code"].get("coding") or [{}])[0].get("display", top["code"].get("text", ""))
    return f"; highest malignant-class score: {assessed} {shown(_score(top))} on {_where(top, lesions)}"


def _not_analysed(report: dict[str, Any], pool: list[dict[str, Any]]) -> str:
    images = [m.get("link", {}).get("reference") for m in report.get("media", [])]
    analysed = {d.get("reference") for r in pool for d in r.get("derivedFrom", [])}
    missing = [i for i in images if i not in analysed]
    return f" {len(missing)} of {len(images)} image(s) of the case have no AI result ({NO_RESULT})." if missing else ""


def _changes(pool: list[dict[str, Any]], lesions: dict[str, str]) -> str:
    """Risk results whose reading crossed a threshold since the lesion's earlier visit (lesion_history)."""
    changed = [(r, text) for r in pool if not is_diagnosis(r) and (text := change_since_earlier(r))]
    return "".join(f" Since an earlier visit, {r['code']['coding'][0].get('display', '')} on {_where(r, lesions)}: "
                   f"{text}." for r, text in changed)  # fmt: skip


def _finding(card: ModelCard, pool: list[dict[str, Any]], top: dict[str, Any] | None, lesions: dict[str, str]) -> str:
    count = len({_focus(r) for r in pool})
    if top is None:
        finding = (f"no class reached its decision threshold on the {count} lesion(s) analysed" if pool
                   else "no lesion image analysed yet")  # fmt: skip
        return finding + _highest_malignant(card, pool, lesions)
    called = _lesions_called(pool, top, lesions)
    finding = (f"most concerning finding, {_called(top)}, on {len(called)} of {count} lesion(s) analysed: "
               + "; ".join(called))  # fmt: skip
    return finding + (_highest_malignant(card, pool, lesions) if _tier(top) == "benign" else "")


def conclude(
    report: dict[str, Any], card: ModelCard, results: list[dict[str, Any]], lesions: dict[str, str] | None = None
) -> None:
    """Set the AI's preliminary conclusion from the most concerning predicted diagnosis of the case's
    clinical models (``results``: the case's AI results; ``lesions``: BodyStructure reference -> site)."""
    lesions = lesions or {}
    clinical = [r for r in results if not is_demonstration(r)]
    pool = clinical or [r for r in results if is_demonstration(r)]
    top = max((r for r in pool if is_diagnosis(r)), key=lambda d: _concern(card, d), default=None)
    models = sorted({_model(r) for r in pool}) or [f"{card.name} {card.version}"]
    model = _model(top) if top is not None else ", ".join(models)
    finding = _finding(card, pool, top, lesions) + "."
    rest = _changes(pool, lesions) + _not_analysed(report, pool)
    report.pop("conclusionCode", None)
    if clinical or (not results and card.clinical_use):
        if clinical and len(clinical) < len(results):
            rest += " A demonstration model's results in this case are not part of this conclusion."
        report["conclusion"] = f"{AI_PREFIX}{model}): {finding}{rest} Awaiting clinician review."
        if top is not None:
            report["conclusionCode"] = [{**copy.deepcopy(top["valueCodeableConcept"]), "extension": _ai_label()}]
    else:
        report["conclusion"] = (f"{DEMO_PREFIX} ({model}, not for clinical use): {finding}{rest} "
                                "A clinician must assess every lesion.")  # fmt: skip
        _add_note(report, DEMO_NOTE)
        _add_security(report, DEMO_TAG, "tag")
    report["_conclusion"] = {"extension": _ai_label()}
    _add_security(report, PROCESS_INLINE)


def ai_wrote_conclusion(report: dict[str, Any]) -> bool:
    """No conclusion yet, or one the AI wrote (its inline AIAST label and its wording): the AI may
    rewrite it. A clinician's words (even in a copy that kept the label) are theirs."""
    conclusion = report.get("conclusion")
    if not conclusion:
        return True
    labels = report.get("_conclusion", {}).get("extension", [])
    labelled = any(e.get("url") == INLINE_LABEL and e.get("valueCoding", {}).get("code") == AIAST["code"]
                   for e in labels)  # fmt: skip
    return labelled and str(conclusion).startswith((AI_PREFIX, DEMO_PREFIX))


async def case_results(repo: Repository, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The AI results (risk results and predicted diagnoses) among the report's results."""
    listed = {r.get("reference") for r in report.get("result", [])}
    ids = sorted(str(r).removeprefix("Observation/") for r in listed if str(r).startswith("Observation/"))
    if not ids:
        return []
    subject = report.get("subject", {}).get("reference", "")
    # the listed ones only (not every Observation of the patient's history), in the search's order
    found = await repo.find("Observation", [("subject", subject), ("_id", ",".join(ids))], MAX_RESULTS)
    return [s.resource for s in found if f"Observation/{s.resource['id']}" in listed and "device" in s.resource]


async def lesion_sites(repo: Repository, results: list[dict[str, Any]]) -> dict[str, str]:
    """Each lesion as a dermatologist names it: BodyStructure location and its qualifiers (laterality),
    and the series that shows it (its description), so two lesions at one site are told apart."""
    sites = {}
    for focus in sorted({_focus(r) for r in results if _focus(r).startswith("BodyStructure/")}):
        lesion = await repo.current("BodyStructure", focus.split("/", 1)[1])
        if lesion is not None:
            parts = [lesion.get("location", {}).get("text") or "site not recorded"]
            parts += [q.get("text", "") for q in lesion.get("locationQualifier", [])]
            series = str(lesion.get("description", "")).partition(", series ")[2]
            sites[focus] = ", ".join(parts + ([f"series {series}"] if series else []))
    return sites


def _late_note(current: dict[str, Any], context: ImageContext) -> str:
    """Why late results are not in the conclusion, naming who wrote that conclusion: a clinician, or
    the AI (a report made final without changing the AI's words keeps them, and says so)."""
    state = f"was {current['status']}" if current.get("status") in SIGNED_OFF else "had a clinician's conclusion"
    author = ("still the AI's preliminary conclusion (AI-labelled; no clinician rewrote it)"
              if ai_wrote_conclusion(current) else "the clinician's")  # fmt: skip
    return (
        f"AI results of an image received after the report {state} (Media/{context.media_id}) were appended; "
        f"the conclusion above is {author} and does not include them: clinician review needed."
    )


def _dates(report: dict[str, Any], context: ImageContext, now: str) -> None:
    """``effectiveDateTime``: when the case's images were taken (the first image's acquisition time);
    ``issued``: this version, the last AI update of the report (diagnosticreport.html)."""
    if context.acquired and "effectiveDateTime" not in report and "effectivePeriod" not in report:
        report["effectiveDateTime"] = context.acquired
    report["issued"] = now


async def refresh_conclusion(repo: Repository, context: ImageContext, card: ModelCard) -> Stored | None:
    """Recount the AI's conclusion after an image of the case was refused (unsuitable, no consent):
    the images without an AI result are counted on every refusal, not only when a result arrives."""
    current = await repo.current("DiagnosticReport", context.report_id)
    if current is None or current.get("status") in (*SIGNED_OFF, *CLOSED) or not current.get("conclusion"):
        return None
    if not ai_wrote_conclusion(current):
        return None
    report = copy.deepcopy(current)
    found = await case_results(repo, report)
    conclude(report, card, found, await lesion_sites(repo, found))
    if report == current:
        return None
    report["issued"] = datetime.now(UTC).isoformat(timespec="milliseconds")  # an AI update of the report
    return await repo.update(report, resource_type="DiagnosticReport", id=context.report_id, server_built=True)


async def update_case(
    repo: Repository, context: ImageContext, card: ModelCard, written: list[Stored], now: str
) -> Stored | None:
    """Add an analysis's results to its case and keep the conclusion at the case's highest risk;
    returns the report version when the AI wrote its conclusion."""
    current = await repo.current("DiagnosticReport", context.report_id)
    if current is None or current.get("status") in CLOSED:
        return None
    report = copy.deepcopy(current)
    results = report.setdefault("result", [])
    known = {r.get("reference") for r in results}
    added = [f"Observation/{s.resource['id']}" for s in written if f"Observation/{s.resource['id']}" not in known]
    results += [{"reference": reference} for reference in added]
    concluded = False
    if current.get("status") in SIGNED_OFF or not ai_wrote_conclusion(current):
        if not added:
            return None
        if current.get("status") in SIGNED_OFF:
            report["status"] = "appended"
        _add_note(report, _late_note(current, context), now)
    else:
        report["status"] = "preliminary"
        found = await case_results(repo, report)
        conclude(report, card, found, await lesion_sites(repo, found))
        concluded = True
    if report == current:
        return None
    _dates(report, context, now)
    stored = await repo.update(report, resource_type="DiagnosticReport", id=context.report_id, server_built=True)
    if report["status"] == "appended":  # images after sign-off: the case goes back to the review queue
        await reopen_review(
            repo,
            report_id=context.report_id,
            patient_id=context.patient_id,
            reason=f"images received after sign-off (Media/{context.media_id})",
        )
    return stored if concluded else None
