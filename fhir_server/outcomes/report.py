"""``$ai-performance``'s answer as a ``Parameters`` resource (parameters.html): one ``figure`` per
condition, comparison and subgroup, one ``agreement`` per comparison and subgroup, what was excluded, and
how the figures are defined, so that a reader never has to guess the reference standard."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir_server.outcomes.codes import CONDITION_DISPLAY
from fhir_server.outcomes.dataset import Dataset, LesionRecord
from fhir_server.outcomes.metrics import COMPARISONS, Counts, agreement, assessed, tabulate
from fhir_server.outcomes.wilson import Proportion

DEMONSTRATION = (
    "DEMONSTRATION model: trained on synthetic images, not for clinical use; these figures show the monitoring "
    "working and are no clinical performance claim"
)
DIMENSIONS = ("fitzpatrick", "age-band", "body-site", "device", "imaging-device")
RISK_TIER_SYSTEM = "urn:dermbridge:risk-tier"
METHOD = (
    "Unit: a lesion (BodyStructure) analysed by the model, its images counted once. AI positive for a condition: "
    "any of the model's risk results for a class of that risk tier on the lesion at or above the card's threshold "
    "(interpretation POS; IND, just under it, is negative). Reference standards, never mixed: 'histology' is the "
    "lesion's latest histopathology ground truth; 'clinician' is the latest clinician diagnosis, used only for "
    "lesions without histopathology. Melanoma in situ counts as melanoma. Diagnoses not recognised as melanoma, "
    "SCC, BCC or a listed other diagnosis are excluded (see 'excluded'). 95% intervals: Wilson score. A figure "
    "whose denominator is below min-count is not given (its counts are)."
)


@dataclass(frozen=True, slots=True)
class Scope:
    model: dict[str, Any]  # a Reference to the model's Device (or a display naming the model)
    start: str
    end: str
    min_count: int


def _value(name: str, kind: str, value: Any) -> dict[str, Any]:
    return {"name": name, f"value{kind}": value}


def _rate(name: str, found: Proportion | None, denominator: str, min_count: int) -> list[dict[str, Any]]:
    if found is None or found.n < min_count:
        have = 0 if found is None else found.n
        return [_value(f"{name}-status", "String", f"insufficient data: {have} lesion(s) {denominator}, fewer "
                       f"than {min_count}; no figure given")]  # fmt: skip
    lower, upper = found.interval
    return [_value(name, "Decimal", round(found.estimate, 4)), _value(f"{name}-ci95-lower", "Decimal", round(lower, 4)),
            _value(f"{name}-ci95-upper", "Decimal", round(upper, 4))]  # fmt: skip


def _stratum(dimension: str, value: str) -> list[dict[str, Any]]:
    return [_value("stratum", "Code", dimension), _value("stratum-value", "String", value)]


def figure(counts: Counts, condition: str, comparison: tuple[str, str], stratum: list[dict[str, Any]],
           min_count: int) -> dict[str, Any]:  # fmt: skip
    test, reference = comparison
    parts = [
        _value("condition", "Coding", {"system": RISK_TIER_SYSTEM, "code": condition,
                                       "display": CONDITION_DISPLAY[condition]}),
        _value("test", "Code", test), _value("reference", "Code", reference),
        _value("reference-standard", "String", COMPARISONS[comparison][2]), *stratum,
        _value("n", "Integer", counts.n), _value("tp", "Integer", counts.tp), _value("fp", "Integer", counts.fp),
        _value("tn", "Integer", counts.tn), _value("fn", "Integer", counts.fn),
        *_rate("sensitivity", counts.sensitivity, "with the condition by the reference", min_count),
        *_rate("specificity", counts.specificity, "without the condition by the reference", min_count),
    ]  # fmt: skip
    return {"name": "figure", "part": parts}


def strata(records: list[LesionRecord]) -> Iterator[tuple[list[dict[str, Any]], list[LesionRecord]]]:
    yield _stratum("all", "all"), records
    for dimension in DIMENSIONS:
        for value in sorted({r.strata[dimension] for r in records}):
            yield _stratum(dimension, value), [r for r in records if r.strata[dimension] == value]


def _agreement(records: list[LesionRecord], stratum: list[dict[str, Any]], min_count: int) -> Iterator[dict[str, Any]]:
    for comparison in COMPARISONS:
        found = agreement(records, comparison)
        parts = [_value("test", "Code", comparison[0]), _value("reference", "Code", comparison[1]), *stratum,
                 _value("n", "Integer", 0 if found is None else found.n),
                 _value("agreed", "Integer", 0 if found is None else found.successes),
                 *_rate("proportion", found, "compared", min_count)]  # fmt: skip
        yield {"name": "agreement", "part": parts}


def performance_parameters(scope: Scope, data: Dataset, covered_to: str | None) -> dict[str, Any]:
    conditions = assessed(data.records)
    parameters: list[dict[str, Any]] = [
        _value("model", "Reference", scope.model),
        _value("from", "DateTime", scope.start),
        _value("to", "DateTime", scope.end),
        _value("lesions", "Integer", len(data.records)),
        _value("truncated", "Boolean", data.truncated),
        _value("min-count", "Integer", scope.min_count),
        _value("method", "String", METHOD),
    ]
    if data.demonstration:
        parameters.append(_value("warning", "String", DEMONSTRATION))
    if data.truncated and covered_to:
        parameters.append(_value("covered-to", "DateTime", covered_to))
    parameters += [{"name": "excluded", "part": [_value("reason", "String", reason), _value("count", "Integer", n)]}
                   for reason, n in sorted(_excluded(data).items())]  # fmt: skip
    for stratum, records in strata(data.records):
        for comparison, (test, reference, _) in COMPARISONS.items():
            for condition in conditions:
                counts = tabulate(records, condition, test, reference)
                parameters.append(figure(counts, condition, comparison, stratum, scope.min_count))
        parameters += list(_agreement(records, stratum, scope.min_count))
    return {"resourceType": "Parameters", "parameter": parameters}


def _excluded(data: Dataset) -> dict[str, int]:
    counts = dict(data.excluded)
    for reason, flag in (("histology diagnosis not classifiable (not melanoma, SCC, BCC or a listed other diagnosis)",
                          lambda r: r.histology_unclassified),
                         ("clinician diagnosis not classifiable (e.g. equivocal, or a demonstration model's text)",
                          lambda r: r.clinician_unclassified)):  # fmt: skip
        found = sum(1 for r in data.records if flag(r))
        if found:
            counts[reason] = found
    return counts
