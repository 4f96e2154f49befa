"""A tenant's forwarding configuration: its destinations (PACS reached as a C-STORE SCU) and the rules that say
which objects go where, kept as the tenant setting ``dicom.forwarding`` (``fhir_server.tenant_settings``) and
read at every event, so a change applies to the next object in every process, without a restart::

    {"destinations": {"pacs": {"aeTitle": "ORTHANC", "host": "10.0.0.5", "port": 4242}},
     "rules": [
       {"destination": "pacs", "objects": ["images", "ai-results", "clinician-decisions"]},
       {"destination": "onco", "objects": ["images", "ai-results"], "outcomes": ["malignant", "indeterminate"],
        "callingAE": "DERMATOSCOPE1"},
       {"destination": "pacs", "sopClasses": ["1.2.840.10008.5.1.4.1.1.88.59"]}],
     "maxAttempts": 8, "retrySeconds": 10}

An object goes to every destination one of whose rules holds for it (once per destination). A rule holds
when each condition it names holds: ``objects`` the object's kind (default all three), ``sopClasses`` its
SOP Class UID, ``callingAE`` the AE title that sent the image (of an AI result: its source image's),
``outcomes`` the risk tier the model called for the image (a tier of the model card such as ``melanoma``,
``malignant`` for any malignant tier, ``pre-malignant``, ``benign``, or ``indeterminate``). An image is
forwarded when it is stored, unless the rule names outcomes: then when the AI's result on it is stored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from dicom_node.forwarding.events import INDETERMINATE, KINDS
from fhir_server.errors import OperationOutcomeError, unprocessable
from fhir_server.storage.port import TenantReader, TenantStore
from fhir_server.tenant_settings import read_setting, write_setting

log = logging.getLogger(__name__)
SETTING = "dicom.forwarding"
MAX_DESTINATIONS, MAX_RULES, MAX_LIST = 20, 50, 50
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 6.2 AE: 16 characters, no backslash
HOST = re.compile(r"^[A-Za-z0-9.:\-\[\]]{1,253}$")
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # PS3.5 9.1
TIER = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
NOT_MALIGNANT = frozenset({"benign", "pre-malignant", INDETERMINATE})  # inference.model_card: every other tier is
DESTINATION_FIELDS = ("aeTitle", "host", "port", "callingAE", "timeoutSeconds")
RULE_FIELDS = ("destination", "objects", "sopClasses", "callingAE", "outcomes")
TOP_FIELDS = ("destinations", "rules", "maxAttempts", "retrySeconds")
MAX_BACKOFF_SECONDS = 1800.0


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    ae_title: str
    host: str
    port: int
    calling_ae: str | None = None  # None: the node's own AE title
    timeout_seconds: float = 10.0  # connection, association and each DIMSE answer


@dataclass(frozen=True, slots=True)
class Candidate:
    """An object a rule is asked about. ``outcome``: the tier the AI called for the image (None: not known yet)."""

    kind: str
    sop_class: str
    calling_ae: str | None
    outcome: str | None


@dataclass(frozen=True, slots=True)
class ForwardingRule:
    destination: str
    objects: frozenset[str] = frozenset(KINDS)
    sop_classes: frozenset[str] = frozenset()
    calling_ae: str | None = None
    outcomes: frozenset[str] = frozenset()

    def holds(self, candidate: Candidate) -> bool:
        if candidate.kind not in self.objects or (self.sop_classes and candidate.sop_class not in self.sop_classes):
            return False
        if self.calling_ae is not None and (candidate.calling_ae or "").strip() != self.calling_ae:
            return False
        if not self.outcomes:
            return True
        outcome = candidate.outcome
        return outcome is not None and (outcome in self.outcomes or
                                        ("malignant" in self.outcomes and outcome not in NOT_MALIGNANT))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Forwarding:
    destinations: dict[str, Destination]
    rules: tuple[ForwardingRule, ...]
    max_attempts: int = 8
    retry_seconds: float = 10.0

    def targets(self, candidate: Candidate, *, outcome_rules_only: bool = False) -> list[Destination]:
        """The destinations ``candidate`` goes to, each once, in the order of the rules naming them.
        ``outcome_rules_only``: an image met again with the AI's outcome (the other rules sent it when stored)."""
        names = [r.destination for r in self.rules if (r.outcomes or not outcome_rules_only) and r.holds(candidate)]
        return [self.destinations[name] for name in dict.fromkeys(names)]

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: ``retrySeconds`` doubling, at most 30 minutes."""
        return float(min(self.retry_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))

    @property
    def names_calling_ae(self) -> bool:
        return any(r.calling_ae is not None for r in self.rules)


NONE = Forwarding({}, ())


def _text_list(value: Any, where: str, pattern: re.Pattern[str], what: str) -> frozenset[str]:
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        raise unprocessable(f"{where}: a list of 1 to {MAX_LIST} {what}", [where])
    for n, item in enumerate(value):
        if not isinstance(item, str) or len(item) > 64 or not pattern.match(item):
            raise unprocessable(f"{where}[{n}]: {str(item)[:70]!r} is not {what[:-1]}", [f"{where}[{n}]"])
    return frozenset(value)


def _ae(value: Any, where: str) -> str:
    if not isinstance(value, str) or not AE_TITLE.match(value) or not value.strip():
        raise unprocessable(f"{where}: an AE title of 1 to 16 characters (PS3.5)", [where])
    return value.strip()


def _destination(name: Any, spec: Any) -> Destination:
    where = f"destinations.{str(name)[:40]}"
    if not isinstance(name, str) or not NAME.match(name):
        raise unprocessable(f"{where}: a name of lower-case letters, digits and '-', at most 32", [where])
    if not isinstance(spec, dict) or not set(spec) <= set(DESTINATION_FIELDS):
        raise unprocessable(f"{where}: an object of {list(DESTINATION_FIELDS)}", [where])
    host, port, timeout = spec.get("host"), spec.get("port"), spec.get("timeoutSeconds", 10)
    if not isinstance(host, str) or not HOST.match(host):
        raise unprocessable(f"{where}.host: a host name or IP address", [f"{where}.host"])
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise unprocessable(f"{where}.port: a TCP port, 1 to 65535", [f"{where}.port"])
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 1 <= timeout <= 120:
        raise unprocessable(f"{where}.timeoutSeconds: 1 to 120", [f"{where}.timeoutSeconds"])
    calling = _ae(spec["callingAE"], f"{where}.callingAE") if "callingAE" in spec else None
    return Destination(name, _ae(spec.get("aeTitle"), f"{where}.aeTitle"), host, port, calling, float(timeout))


def _rule(spec: Any, n: int, destinations: dict[str, Destination]) -> ForwardingRule:
    where = f"rules[{n}]"
    if not isinstance(spec, dict) or not set(spec) <= set(RULE_FIELDS):
        raise unprocessable(f"{where}: a rule is an object of {list(RULE_FIELDS)}", [where])
    destination = spec.get("destination")
    if destination not in destinations:
        raise unprocessable(f"{where}.destination: one of the destinations {sorted(destinations)}",
                            [f"{where}.destination"])  # fmt: skip
    objects = _text_list(spec.get("objects", list(KINDS)), f"{where}.objects", TIER, "object kinds")
    if not objects <= set(KINDS):
        raise unprocessable(f"{where}.objects: kinds among {list(KINDS)}", [f"{where}.objects"])
    classes = _text_list(spec["sopClasses"], f"{where}.sopClasses", UID, "SOP Class UIDs") if "sopClasses" in spec \
        else frozenset()  # fmt: skip
    outcomes = _text_list(spec["outcomes"], f"{where}.outcomes", TIER, "risk tiers") if "outcomes" in spec \
        else frozenset()  # fmt: skip
    calling = _ae(spec["callingAE"], f"{where}.callingAE") if "callingAE" in spec else None
    return ForwardingRule(str(destination), objects, classes, calling, outcomes)


def parse_forwarding(value: Any) -> Forwarding:
    """The configuration a setting holds (nothing forwarded when unset); a 422 naming what is wrong."""
    if value is None:
        return NONE
    if not isinstance(value, dict) or not set(value) <= set(TOP_FIELDS):
        raise unprocessable(f"the forwarding configuration is an object of {list(TOP_FIELDS)}", [])
    specs, rules = value.get("destinations", {}), value.get("rules", [])
    if not isinstance(specs, dict) or len(specs) > MAX_DESTINATIONS:
        raise unprocessable(f"destinations: an object of at most {MAX_DESTINATIONS} named destinations",
                            ["destinations"])  # fmt: skip
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        raise unprocessable(f"rules: a list of at most {MAX_RULES} rules", ["rules"])
    attempts, retry = value.get("maxAttempts", 8), value.get("retrySeconds", 10)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 50:
        raise unprocessable("maxAttempts: 1 to 50", ["maxAttempts"])
    if not isinstance(retry, int | float) or isinstance(retry, bool) or not 0.1 <= retry <= 3600:
        raise unprocessable("retrySeconds: 0.1 to 3600 (the first back-off; it doubles)", ["retrySeconds"])
    destinations = {name: _destination(name, spec) for name, spec in specs.items()}
    parsed = tuple(_rule(spec, n, destinations) for n, spec in enumerate(rules))
    return Forwarding(destinations, parsed, attempts, float(retry))


async def read_forwarding(reader: TenantReader) -> Forwarding:
    """The tenant's configuration (checked when set, so it parses; else nothing is forwarded)."""
    try:
        return parse_forwarding(await read_setting(reader, SETTING))
    except OperationOutcomeError as error:  # an unusable stored value forwards nothing rather than stopping the outbox
        log.error("the tenant's forwarding configuration is not usable, nothing forwarded: %s", error)
        return NONE


async def set_forwarding(store: TenantStore, value: Any) -> Forwarding:
    """Keep the tenant's configuration (None: forward nothing) once it parses; returns it."""
    forwarding = parse_forwarding(value)
    await write_setting(store, SETTING, value)
    return forwarding


def describe(forwarding: Forwarding) -> list[str]:
    lines = [f"destination {d.name}: {d.ae_title}@{d.host}:{d.port}" for d in forwarding.destinations.values()]
    for n, rule in enumerate(forwarding.rules):
        conditions = [", ".join(sorted(rule.objects))]
        conditions += [f"SOP class in {sorted(rule.sop_classes)}"] if rule.sop_classes else []
        conditions += [f"calling AE {rule.calling_ae}"] if rule.calling_ae else []
        conditions += [f"outcome in {sorted(rule.outcomes)}"] if rule.outcomes else []
        lines.append(f"rule {n + 1}: {'; '.join(conditions)} -> {rule.destination}")
    lines.append(f"at most {forwarding.max_attempts} attempts, first retry after {forwarding.retry_seconds:g} s")
    return lines
