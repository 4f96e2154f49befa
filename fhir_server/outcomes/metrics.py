"""Sensitivity, specificity and agreement over lesion records, each against a stated reference standard.

Three comparisons, never mixed:

- ``ai`` against ``histology``: lesions with a classifiable histopathology diagnosis;
- ``clinician`` against ``histology``: the same, where the clinician also gave a classifiable diagnosis;
- ``ai`` against ``clinician``: only lesions **without** any histology (a lesion with histology is judged
  by it; one whose histology is unclassified or predates the imaging is in neither), where the clinician's
  diagnosis is classifiable.

A sensitivity (specificity) is reported only when at least ``min_count`` lesions have (lack) the condition
by the reference; otherwise the counts are given with a status saying the figure would mislead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fhir_server.outcomes.codes import CONDITIONS, OTHER
from fhir_server.outcomes.dataset import LesionRecord
from fhir_server.outcomes.wilson import Proportion, proportion

Test = Callable[[LesionRecord, str], bool | None]  # positive for the condition? None: no call
Reference = Callable[[LesionRecord], str | None]  # the record's category, None: not in this comparison


def ai_call(record: LesionRecord, condition: str) -> bool | None:
    return record.ai_positive.get(condition)


def clinician_call(record: LesionRecord, condition: str) -> bool | None:
    return None if record.clinician is None else record.clinician == condition


def by_histology(record: LesionRecord) -> str | None:
    return record.histology


def by_clinician_without_histology(record: LesionRecord) -> str | None:
    if record.histology is not None or record.histology_unclassified or record.histology_before_imaging:
        return None
    return record.clinician


HISTOLOGY = "histopathology (pathology reports linked to the lesion)"
COMPARISONS: dict[tuple[str, str], tuple[Test, Reference, str]] = {
    ("ai", "histology"): (ai_call, by_histology, HISTOLOGY),
    ("clinician", "histology"): (clinician_call, by_histology, HISTOLOGY),
    ("ai", "clinician"): (ai_call, by_clinician_without_histology,
                          "the clinician's review decision (AI-assisted: the reviewer saw the AI's output), on "
                          "lesions without histopathology only"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Counts:
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def sensitivity(self) -> Proportion | None:
        return proportion(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> Proportion | None:
        return proportion(self.tn, self.tn + self.fp)


def tabulate(records: list[LesionRecord], condition: str, test: Test, reference: Reference) -> Counts:
    """The 2x2 table of ``test`` against ``reference`` for ``condition`` over the records both speak to."""
    tp = fp = tn = fn = 0
    for record in records:
        truth, call = reference(record), test(record, condition)
        if truth is None or call is None:
            continue
        present = truth == condition
        tp, fn = tp + (call and present), fn + (not call and present)
        fp, tn = fp + (call and not present), tn + (not call and not present)
    return Counts(tp, fp, tn, fn)


def assessed(records: list[LesionRecord]) -> tuple[str, ...]:
    """The conditions the model assesses (a class of that risk tier), in the order of concern."""
    seen = {c for r in records for c in r.ai_positive}
    return tuple(c for c in CONDITIONS if c in seen)


def ai_category(record: LesionRecord) -> str:
    """The AI's call as one category: the most concerning condition it called, else other."""
    return next((c for c in CONDITIONS if record.ai_positive.get(c)), OTHER)


def agreement(records: list[LesionRecord], comparison: tuple[str, str]) -> Proportion | None:
    """How often the test's category equals the reference's (conditions the model does not assess count as
    other for the AI's comparisons, since it cannot name them)."""
    _, reference, _ = COMPARISONS[comparison]
    conditions = assessed(records) if comparison[0] == "ai" else CONDITIONS
    agreed = total = 0
    for record in records:
        truth = reference(record)
        call = ai_category(record) if comparison[0] == "ai" else record.clinician
        if truth is None or call is None:
            continue
        total += 1
        agreed += (truth if truth in conditions else OTHER) == call
    return proportion(agreed, total)
