"""The lesions a model analysed in a period, each with what the AI, the clinician and histopathology said
about it, and the subgroups it belongs to: the data ``$ai-performance`` counts.

The unit is the **lesion analysed by one model Device** (a ``BodyStructure`` its results are about): a
lesion's several images count once. The AI calls a condition (melanoma, SCC, BCC: the model card's risk
tier of the class) when any of its risk results for a class of that tier on the lesion is ``POS`` (score at
or above the card's threshold; an ``IND`` result, just under it, is not a positive call). The clinician's
diagnosis is the latest final ``Observation`` (code 439401001 |Diagnosis|) about the lesion with a
``performer`` and no ``device``: the review queue's confirm or override, or a clinician's own entry. The
histology is the lesion's latest ground truth (``fhir_server.outcomes.histology``).

Everything is read through the caller's repository (its access policy applies); every read is bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhir_server.errors import too_costly
from fhir_server.outcomes.codes import (
    CONDITIONS,
    DIAGNOSIS,
    FITZPATRICK,
    GROUND_TRUTH_CODE,
    OUTCOME_SYSTEM,
    SNOMED,
    category,
    codings,
    fitzpatrick_type,
    has_coding,
)
from fhir_server.repository import Repository

RISK_SYSTEM = "urn:dermbridge:ai-risk"
RISK_TIER_SYSTEM = "urn:dermbridge:risk-tier"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
FINAL = ("final", "amended", "corrected")
WITHDRAWN = ("entered-in-error", "cancelled")
DEMO_SYSTEM = "urn:dermbridge:ai-use"  # inference.findings.DEMO_TAG
CHUNK = 100  # values of one comma-separated search parameter (fhir_server.limits)
MAX_PER_CHUNK = 5000
UNKNOWN = "not recorded"
AGE_BANDS = ((0, "0-17"), (18, "18-39"), (40, "40-59"), (60, "60-79"), (80, "80+"))
SiteGroup = Callable[[dict[str, Any] | None], str]  # a lesion's location -> its body-site group


@dataclass
class LesionRecord:
    lesion: str
    device: str
    first_seen: str  # the earliest effective time of the AI's results on the lesion
    images: set[str] = field(default_factory=set)  # the Media the AI's results were derived from
    ai_positive: dict[str, bool] = field(default_factory=dict)  # per condition the model assesses
    patient: str = ""
    histology: str | None = None  # a category of fhir_server.outcomes.codes, None: no histology
    histology_unclassified: bool = False
    clinician: str | None = None
    clinician_unclassified: bool = False
    strata: dict[str, str] = field(default_factory=dict)  # dimension -> value


@dataclass
class Dataset:
    records: list[LesionRecord]
    truncated: bool
    excluded: dict[str, int]
    demonstration: bool = False  # a demonstration model's results (inference.findings.DEMO_TAG)


def _ref_id(reference: Any, kind: str) -> str | None:
    text = str((reference or {}).get("reference", "")) if isinstance(reference, dict) else ""
    return text.split("/", 1)[1] if text.startswith(f"{kind}/") else None


def _tier(observation: dict[str, Any]) -> str | None:
    for component in observation.get("component") or []:
        if any(c.get("code") == "risk-tier" for c in codings(component.get("code"))):
            return next((str(c.get("code")) for c in codings(component.get("valueCodeableConcept"))
                         if c.get("system") == RISK_TIER_SYSTEM), None)  # fmt: skip
    return None


def _positive(observation: dict[str, Any]) -> bool:
    return any(has_coding(i, INTERPRETATION, "POS") for i in observation.get("interpretation") or [])


def _when(observation: dict[str, Any]) -> str:
    return str(observation.get("effectiveDateTime") or observation.get("issued") or "")


def _chunks(ids: Iterable[str]) -> list[list[str]]:
    unique = sorted(set(ids))
    return [unique[i : i + CHUNK] for i in range(0, len(unique), CHUNK)]


async def _find_all(repo: Repository, resource_type: str, criteria: list[tuple[str, str]]) -> list[dict[str, Any]]:
    found = await repo.find(resource_type, criteria, MAX_PER_CHUNK + 1)
    if len(found) > MAX_PER_CHUNK:
        raise too_costly(f"more than {MAX_PER_CHUNK} {resource_type} resources for 100 lesions: narrow the period")
    return [s.resource for s in found]


async def ai_records(
    repo: Repository, devices: list[str], start: str, end: str, max_results: int, max_cases: int
) -> tuple[list[LesionRecord], bool, dict[str, int], bool]:
    """The model's risk results in [start, end), grouped by (lesion, device), oldest first."""
    criteria = [("device", ",".join(f"Device/{d}" for d in devices)), ("date", f"ge{start}"), ("date", f"lt{end}"),
                ("_sort", "date")]  # fmt: skip
    found = await repo.find("Observation", criteria, max_results + 1)
    if len(found) > max_results:
        raise too_costly(
            f"more than {max_results} AI results of the model in the period: narrow from/to", ["from", "to"]
        )
    records: dict[tuple[str, str], LesionRecord] = {}
    excluded: dict[str, int] = {}
    demonstration = False
    for stored in found:
        observation = stored.resource
        risk = any(c.get("system") == RISK_SYSTEM for c in codings(observation.get("code")))
        if not risk or observation.get("status") in WITHDRAWN:
            continue
        demonstration = demonstration or any(
            t.get("system") == DEMO_SYSTEM and t.get("code") == "demonstration"
            for t in (observation.get("meta") or {}).get("tag") or []
        )
        lesion = next((i for i in (_ref_id(f, "BodyStructure") for f in observation.get("focus") or []) if i), None)
        device = _ref_id(observation.get("device"), "Device")
        tier = _tier(observation)
        if lesion is None or device is None:
            excluded["AI result not about a lesion (BodyStructure)"] = excluded.get(
                "AI result not about a lesion (BodyStructure)", 0) + 1  # fmt: skip
            continue
        record = records.setdefault((lesion, device), LesionRecord(lesion, device, _when(observation)))
        record.first_seen = min(record.first_seen, _when(observation))
        record.images.update(i for i in (_ref_id(d, "Media") for d in observation.get("derivedFrom") or []) if i)
        if tier in CONDITIONS:
            record.ai_positive[tier] = record.ai_positive.get(tier, False) or _positive(observation)
    ordered = sorted(records.values(), key=lambda r: (r.first_seen, r.lesion, r.device))
    return ordered[:max_cases], len(ordered) > max_cases, excluded, demonstration


