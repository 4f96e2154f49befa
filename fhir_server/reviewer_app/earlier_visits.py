"""Earlier visits of the same lesion (pure functions: no I/O).

The same lesion is the same ``BodyStructure``: an earlier visit is an Observation whose ``focus`` is that
BodyStructure and whose ``subject`` is this case's patient, from another report than this one (not among
its ``result``); its images are the Media it was ``derivedFrom``, whose ``subject`` is this patient too.
Nothing is matched by site, date or look: a lesion with no BodyStructure of its own has no earlier visits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_server.reviewer_app.case_view import Image, Resource, image_of

MAX_VISITS = 6  # per lesion, the latest kept


@dataclass
class Visit:
    when: str  # the date the images were taken (YYYY-MM-DD)
    images: list[Image] = field(default_factory=list)


def _subject(resource: Resource) -> str:
    return str((resource.get("subject") or {}).get("reference") or "")


def _when(observation: Resource, media: Resource) -> str:
    return str(media.get("createdDateTime") or observation.get("effectiveDateTime") or observation.get("issued") or "")


def earlier_visits(
    lesion: str, patient: str, current: set[str], observations: list[Resource], media: dict[str, Resource],
    overlays: dict[str, str],
) -> list[Visit]:  # fmt: skip
    """The lesion's images from other reports, one Visit per date, oldest first."""
    by_date: dict[str, Visit] = {}
    seen: set[str] = set()
    for observation in observations:
        focus = [str(f.get("reference") or "") for f in observation.get("focus") or []]
        if lesion not in focus or _subject(observation) != patient or f"Observation/{observation['id']}" in current:
            continue
        for derived in observation.get("derivedFrom") or []:
            media_id = str(derived.get("reference") or "").removeprefix("Media/")
            found = media.get(media_id)
            if found is None or media_id in seen or _subject(found) != patient:
                continue
            seen.add(media_id)
            day = _when(observation, found)[:10] or "date not recorded"
            by_date.setdefault(day, Visit(day)).images.append(image_of(found, overlays))
    return sorted(by_date.values(), key=lambda v: v.when)[-MAX_VISITS:]


def derived_media_ids(observations: list[Resource]) -> list[str]:
    refs = [str(d.get("reference") or "") for o in observations for d in o.get("derivedFrom") or []]
    return sorted({r.removeprefix("Media/") for r in refs if r.startswith("Media/")})
