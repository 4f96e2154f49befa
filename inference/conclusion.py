"""The case (DiagnosticReport) after an analysis: its results, and a conclusion that follows the
model card's risk hierarchy across every lesion and image of the case.

- The conclusion is recomputed from all the case's results each time, and the most concerning
  predicted diagnosis (tier of the hierarchy, then probability) decides: a later benign image never
  lowers it, and the order in which images arrive does not matter.
- Only models for clinical use conclude: a demonstration model's diagnoses (tagged ``demonstration``
  by ``inference.findings``) never reach ``conclusionCode`` nor a clinical conclusion. When the case has
  only demonstration results, the conclusion is the demonstration's, labelled as such. The model
  named is the one that produced the deciding finding (``Observation.device``).
- The text counts the case's analysed lesions, names a lesion by its BodyStructure location and
  qualifiers, says how many of the case's images have no AI result, never shows a score as 1.00 or
  0.00, and a benign conclusion also gives the highest malignant-class score.
- AI-written ``conclusion`` / ``conclusionCode`` carry the AIAST inline security label (the AI
  Transparency IG's labelling example: the DS4P ``extension-inline-sec-label``, and
  PROCESSINLINELABEL on the report).
- A clinician's conclusion is never overwritten: a report a clinician made ``final`` (amended,
  corrected) becomes ``appended`` with the late results; a draft whose conclusion the AI did not write
  gets the results and a note, its conclusion stays. An ``appended`` case is back in the review queue
  (``fhir_server.workflow.review.reopen_review``: a new round of its last review's tier).

R4 DiagnosticReport has no ``note``; notes use the R5 element's cross-version extension.
"""

from __future__ import annotations

import copy
from typing import Any

from fhir_server.repository import Repository, Stored
from fhir_server.workflow.review import reopen_review
from inference.findings import DEMO_NOTE, DEMO_TAG, DIAGNOSIS, ImageContext, component_value
from inference.governance import AIAST
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


def shown(value: float) -> str:
    """A score for people: never 1.00 or 0.00 (a softmax score is not certainty)."""
    return "≥0.99" if value >= 0.99 else "≤0.01" if value <= 0.01 else f"{value:.2f}"


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
    focus = _focus(result)
    name = lesions.get(focus) or result.get("bodySite", {}).get("text")
    return f"the lesion at {name} ({focus})" if name else focus


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


def _finding(card: ModelCard, pool: list[dict[str, Any]], top: dict[str, Any] | None, lesions: dict[str, str]) -> str:
    count = len({_focus(r) for r in pool})
    if top is None:
        finding = (f"no class reached its decision threshold on the {count} lesion(s) analysed" if pool
                   else "no lesion image analysed yet")  # fmt: skip
        return finding + _highest_malignant(card, pool, lesions)
    finding = (f"most concerning finding across {count} lesion(s) analysed: {top['valueCodeableConcept']['text']} "
               f"(probability {shown(_score(top))}) on {_where(top, lesions)}")  # fmt: skip
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
    rest = _not_analysed(report, pool)
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
    subject = report.get("subject", {}).get("reference", "")
    found = await repo.find("Observation", [("subject", subject)], MAX_RESULTS)
    return [s.resource for s in found if f"Observation/{s.resource['id']}" in listed and "device" in s.resource]


async def lesion_sites(repo: Repository, results: list[dict[str, Any]]) -> dict[str, str]:
    """Each lesion's site as a dermatologist names it: BodyStructure location and its qualifiers."""
    sites = {}
    for focus in sorted({_focus(r) for r in results if _focus(r).startswith("BodyStructure/")}):
        lesion = await repo.current("BodyStructure", focus.split("/", 1)[1])
        if lesion is not None:
            parts = [lesion.get("location", {}).get("text") or "site not recorded"]
            sites[focus] = ", ".join(parts + [q.get("text", "") for q in lesion.get("locationQualifier", [])])
    return sites


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
        state = f"was {current['status']}" if current.get("status") in SIGNED_OFF else "had a clinician's conclusion"
        _add_note(report, f"AI results of an image received after the report {state} "
                  f"(Media/{context.media_id}) were appended; the conclusion above is the clinician's and "
                  "does not include them: clinician review needed.", now)  # fmt: skip
    else:
        report["status"] = "preliminary"
        found = await case_results(repo, report)
        conclude(report, card, found, await lesion_sites(repo, found))
        concluded = True
    if report == current:
        return None
    stored = await repo.update(report, resource_type="DiagnosticReport", id=context.report_id, server_built=True)
    if report["status"] == "appended":  # images after sign-off: the case goes back to the review queue
        await reopen_review(
            repo,
            report_id=context.report_id,
            patient_id=context.patient_id,
            reason=f"images received after sign-off (Media/{context.media_id})",
        )
    return stored if concluded else None
