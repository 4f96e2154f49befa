"""A lesion's results compared with its earlier visits (the lesion keeps its identity across visits:
``dicom_node.lesion_identity``).

A risk result of a later visit refers to the same lesion's most recent risk result for the same class
by the same model (name and version) from an earlier visit, FHIR-natively: the R4 core extension
``observation-sequelTo`` ("this observation follows the target observation",
extension-observation-sequelto.html) references it, a component carries the earlier probability,
and a note says the change in words ("Compared with the earlier visit: Malignant melanoma of skin at
2024-01-05: 0.02, Negative; now 0.91, Positive."), so a dermatologist reading the result sees change over time.
Results of the same visit (another image of the lesion in the same study) are not compared: they
are not change over time. Nothing is compared across models or model versions: their scores differ.
"""

from __future__ import annotations

from typing import Any

from fhir_server.repository import Repository
from inference.findings import FINDING_SYSTEM, RISK_SYSTEM, ImageContext, model_label, probability, shown
from inference.model_card import ModelCard

SEQUEL_TO = "http://hl7.org/fhir/StructureDefinition/observation-sequelTo"
MAX_EARLIER = 500  # risk results of a lesion read to find the latest earlier one (classes x visits)
EARLIER = {"system": FINDING_SYSTEM, "code": "earlier-probability", "display": "Probability at the earlier visit"}


def _when(observation: dict[str, Any]) -> str:
    return str(observation.get("effectiveDateTime") or observation.get("issued") or "")


def _class_code(observation: dict[str, Any]) -> str:
    return str(observation["code"]["coding"][0]["code"])


async def earlier_results(repo: Repository, context: ImageContext, card: ModelCard) -> dict[str, dict[str, Any]]:
    """Per risk code (``probability-of-<class>``): the lesion's latest result by this model from an
    earlier visit (acquired on an earlier day, or, without acquisition dates, analysed before)."""
    if not context.lesion_id:
        return {}
    codes = ",".join(f"{RISK_SYSTEM}|probability-of-{c.code}" for c in card.classes)
    found = await repo.find("Observation", [("focus", context.focus), ("code", codes)], MAX_EARLIER)
    this_visit, label, today = f"ImagingStudy/{context.imaging_study_id}", model_label(card), (context.acquired or "")
    latest: dict[str, dict[str, Any]] = {}
    for stored in found:
        result = stored.resource
        if result.get("device", {}).get("display") != label:
            continue
        if any(d.get("reference") == this_visit for d in result.get("derivedFrom", [])):
            continue
        if today and _when(result)[:10] >= today[:10]:
            continue
        code = _class_code(result)
        if code not in latest or _when(result) > _when(latest[code]):
            latest[code] = result
    return latest


def compared(observation: dict[str, Any], earlier: dict[str, Any] | None) -> dict[str, Any]:
    """The risk result referring to the same lesion's earlier one, with the change in words."""
    if earlier is None:
        return observation
    before, now = earlier["valueQuantity"]["value"], observation["valueQuantity"]["value"]
    reading, earlier_reading = _reading(observation), _reading(earlier)  # a benign class carries no flag
    assessed = observation["code"]["coding"][0]["display"].removeprefix("Probability of ")
    day = _when(earlier)[:10] or "date unknown"
    observation.setdefault("extension", []).append(
        {"url": SEQUEL_TO, "valueReference": {"reference": f"Observation/{earlier['id']}",
                                              "display": f"earlier visit {day}: {shown(before)}{earlier_reading}"}}
    )  # fmt: skip
    observation.setdefault("component", []).append(
        {"code": {"coding": [EARLIER], "text": f"probability at the earlier visit ({day})"},
         "valueQuantity": probability(before), "interpretation": earlier.get("interpretation", [])[:1]}
    )  # fmt: skip
    observation.setdefault("note", []).append(
        {"text": f"Compared with the earlier visit: {assessed} at {day}: {shown(before)}{earlier_reading}; "
                 f"now {shown(now)}{reading}."}
    )  # fmt: skip
    return observation


def _reading(result: dict[str, Any]) -> str:
    """ ", Positive" (the result's flag, for words), or "" when it has none (a benign class)."""
    display = (result.get("interpretation") or [{}])[0].get("coding", [{}])[0].get("display", "")
    return f", {display}" if display else ""


def change_since_earlier(result: dict[str, Any]) -> str:
    """'0.02, Negative at 2024-01-05; now 0.99, Positive' when a risk result's reading differs from the
    earlier visit's (a threshold crossed either way), else ""."""
    earlier = next((c for c in result.get("component", []) if c["code"]["coding"][0] == EARLIER), None)
    if earlier is None or not earlier.get("interpretation") or not result.get("interpretation"):
        return ""
    before, now = earlier["interpretation"][0]["coding"][0], result["interpretation"][0]["coding"][0]
    if before.get("code") == now.get("code"):
        return ""
    day = earlier["code"]["text"].rsplit("(", 1)[-1].rstrip(")")
    was, is_now = shown(earlier["valueQuantity"]["value"]), shown(result["valueQuantity"]["value"])
    return f"{was}, {before.get('display')} at {day}; now {is_now}, {now.get('display')}"
