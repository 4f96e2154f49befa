"""The case (DiagnosticReport) after an analysis: its results, and a conclusion that follows the
model card's risk hierarchy across every lesion and image of the case.

- The conclusion is recomputed from all the case's predicted diagnoses each time, and the most
  concerning one (tier of the hierarchy, then probability) decides: a later benign image never lowers
  it, and the order in which images arrive does not matter.
- AI-written ``conclusion`` / ``conclusionCode`` carry the AIAST inline security label (the AI
  Transparency IG's labelling example: the DS4P ``extension-inline-sec-label``, and
  PROCESSINLINELABEL on the report).
- A model whose card says ``clinical_use: false`` never writes a conclusion that reads as a diagnosis:
  no ``conclusionCode``, a conclusion that says DEMONSTRATION first, a note and a ``meta.tag``.
- A report a clinician has made ``final`` (or amended/corrected) is never silently altered: the late
  image's results are added, the report becomes ``appended`` and a note says why; the clinician's
  conclusion stays.

R4 DiagnosticReport has no ``note``; notes use the R5 element's cross-version extension.
"""

from __future__ import annotations

import copy
from typing import Any

from fhir_server.repository import Repository, Stored
from inference.findings import DEMO_NOTE, DEMO_TAG, DIAGNOSIS_TOKEN, ImageContext, component_value
from inference.governance import AIAST
from inference.model_card import ModelCard

INLINE_LABEL = "http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-inline-sec-label"
PROCESS_INLINE = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PROCESSINLINELABEL",
                  "display": "process inline security label"}  # fmt: skip
NOTE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note"
SIGNED_OFF = ("final", "amended", "corrected", "appended")
CLOSED = ("cancelled", "entered-in-error")
MAX_DIAGNOSES = 1000


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


def _concern(card: ModelCard, diagnosis: dict[str, Any]) -> tuple[int, float, str]:
    tier = component_value(diagnosis, "risk-tier") or {}
    code = (tier.get("coding") or [{}])[0].get("code", "")
    return card.rank(code), float(component_value(diagnosis, "probability") or 0.0), str(diagnosis.get("id"))


async def case_diagnoses(repo: Repository, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The predicted diagnoses among the report's results."""
    listed = {r.get("reference") for r in report.get("result", [])}
    subject = report.get("subject", {}).get("reference", "")
    found = await repo.find("Observation", [("code", DIAGNOSIS_TOKEN), ("subject", subject)], MAX_DIAGNOSES)
    return [s.resource for s in found if f"Observation/{s.resource['id']}" in listed]


def conclude(report: dict[str, Any], card: ModelCard, diagnoses: list[dict[str, Any]]) -> None:
    """Set the AI's preliminary conclusion from the most concerning predicted diagnosis."""
    lesions = len({(d.get("focus") or [{}])[0].get("reference") for d in diagnoses}) if diagnoses else 0
    top = max(diagnoses, key=lambda d: _concern(card, d)) if diagnoses else None
    report.pop("conclusionCode", None)
    if top is None:
        finding = "no lesion image has a class at or above the model's decision threshold"
    else:
        concept = top["valueCodeableConcept"]
        site = top.get("bodySite", {}).get("text")
        where = f"{top['focus'][0]['reference']} ({site})" if site else top["focus"][0]["reference"]
        finding = (f"most concerning finding across {lesions} lesion(s): {concept['text']} "
                   f"(probability {component_value(top, 'probability'):.2f}) on {where}")  # fmt: skip
    if card.clinical_use:
        report["conclusion"] = f"AI (preliminary, {card.name} {card.version}): {finding}. Awaiting clinician review."
        if top is not None:
            report["conclusionCode"] = [{**copy.deepcopy(top["valueCodeableConcept"]), "extension": _ai_label()}]
    else:
        report["conclusion"] = (f"DEMONSTRATION ONLY, NOT A DIAGNOSIS ({card.name} {card.version}, not for "
                                f"clinical use): {finding}. A clinician must assess every lesion.")  # fmt: skip
        _add_note(report, DEMO_NOTE)
        _add_security(report, DEMO_TAG, "tag")
    report["_conclusion"] = {"extension": _ai_label()}
    _add_security(report, PROCESS_INLINE)


async def update_case(
    repo: Repository, context: ImageContext, card: ModelCard, written: list[Stored], now: str
) -> None:
    """Add an analysis's results to its case and keep the conclusion at the case's highest risk."""
    current = await repo.current("DiagnosticReport", context.report_id)
    if current is None or current.get("status") in CLOSED:
        return
    report = copy.deepcopy(current)
    results = report.setdefault("result", [])
    known = {r.get("reference") for r in results}
    added = [f"Observation/{s.resource['id']}" for s in written if f"Observation/{s.resource['id']}" not in known]
    results += [{"reference": reference} for reference in added]
    if current.get("status") in SIGNED_OFF:
        if not added:
            return
        report["status"] = "appended"
        _add_note(report, f"AI results of an image received after the report was {current['status']} "
                  f"(Media/{context.media_id}) were appended; the conclusion above is the clinician's and "
                  "does not include them: clinician review needed.", now)  # fmt: skip
    else:
        report["status"] = "preliminary"
        conclude(report, card, await case_diagnoses(repo, report))
    if report != current:
        await repo.update(report, resource_type="DiagnosticReport", id=context.report_id, server_built=True)
