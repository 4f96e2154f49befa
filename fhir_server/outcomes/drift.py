"""Drift alerts: a model that does measurably worse, in a subgroup, than its card says.

Rule (per claim of the card, ``fhir_server.outcomes.claims``): the AI's sensitivity (specificity) for the
condition in the claim's subgroup, **against histopathology only** (the card's figures are, and a
clinician's diagnosis is not ground truth), over the period's lesions, is a drift when at least
``min_cases`` lesions have (lack) the condition and the upper bound of its Wilson 95% interval lies below
the card's figure: the shortfall is then unlikely to be chance (one-sided, about 2.5%). Fewer lesions say
nothing either way and raise nothing.

A drift is recorded once per (model Device, claim, period) as a ``DetectedIssue`` (detectedissue.html:
``implicated`` the Device, ``evidence`` the card) written by the server, which any ``Subscription`` on
``DetectedIssue?code=urn:dermbridge:outcome|ai-performance-drift`` delivers; an ``ai.performance-drift``
outbox event and an AuditEvent are written in the same transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from fhir_server.audit.events import ENTITY_TYPE, REST_TYPE
from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import conflict
from fhir_server.outcomes.claims import Claim, model_claims
from fhir_server.outcomes.codes import CONDITION_DISPLAY, DRIFT, DRIFT_IDENTIFIER, OUTCOME_SYSTEM, codings, has_coding
from fhir_server.outcomes.dataset import LesionRecord, SiteGroup, collect
from fhir_server.outcomes.metrics import ai_call, by_histology, tabulate
from fhir_server.repository import Repository
from fhir_server.storage.port import TenantStore

TOPIC = "ai.performance-drift"
SUBTYPE = {"system": "urn:dermbridge:audit-subtype", "code": "ai-performance-drift"}
MAX_RESULTS, MAX_CASES = 20_000, 5_000


@dataclass(frozen=True, slots=True)
class Evaluation:
    device: str
    claim: Claim
    status: str  # drift | consistent | insufficient
    successes: int
    n: int
    estimate: float | None = None
    lower: float | None = None
    upper: float | None = None
    issue: str | None = None  # the DetectedIssue of a drift

    def sentence(self, start: str, end: str) -> str:
        what = f"{self.claim.metric} for {CONDITION_DISPLAY[self.claim.condition].lower()} ({self.claim.label})"
        if self.estimate is None or self.lower is None or self.upper is None:
            return f"{what}: {self.successes}/{self.n} lesions, too few to compare with the card's {self.claim.value:g}"
        interval = f"95% CI {self.lower:.2f}-{self.upper:.2f}, {self.successes}/{self.n} lesions"
        return (
            f"{what}: {self.estimate:.2f} ({interval}, against histopathology, {start} to {end}); "
            f"the model card says {self.claim.value:g}"
        )


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """``ai.performance-drift``: a typed outbox payload for notification consumers."""

    device: str
    claim: str
    detected_issue: str
    detail: str

    def payload(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(records: list[LesionRecord], device: str, claim: Claim, min_cases: int) -> Evaluation:
    chosen = [r for r in records if claim.dimension == "all" or r.strata.get(claim.dimension) in claim.values]
    counts = tabulate(chosen, claim.condition, ai_call, by_histology)
    found = counts.sensitivity if claim.metric == "sensitivity" else counts.specificity
    if found is None or found.n < min_cases:
        return Evaluation(device, claim, "insufficient", found.successes if found else 0, found.n if found else 0)
    lower, upper = found.interval
    status = "drift" if upper < claim.value else "consistent"
    return Evaluation(device, claim, status, found.successes, found.n, found.estimate, lower, upper)


def looks_like_drift(resource: dict[str, Any] | None) -> bool:
    """Any mark of a drift alert: its code or its identifier system, compared case-insensitively (a look-alike
    would be taken for the server's alert, or stand in the place of the one the check raises)."""
    if resource is None:
        return False
    mark = (OUTCOME_SYSTEM.lower(), str(DRIFT["code"]).lower())
    coded = any(
        (str(c.get("system")).lower(), str(c.get("code")).lower()) == mark for c in codings(resource.get("code"))
    )
    identifiers = resource.get("identifier")
    identifiers = identifiers if isinstance(identifiers, list) else []
    systems = {str(i.get("system")).lower() for i in identifiers if isinstance(i, dict)}
    return coded or DRIFT_IDENTIFIER.lower() in systems


def drift_rule(resource: dict[str, Any] | None, before: dict[str, Any] | None) -> None:
    """A managed-content rule on DetectedIssue: drift alerts (code or identifier system) are the server's."""
    if looks_like_drift(resource) or looks_like_drift(before):
        raise conflict("an AI performance drift DetectedIssue is raised by the server's check only")


def _is_alert_of(issue: dict[str, Any], device_id: str) -> bool:
    """The server's alert for the device: the drift code and the model Device implicated (not a look-alike)."""
    implicated = [str(i.get("reference")) for i in issue.get("implicated") or [] if isinstance(i, dict)]
    return has_coding(issue.get("code"), OUTCOME_SYSTEM, DRIFT["code"]) and f"Device/{device_id}" in implicated


def _issue(device: dict[str, Any], evaluation: Evaluation, key: str, detail: str, card: str | None) -> dict[str, Any]:
    evidence = [{"reference": f"Device/{device['id']}"}] + ([{"reference": card}] if card else [])
    return {
        "resourceType": "DetectedIssue",
        "identifier": [{"system": DRIFT_IDENTIFIER, "value": key}],
        "status": "final",
        "code": {"coding": [DRIFT], "text": "AI performance below its model card"},
        "severity": "high" if evaluation.claim.metric == "sensitivity" else "moderate",
        "identifiedDateTime": datetime.now(UTC).isoformat(timespec="seconds"),
        "implicated": [{"reference": f"Device/{device['id']}"}],
        "evidence": [{"detail": evidence}],
        "detail": detail,
    }


def _audit(issue: str, device: str, detail: str) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent", "type": REST_TYPE, "subtype": [SUBTYPE], "action": "C",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"), "outcome": "0",
        "agent": [{"who": {"display": "DermBridge AI performance check"}, "requestor": True}],
        "source": {"observer": {"display": "DermBridge outcomes monitoring"}},
        "entity": [{"what": {"reference": issue}, "type": {"system": ENTITY_TYPE, "code": "2"},
                    "detail": [{"type": "drift", "valueString": detail[:1000]}]},
                   {"what": {"reference": f"Device/{device}"}, "type": {"system": ENTITY_TYPE, "code": "2"}}],
    }  # fmt: skip