def _latest(observations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest final Observation per lesion (by issued, then effective time)."""
    latest: dict[str, dict[str, Any]] = {}
    for observation in observations:
        if observation.get("status") not in FINAL:
            continue
        key = (str(observation.get("issued") or ""), _when(observation))
        for focus in observation.get("focus") or []:
            lesion = _ref_id(focus, "BodyStructure")
            if lesion is None:
                continue
            held = latest.get(lesion)
            if held is None or (str(held.get("issued") or ""), _when(held)) <= key:
                latest[lesion] = observation
    return latest


def _is_clinician(observation: dict[str, Any]) -> bool:
    people = [
        p for p in observation.get("performer") or [] if _ref_id(p, "Practitioner") or _ref_id(p, "PractitionerRole")
    ]
    return bool(people) and "device" not in observation and not has_coding(
        observation.get("code"), OUTCOME_SYSTEM, GROUND_TRUTH_CODE)  # fmt: skip


async def _references(repo: Repository, lesions: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The latest histology and clinician diagnosis of each lesion."""
    histology: list[dict[str, Any]] = []
    clinician: list[dict[str, Any]] = []
    for chunk in _chunks(lesions):
        focus = ("focus", ",".join(f"BodyStructure/{i}" for i in chunk))
        histology += await _find_all(repo, "Observation", [("code", f"{OUTCOME_SYSTEM}|{GROUND_TRUTH_CODE}"), focus])
        diagnoses = await _find_all(repo, "Observation", [("code", f"{SNOMED}|{DIAGNOSIS['code']}"), focus])
        clinician += [o for o in diagnoses if _is_clinician(o)]
    return _latest(histology), _latest(clinician)


async def _by_id(repo: Repository, resource_type: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(ids):
        for resource in await _find_all(repo, resource_type, [("_id", ",".join(chunk))]):
            found[str(resource["id"])] = resource
    return found


async def _skin_types(repo: Repository, patients: Iterable[str]) -> dict[str, str]:
    """Each patient's latest final Fitzpatrick skin type (LOINC 66555-4)."""
    latest: dict[str, tuple[str, str]] = {}
    for chunk in _chunks(patients):
        subjects = ("subject", ",".join(f"Patient/{p}" for p in chunk))
        code = ("code", f"{FITZPATRICK['system']}|{FITZPATRICK['code']}")
        for observation in await _find_all(repo, "Observation", [code, subjects]):
            patient, kind = (
                _ref_id(observation.get("subject"), "Patient"),
                fitzpatrick_type(observation.get("valueCodeableConcept")),
            )
            if patient is None or kind is None or observation.get("status") not in FINAL:
                continue
            when = _when(observation)
            if patient not in latest or latest[patient][0] <= when:
                latest[patient] = (when, kind)
    return {p: kind for p, (_, kind) in latest.items()}


def imaging_device(images: list[dict[str, Any] | None]) -> str:
    """The device the lesion's images were taken with (``Media.device``, named by DICOM ingest from the
    images' General Equipment module): "several devices" when they differ, "not recorded" without one."""
    names = {str((m or {}).get("device", {}).get("display") or "") for m in images} - {""}
    if not names:
        return UNKNOWN
    return names.pop() if len(names) == 1 else "several devices"


def age_band(birth_date: Any, seen: str) -> str:
    """The age band at the time the lesion was imaged; a partial birth date gives no band (it could straddle one)."""
    try:
        born, on = date.fromisoformat(str(birth_date)), date.fromisoformat(seen[:10])
    except ValueError:
        return UNKNOWN
    age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return next((label for floor, label in reversed(AGE_BANDS) if age >= floor), UNKNOWN)


async def collect(
    repo: Repository, devices: dict[str, str], start: str, end: str, *, site_group: SiteGroup,
    max_results: int, max_cases: int,
) -> Dataset:  # fmt: skip
    """The dataset of ``devices`` (id -> display) in [start, end)."""
    records, truncated, excluded, demonstration = await ai_records(
        repo, sorted(devices), start, end, max_results, max_cases
    )
    lesions = await _by_id(repo, "BodyStructure", (r.lesion for r in records))
    for record in records:
        record.patient = _ref_id((lesions.get(record.lesion) or {}).get("patient"), "Patient") or ""
    patients = await _by_id(repo, "Patient", (r.patient for r in records if r.patient))
    skin = await _skin_types(repo, patients)
    histology, clinician = await _references(repo, [r.lesion for r in records])
    media = await _by_id(repo, "Media", {image for r in records for image in r.images})
    for record in records:
        if record.lesion in histology:
            record.histology = category([histology[record.lesion].get("valueCodeableConcept")])
            record.histology_unclassified = record.histology is None
        if record.lesion in clinician:
            record.clinician = category([clinician[record.lesion].get("valueCodeableConcept")])
            record.clinician_unclassified = record.clinician is None
        record.strata = {
            "fitzpatrick": skin.get(record.patient, UNKNOWN),
            "age-band": age_band((patients.get(record.patient) or {}).get("birthDate"), record.first_seen),
            "body-site": site_group((lesions.get(record.lesion) or {}).get("location")),
            "device": devices.get(record.device, f"Device/{record.device}"),
            "imaging-device": imaging_device([media.get(image) for image in sorted(record.images)]),
        }
    return Dataset(records, truncated, excluded, demonstration)
