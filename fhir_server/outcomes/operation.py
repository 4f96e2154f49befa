"""``GET|POST [base]/$ai-performance``: how a model does against histopathology and clinicians
(operations.html; a system-level operation, declared by ``AI_PERFORMANCE_DEFINITION``).

Parameters: ``model`` (``Device/<id>``, or a model key ``id@version`` naming every Device of those weights'
model), ``from`` and ``to`` (the period of the images: the AI results' effective time in [from, to);
``to`` defaults to now), ``maxCases`` (lesions counted, oldest first; default 2000, at most 10000: beyond
it the answer says ``truncated`` and ``covered-to``), ``minCount`` (the smallest denominator a figure is
given for; default 10). At most 20,000 AI results are read (more: 400 ``too-costly``, narrow the period).

It reads every patient's records, so it needs a ``user/`` or ``system/`` scope with read and search on
Observation, DiagnosticReport, BodyStructure, Patient, Device and Media; a ``patient/`` token gets 403.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.parameters import named_values, one_of
from fhir_server.errors import bad_request, forbidden, not_found
from fhir_server.operation_definitions import operation_definition, parameter
from fhir_server.outcomes.dataset import SiteGroup, collect
from fhir_server.outcomes.drift import device_label
from fhir_server.outcomes.report import Scope, performance_parameters
from fhir_server.repository import Repository

MODEL_SYSTEM = "urn:dermbridge:model"  # the Device identifier inference.governance writes (id@version)
READ_TYPES = ("Observation", "DiagnosticReport", "BodyStructure", "Patient", "Device", "Media")
MAX_RESULTS = 20_000
MAX_DEVICES = 20
DEFAULT_CASES, MAX_CASES = 2000, 10_000
DEFAULT_MIN_COUNT, MAX_MIN_COUNT = 10, 1000

AI_PERFORMANCE_DEFINITION = operation_definition(
    "ai-performance",
    level="system",
    affects_state=False,
    title="AI performance against histopathology and clinicians",
    description="Sensitivity and specificity of a model for melanoma, squamous cell carcinoma and basal cell "
    "carcinoma, with Wilson 95% intervals and counts, against histopathology (and against the clinician's "
    "diagnosis for lesions without histopathology, reported apart), and AI/clinician/histology agreement; "
    "by Fitzpatrick skin type, age band, body site and model Device. Figures with a denominator under minCount "
    "are withheld.",
    parameters=[
        parameter("model", "in", "string", min=1),
        parameter("from", "in", "dateTime", min=1),
        parameter("to", "in", "dateTime"),
        parameter("maxCases", "in", "integer"),
        parameter("minCount", "in", "integer"),
        parameter("model", "out", "Reference", min=1),
        parameter("lesions", "out", "integer", min=1),
        parameter("truncated", "out", "boolean", min=1),
        parameter("figure", "out", min=0, max="*"),
        parameter("agreement", "out", min=0, max="*"),
        parameter("excluded", "out", min=0, max="*"),
    ],
)


def _instant(value: Any, name: str) -> str:
    text = str(value or "").strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")) if len(text) > 10 else datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(f"{name} is a date or dateTime, e.g. 2026-01-01 or 2026-01-01T00:00:00Z", [name]) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def _bounded(value: Any, name: str, default: int, most: int) -> int:
    if value is None:
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise bad_request(f"{name} is a whole number", [name]) from None
    if not 1 <= number <= most:
        raise bad_request(f"{name} is between 1 and {most}", [name])
    return number


async def _devices(repo: Repository, model: str) -> dict[str, str]:
    """id -> label of the model's Device(s)."""
    if model.startswith("Device/"):
        device = (await repo.read("Device", model.split("/", 1)[1])).resource
        return {str(device["id"]): device_label(device)}
    found = await repo.find("Device", [("identifier", f"{MODEL_SYSTEM}|{model}")], MAX_DEVICES)
    if not found:
        raise not_found(f"no model Device with identifier {MODEL_SYSTEM}|{model[:100]}")
    return {str(s.resource["id"]): device_label(s.resource) for s in found}


class AiPerformance:
    """The operation's handler; ``site_group`` groups a lesion's location (the composition root's choice)."""

    def __init__(self, site_group: SiteGroup) -> None:
        self.site_group = site_group

    async def __call__(
        self, repo: Repository, request: FhirRequest, _type: str | None, _id: str | None
    ) -> FhirResponse:
        for resource_type in READ_TYPES:
            if repo.policy.decide(resource_type, "r") != "all" or repo.policy.decide(resource_type, "s") != "all":
                raise forbidden(f"$ai-performance needs user/ or system/ read and search on {', '.join(READ_TYPES)}")
        given = named_values(request)
        model = one_of(given, "model")
        if not isinstance(model, str) or not model.strip() or len(model) > 200:
            raise bad_request("model is Device/<id> or a model key id@version", ["model"])
        start = _instant(one_of(given, "from"), "from")
        end = _instant(one_of(given, "to") or datetime.now(UTC).isoformat(), "to")
        if start >= end:
            raise bad_request("from must be before to", ["from", "to"])
        max_cases = _bounded(one_of(given, "maxCases"), "maxCases", DEFAULT_CASES, MAX_CASES)
        min_count = _bounded(one_of(given, "minCount"), "minCount", DEFAULT_MIN_COUNT, MAX_MIN_COUNT)
        devices = await _devices(repo, model.strip())
        data = await collect(repo, devices, start, end, site_group=self.site_group, max_results=MAX_RESULTS,
                             max_cases=max_cases)  # fmt: skip
        label = ", ".join(sorted(devices.values()))
        reference = {"reference": f"Device/{next(iter(devices))}", "display": label} if len(devices) == 1 else {
            "display": f"{model} ({len(devices)} Devices: {label})"}  # fmt: skip
        covered = data.records[-1].first_seen if data.truncated and data.records else None
        body = performance_parameters(Scope(reference, start, end, min_count), data, covered)
        return FhirResponse(200, body)
