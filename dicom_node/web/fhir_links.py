"""References left to the FHIR resources a DICOMweb DELETE removed (``deletion``): marked, never dangling.

A DELETE of instances deletes their ``Media`` and, with the last instance, the study's ``ImagingStudy``. The
case (``DiagnosticReport.imagingStudy``, ``DiagnosticReport.media.link``) and the AI results
(``Observation.derivedFrom``) named them; a literal reference to a deleted resource would answer 410 to
whoever follows it. HAPI refuses such a delete (referential integrity) unless cascading; a DICOM delete has
to succeed, so each such reference becomes a logical one (references.html#logical): the object's DICOM UID
as ``Reference.identifier`` (``urn:dicom:uid``), its type, and a ``display`` saying it was deleted and when.
A signed report keeps saying which images it was about, and that they are gone. Each resource so changed
is a new version (its history keeps the old reference) and is named in the delete's AuditEvent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dicom_node.fhir_sync import DICOM_UID_SYSTEM
from fhir_server.repository import Repository, Stored

MAX_REFERRERS = 200  # per deleted resource and kind of referrer


@dataclass(slots=True)
class Removed:
    """The deleted resources: ``Media/1`` -> (its DICOM UID as ``urn:oid:...``, what it was for people)."""

    targets: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, reference: str, uid: str, kind: str) -> None:
        self.targets[reference] = (uid, kind)


def _marker(reference: str, uid: str, kind: str, today: str) -> dict[str, Any]:
    marker: dict[str, Any] = {
        "type": reference.split("/", 1)[0],
        "display": f"{kind} deleted over DICOMweb on {today} (no longer available)",
    }
    if uid:
        marker["identifier"] = {"system": DICOM_UID_SYSTEM, "value": uid}
    return marker


def _marked(reference: Any, removed: Removed, today: str) -> dict[str, Any] | None:
    """The logical reference replacing ``reference``, None when it names nothing deleted."""
    target = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(target, str) or target not in removed.targets:
        return None
    uid, kind = removed.targets[target]
    return _marker(target, uid, kind, today)


def _mark(resource: dict[str, Any], removed: Removed, today: str) -> bool:
    """Marks, in place, the references of a DiagnosticReport or Observation; True when one changed."""
    changed = False
    for key in ("imagingStudy", "derivedFrom"):
        for n, reference in enumerate(resource.get(key) or []):
            if (marker := _marked(reference, removed, today)) is not None:
                resource[key][n] = marker
                changed = True
    for item in resource.get("media") or []:
        if isinstance(item, dict) and (marker := _marked(item.get("link"), removed, today)) is not None:
            item["link"] = marker
            changed = True
    return changed


async def _referrers(repo: Repository, removed: Removed, case: str | None) -> list[Stored]:
    found: dict[str, Stored] = {}
    for reference in removed.targets:
        criteria = [("DiagnosticReport", "media"), ("Observation", "derived-from")]
        for resource_type, parameter in criteria:
            for stored in await repo.find(resource_type, [(parameter, reference)], MAX_REFERRERS):
                found.setdefault(f"{resource_type}/{stored.resource['id']}", stored)
    if case is not None and f"DiagnosticReport/{case}" not in found:
        for stored in await repo.find("DiagnosticReport", [("_id", case)], 1):
            found[f"DiagnosticReport/{case}"] = stored
    return list(found.values())


async def unlink_deleted(repo: Repository, removed: Removed, case: str | None) -> list[str]:
    """Marks every reference to a deleted resource in the case (``case``, the study's DiagnosticReport) and in
    the reports and Observations that name a deleted one; returns the versioned references of those changed."""
    if not removed.targets:
        return []
    today = datetime.now(UTC).date().isoformat()
    changed = []
    for stored in await _referrers(repo, removed, case):
        body = copy.deepcopy(stored.resource)
        if _mark(body, removed, today):
            kind, id = str(body["resourceType"]), str(body["id"])
            updated = await repo.update(body, resource_type=kind, id=id, server_built=True)
            changed.append(f"{kind}/{id}/_history/{updated.version.version}")
    return changed
