"""A workflow definition (a ``PlanDefinition`` of type ``workflow-definition``) parsed into a ``Flow``.

Each ``PlanDefinition.action`` is one step, named by its ``code`` in ``urn:dermbridge:workflow-step``;
its parameters are ``dynamicValue`` entries whose ``path`` is the parameter's name and whose
``expression`` is a FHIRPath literal (``0.3``, ``'dermatologist'``, ``true``); a parameter that takes
several values is repeated (plandefinition-definitions.html#PlanDefinition.action.dynamicValue).

The steps run in a fixed order, the definition choosing which are present and with which parameters:
consent gate -> AI analysis -> escalation -> autonomous discharge | human review -> notifications;
``store-only`` alone keeps the images and does nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import unprocessable
from fhir_server.workflow import codes

MAX_ACTIONS = 20
MAX_VALUES = 50
PRODUCT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
STRING_LITERAL = re.compile(r"^'((?:[^'\\]|\\.){0,200})'$")
NOTIFY_EVENTS = ("review-opened", "discharged", "stored", "refused", "escalated")
REVIEW_WHEN = ("always", "escalated")
ON_REFUSED = ("review", "stop")
IMAGE_TYPES = ("dermoscopic", "clinical")  # routing.image_type; "macroscopic" is read as "clinical"
UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")  # PS3.5 9.1
Value = str | float | bool


@dataclass(frozen=True, slots=True)
class AiStep:
    models: tuple[str, ...] = ()  # model keys (id@version); empty: every loaded model
    body_sites: tuple[str, ...] = ()  # SNOMED CT codes; empty: any site
    image_types: tuple[str, ...] = ()  # IMAGE_TYPES; empty: any image
    sop_classes: tuple[str, ...] = ()  # SOP Class UIDs; empty: any


@dataclass(frozen=True, slots=True)
class Escalation:
    malignant_above: float = 0.3  # any malignant-tier class at or above: a human reads it, urgently
    equivocal: bool = True  # the model's call is indeterminate (or no class reached its threshold)
    # an unsuitable image or a failed analysis always goes to a human: not a parameter


@dataclass(frozen=True, slots=True)
class Discharge:
    classes: tuple[str, ...]  # SNOMED CT codes of the benign classes that may be discharged
    min_probability: float  # the class's probability must reach it


@dataclass(frozen=True, slots=True)
class Review:
    tier: str = "dermatologist"
    when: str = "always"  # or "escalated": only cases the AI does not settle
    # the due date follows the urgency and the tenant's review policy (fhir_server.workflow.review.policy)


@dataclass(frozen=True, slots=True)
class Flow:
    url: str
    version: str
    product: str
    title: str
    consent_on_refused: str | None = None  # None: no consent gate
    ai: tuple[AiStep, ...] = ()
    escalation: Escalation | None = None
    discharge: Discharge | None = None
    review: Review | None = None
    notify: tuple[str, ...] = ()
    store_only: bool = False
    steps: tuple[str, ...] = field(default_factory=tuple)  # the step codes present, in order

    @property
    def canonical(self) -> str:
        return f"{self.url}|{self.version}"

    @property
    def runs_ai(self) -> bool:
        return bool(self.ai)


def definition_product(plan: dict[str, Any]) -> str | None:
    """The product a definition is for: its ``useContext`` of type ``program`` coded in the product system."""
    for context in plan.get("useContext") or []:
        if not isinstance(context, dict) or (context.get("code") or {}).get("code") != "program":
            continue
        for coding in (context.get("valueCodeableConcept") or {}).get("coding") or []:
            if isinstance(coding, dict) and coding.get("system") == codes.PRODUCT_SYSTEM:
                return str(coding.get("code") or "") or None
    return None


def _literal(expression: Any, where: str) -> Value:
    text = str((expression or {}).get("expression", "")).strip() if isinstance(expression, dict) else ""
    if isinstance(expression, dict) and expression.get("language") not in (None, codes.FHIRPATH):
        raise unprocessable(f"{where}: the expression's language must be {codes.FHIRPATH}", [where])
    if text in ("true", "false"):
        return text == "true"
    quoted = STRING_LITERAL.match(text)
    if quoted:
        return quoted.group(1).replace("\\'", "'")
    try:
        return float(text)
    except ValueError:
        pass
    raise unprocessable(f"{where}: {text[:60]!r} is not a FHIRPath literal (a number, 'text', true)", [where])


def _parameters(action: dict[str, Any], where: str) -> dict[str, list[Value]]:
    values: dict[str, list[Value]] = {}
    entries = action.get("dynamicValue") or []
    if len(entries) > MAX_VALUES:
        raise unprocessable(f"{where}: at most {MAX_VALUES} dynamicValue entries", [where])
    for n, entry in enumerate(entries):
        path = str((entry or {}).get("path") or "")
        values.setdefault(path, []).append(_literal((entry or {}).get("expression"), f"{where}.dynamicValue[{n}]"))
    return values


class _Params:
    def __init__(self, values: dict[str, list[Value]], where: str, known: tuple[str, ...]) -> None:
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise unprocessable(f"{where}: unknown parameter(s) {unknown}; this step takes {list(known)}", [where])
        self.values, self.where = values, where

    def texts(self, name: str) -> tuple[str, ...]:
        found = self.values.get(name, [])
        if not all(isinstance(v, str) for v in found):
            raise unprocessable(f"{self.where}: {name} takes quoted text values", [self.where])
        return tuple(str(v) for v in found)

    def text(self, name: str, default: str, allowed: tuple[str, ...] | None = None) -> str:
        found = self.texts(name)
        value = found[-1] if found else default
        if allowed is not None and value not in allowed:
            raise unprocessable(f"{self.where}: {name} is one of {list(allowed)}", [self.where])
        return value

    def number(self, name: str, default: float | None, low: float = 0.0, high: float = 1.0) -> float | None:
        found = self.values.get(name, [])
        if not found:
            return default
        value = found[-1]
        if isinstance(value, bool) or not isinstance(value, float) or not low <= value <= high:
            raise unprocessable(f"{self.where}: {name} is a number in [{low}, {high}]", [self.where])
        return value

    def flag(self, name: str, default: bool) -> bool:
        found = self.values.get(name, [])
        if found and not isinstance(found[-1], bool):
            raise unprocessable(f"{self.where}: {name} is true or false", [self.where])
        return bool(found[-1]) if found else default


def _step(action: Any, where: str) -> str:
    if not isinstance(action, dict):
        raise unprocessable(f"{where} is not an action", [where])
    found = [
        str(c.get("code"))
        for concept in action.get("code") or []
        for c in (concept or {}).get("coding") or []
        if isinstance(c, dict) and c.get("system") == codes.STEP_SYSTEM
    ]
    if len(found) != 1 or found[0] not in codes.STEPS:
        raise unprocessable(f"{where}: an action has one code of {codes.STEP_SYSTEM} ({sorted(codes.STEPS)})",
                            [f"{where}.code"])  # fmt: skip
    return found[0]


def parse_flow(plan: dict[str, Any]) -> Flow:
    """The flow a PlanDefinition describes; a 422 OperationOutcome naming the element that is wrong."""
    product = definition_product(plan)
    if product is None or not PRODUCT_PATTERN.match(product):
        context = ["PlanDefinition.useContext"]
        raise unprocessable(f"a workflow definition names its product: useContext of type program coded in "
                            f"{codes.PRODUCT_SYSTEM} (lower-case letters, digits, '-')", context)  # fmt: skip
    if not plan.get("url") or not plan.get("version"):
        raise unprocessable("a workflow definition has a url and a version", ["PlanDefinition.version"])
    actions = plan.get("action") or []
    if not actions or len(actions) > MAX_ACTIONS:
        raise unprocessable(f"a workflow definition has 1 to {MAX_ACTIONS} actions", ["PlanDefinition.action"])
    parts: dict[str, Any] = {"ai": [], "notify": ()}
    steps: list[str] = []
    for n, action in enumerate(actions):
        where = f"PlanDefinition.action[{n}]"
        step = _step(action, where)
        if step in steps and step != codes.AI_ANALYSIS:
            raise unprocessable(f"{where}: the step {step} appears twice", [where])
        steps.append(step)
        _read_step(parts, step, _parameters(action, where), where)
    flow = Flow(str(plan["url"]), str(plan["version"]), product, str(plan.get("title") or plan.get("name") or ""),
                parts.get("consent"), tuple(parts["ai"]), parts.get("escalation"), parts.get("discharge"),
                parts.get("review"), tuple(parts["notify"]), codes.STORE_ONLY in steps, tuple(steps))  # fmt: skip
    _check_composition(flow)
    return flow


def _read_step(parts: dict[str, Any], step: str, values: dict[str, list[Value]], where: str) -> None:
    if step == codes.CONSENT_GATE:
        parts["consent"] = _Params(values, where, ("onRefused",)).text("onRefused", "review", ON_REFUSED)
    elif step == codes.AI_ANALYSIS:
        p = _Params(values, where, ("model", "bodySite", "imageType", "sopClass"))
        kinds = tuple(dict.fromkeys("clinical" if t == "macroscopic" else t for t in p.texts("imageType")))
        if set(kinds) - set(IMAGE_TYPES):
            raise unprocessable(f"{where}: imageType is one of {[*IMAGE_TYPES, 'macroscopic']}", [where])
        uids = p.texts("sopClass")
        if not all(len(uid) <= 64 and UID_PATTERN.match(uid) for uid in uids):
            raise unprocessable(f"{where}: sopClass takes SOP Class UIDs (PS3.5 9.1)", [where])
        parts["ai"].append(AiStep(p.texts("model"), p.texts("bodySite"), kinds, uids))
    elif step == codes.ESCALATION:
        p = _Params(values, where, ("malignantAbove", "equivocal"))
        parts["escalation"] = Escalation(p.number("malignantAbove", 0.3) or 0.0, p.flag("equivocal", True))
    elif step == codes.DISCHARGE:
        p = _Params(values, where, ("class", "minProbability"))
        least = p.number("minProbability", None)
        if not p.texts("class") or least is None:
            raise unprocessable(f"{where}: autonomous discharge names its classes and minProbability", [where])
        parts["discharge"] = Discharge(p.texts("class"), least)
    elif step == codes.HUMAN_REVIEW:
        p = _Params(values, where, ("tier", "when"))
        parts["review"] = Review(p.text("tier", "dermatologist"), p.text("when", "always", REVIEW_WHEN))
    elif step == codes.NOTIFY:
        p = _Params(values, where, ("event",))
        events = p.texts("event") or NOTIFY_EVENTS
        unknown = sorted(set(events) - set(NOTIFY_EVENTS))
        if unknown:
            raise unprocessable(f"{where}: unknown event(s) {unknown}; known: {list(NOTIFY_EVENTS)}", [where])
        parts["notify"] = events
    else:
        _Params(values, where, ())


def _check_composition(flow: Flow) -> None:
    """Steps that only make sense together: a flow never ends a case silently where a human is needed."""
    where = ["PlanDefinition.action"]
    if flow.store_only and len(set(flow.steps) - {codes.NOTIFY}) > 1:
        raise unprocessable("store-only is a flow of its own (with notifications at most)", where)
    if not flow.store_only and flow.review is None:
        raise unprocessable("a flow that is not store-only has a human-review step (where escalations go)", where)
    if (flow.escalation or flow.discharge or flow.consent_on_refused) and not flow.runs_ai:
        raise unprocessable("consent gate, escalation and autonomous discharge need an ai-analysis step", where)
    if flow.discharge is not None and flow.escalation is None:
        raise unprocessable("autonomous discharge needs an escalation step before it", where)
    if flow.review is not None and flow.review.when == "escalated" and not flow.runs_ai:
        raise unprocessable("human-review when 'escalated' needs an ai-analysis step", where)