def _card(device: dict[str, Any]) -> str | None:
    for extension in device.get("extension") or []:
        reference = str(((extension or {}).get("valueReference") or {}).get("reference", ""))
        if reference.startswith("DocumentReference/"):
            return reference
    return None


async def raise_alert(
    store: TenantStore, device: dict[str, Any], evaluation: Evaluation, start: str, end: str,
    trail: AuditTrail | None,
) -> str:  # fmt: skip
    """The drift's DetectedIssue (the one already raised for this device, claim and period, if any)."""
    key = f"{device['id']}/{evaluation.claim.key}/{start}/{end}"
    detail = f"{device_label(device)}: {evaluation.sentence(start, end)}"
    async with store.transaction() as tx:
        repo = Repository.system(store, reason="raise an AI performance drift alert", tx=tx)
        criteria = [("identifier", f"{DRIFT_IDENTIFIER}|{key}"), ("code", f"{OUTCOME_SYSTEM}|{DRIFT['code']}")]
        found = [s for s in await repo.find("DetectedIssue", criteria, 20) if _is_alert_of(s.resource, device["id"])]
        if found:
            return f"DetectedIssue/{found[0].resource['id']}"
        issue = _issue(device, evaluation, key, detail, _card(device))
        stored = await repo.create(issue, resource_type="DetectedIssue", server_built=True)
        reference = f"DetectedIssue/{stored.resource['id']}"
        await tx.append_event(
            TOPIC, DriftEvent(f"Device/{device['id']}", evaluation.claim.key, reference, detail).payload()
        )
        if trail is not None:
            await trail.record_in(store, tx, _audit(reference, str(device["id"]), detail))
    return reference


def device_label(device: dict[str, Any]) -> str:
    names = [str(n.get("name")) for n in device.get("deviceName") or [] if isinstance(n, dict) and n.get("name")]
    versions = [str(v.get("value")) for v in device.get("version") or [] if isinstance(v, dict) and v.get("value")]
    return " ".join([names[0] if names else f"Device/{device['id']}", *versions[:1]])


async def check_device(
    store: TenantStore, device: dict[str, Any], start: str, end: str, *, site_group: SiteGroup, min_cases: int,
    trail: AuditTrail | None = None,
) -> list[Evaluation]:  # fmt: skip
    """Every claim of the device's card evaluated over [start, end); a drift raises its alert."""
    repo = Repository.system(store, reason="AI performance drift check")
    claims = await model_claims(repo, device)
    if not claims:
        return []
    device_id = str(device["id"])
    data = await collect(repo, {device_id: device_label(device)}, start, end, site_group=site_group,
                         max_results=MAX_RESULTS, max_cases=MAX_CASES)  # fmt: skip
    evaluations = []
    for claim in claims:
        evaluation = evaluate(data.records, device_id, claim, min_cases)
        if evaluation.status == "drift":
            issue = await raise_alert(store, device, evaluation, start, end, trail)
            evaluation = replace(evaluation, issue=issue)
        evaluations.append(evaluation)
    return evaluations


def default_window(now: datetime) -> tuple[str, str]:
    """The last twelve calendar months up to the end of the current one: stable within a month, so a drift
    that persists is raised once a month, not at every check."""
    month = now.year * 12 + now.month - 1
    start, end = month - 11, month + 1
    return f"{start // 12:04d}-{start % 12 + 1:02d}-01", f"{end // 12:04d}-{end % 12 + 1:02d}-01"


async def model_devices(store: TenantStore, reference: str | None = None) -> list[dict[str, Any]]:
    """The AI model Devices of the tenant (those with a model identifier), or the one ``reference`` names."""
    repo = Repository.system(store, reason="AI performance drift check")
    if reference:
        kind, _, id = reference.partition("/")
        device = await repo.current("Device", id) if kind == "Device" else None
        return [device] if device is not None else []
    return [s.resource for s in await repo.find("Device", [("identifier", "urn:dermbridge:model|")], 100)]


async def devices_of_lesions(store: TenantStore, lesions: list[str]) -> list[dict[str, Any]]:
    """The model Devices whose results are about these lesions (a histology result arrived for them)."""
    repo = Repository.system(store, reason="AI performance drift check")
    focus = ",".join(f"BodyStructure/{lesion}" for lesion in lesions[:100])
    found = await repo.find("Observation", [("focus", focus)], 1000)
    ids = {str(s.resource.get("device", {}).get("reference", "")).removeprefix("Device/") for s in found}
    devices = [await repo.current("Device", i) for i in sorted(ids) if i]
    return [d for d in devices if d is not None]
