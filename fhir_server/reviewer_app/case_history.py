"""The case history as a reviewer reads it: who did what, when (pure functions: no I/O).

From the case's ``Provenance`` (provenance.html: ``recorded``, ``activity``, ``agent.who``, ``target``) and the
``AuditEvent`` s of its review Task and report (auditevent.html: ``recorded``, ``subtype`` the REST
interaction or operation, ``agent`` the requestor, ``outcome``). Reads and searches are left out (every
page view is one): the history lists what changed the case. No raw JSON reaches the page.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.reviewer_app.case_view import Resource, text_of

MAX_ENTRIES = 100
READS = ("R",)
OUTCOMES = {"0": "", "4": "refused", "8": "failed", "12": "failed"}


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    when: str  # YYYY-MM-DD HH:MM (UTC), first for the order
    who: str
    what: str
    outcome: str = ""


def _when(instant: object) -> str:
    return str(instant or "")[:16].replace("T", " ")


def _who(reference: Resource | None, names: dict[str, str]) -> str:
    reference = reference or {}
    ref = str(reference.get("reference") or "")
    return names.get(ref) or str(reference.get("display") or ref or "unknown")


def _targets(provenance: Resource) -> str:
    kinds = sorted({str(t.get("reference") or "").split("/", 1)[0] for t in provenance.get("target") or []} - {""})
    return ", ".join(kinds)


def from_provenance(provenance: Resource, names: dict[str, str]) -> Entry:
    agents = provenance.get("agent") or [{}]
    activity = text_of(provenance.get("activity")) or "recorded"
    targets = _targets(provenance)
    return Entry(_when(provenance.get("recorded")), _who(agents[0].get("who"), names),
                 f"{activity}{' (' + targets + ')' if targets else ''}")  # fmt: skip


def from_audit_event(event: Resource, names: dict[str, str]) -> Entry | None:
    if event.get("action") in READS:
        return None
    agents = event.get("agent") or [{}]
    requestor = next((a for a in agents if a.get("requestor")), agents[0])
    subtypes = event.get("subtype") or [{}]
    action = str(subtypes[0].get("display") or subtypes[0].get("code") or text_of(event.get("type")) or "event")
    entities = [str((e.get("what") or {}).get("reference") or "") for e in event.get("entity") or []]
    subject = next((e.split("/", 1)[0] for e in entities if e and not e.startswith("Patient/")), "")
    what = f"{action} {subject}".strip()
    return Entry(_when(event.get("recorded")), _who(requestor.get("who"), names), what,
                 OUTCOMES.get(str(event.get("outcome") or "0"), "failed"))  # fmt: skip


def agents_named(resources: list[Resource]) -> dict[str, str]:
    """Practitioner and Device references -> a name a person recognises."""
    names: dict[str, str] = {}
    for resource in resources:
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        if resource.get("resourceType") == "Practitioner":
            name = (resource.get("name") or [{}])[0]
            names[ref] = str(name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip())
        elif resource.get("resourceType") == "Device":
            device_names = resource.get("deviceName") or [{}]
            names[ref] = f"{device_names[0].get('name') or ref} (software)"
    return {k: v for k, v in names.items() if v}


def history(provenances: list[Resource], events: list[Resource], names: dict[str, str]) -> list[Entry]:
    """The case's changes, oldest first (at most ``MAX_ENTRIES``, the latest kept)."""
    entries = [from_provenance(p, names) for p in provenances]
    entries += [e for e in (from_audit_event(a, names) for a in events) if e is not None]
    return sorted(set(entries))[-MAX_ENTRIES:]


def agent_references(provenances: list[Resource], events: list[Resource]) -> list[str]:
    refs = [str((a.get("who") or {}).get("reference") or "") for p in provenances for a in p.get("agent") or []]
    refs += [str((a.get("who") or {}).get("reference") or "") for e in events for a in e.get("agent") or []]
    return sorted({r for r in refs if r.startswith(("Practitioner/", "Device/"))})
