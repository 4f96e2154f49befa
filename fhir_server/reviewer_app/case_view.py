"""What the case view shows, read from FHIR resources (pure functions: no I/O).

- Per lesion (``BodyStructure``): the AI findings whose ``focus`` is the lesion (observation.html: the risk
  results with their probability, interpretation and the model card's decision threshold as a component, the
  predicted diagnosis), the clinician findings beside them, and the images they were derived from
  (``derivedFrom`` Media, whose ``content.url`` is the WADO-RS rendering, PS3.18 10.4.1.1.3), each with its
  saliency map (a ``Media`` of modality ``urn:dermbridge:media|saliency-map`` that is ``partOf`` the image's
  Media, its PNG a ``Binary``).
- A demonstration model's output is tagged ``urn:dermbridge:ai-use|demonstration``: the page says so, and
  offers no "confirm" (the ``$complete`` operation refuses it too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEMONSTRATION = ("urn:dermbridge:ai-use", "demonstration")
THRESHOLD = ("urn:dermbridge:ai-result", "threshold")
SALIENCY = ("urn:dermbridge:media", "saliency-map")
NO_LESION = "(no lesion named)"

Resource = dict[str, Any]


@dataclass
class Finding:
    """One Observation as a reviewer reads it."""

    what: str
    value: str
    interpretation: str = ""
    threshold: str = ""
    by_ai: bool = True


@dataclass
class Image:
    media_id: str
    url: str  # the rendered image (same origin)
    site: str
    saliency: str = ""  # the app's URL of the saliency PNG, or empty


@dataclass
class Lesion:
    reference: str
    label: str
    findings: list[Finding] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)


def coded(resource: Resource | None, system: str, code: str, key: str = "coding") -> bool:
    codings = (resource or {}).get(key) or []
    return any(c.get("system") == system and c.get("code") == code for c in codings)


def text_of(concept: Resource | None) -> str:
    concept = concept or {}
    codings = concept.get("coding") or [{}]
    return str(concept.get("text") or codings[0].get("display") or codings[0].get("code") or "")


def quantity(value: Resource | None) -> str:
    if not value:
        return ""
    return f"{value.get('comparator', '')}{value.get('value', '')}"


def is_demonstration(resource: Resource) -> bool:
    return coded(resource.get("meta"), *DEMONSTRATION, key="tag")


def finding(observation: Resource) -> Finding:
    value = quantity(observation.get("valueQuantity")) or text_of(observation.get("valueCodeableConcept"))
    components = observation.get("component") or []
    thresholds = [quantity(c.get("valueQuantity")) for c in components if coded(c.get("code"), *THRESHOLD)]
    threshold = thresholds[0] if thresholds else ""
    readings = observation.get("interpretation") or []
    return Finding(
        what=text_of(observation.get("code")),
        value=value or str(observation.get("valueString") or ""),
        interpretation=text_of(readings[0]) if readings else "",
        threshold=threshold,
        by_ai="device" in observation,
    )


def _focus(observation: Resource) -> str:
    focus = observation.get("focus") or [{}]
    return str(focus[0].get("reference") or NO_LESION)


def _derived_media(observation: Resource) -> list[str]:
    refs = [str(d.get("reference") or "") for d in observation.get("derivedFrom") or []]
    return [r.removeprefix("Media/") for r in refs if r.startswith("Media/")]


def saliency_of(maps: list[Resource]) -> dict[str, str]:
    """Image Media id -> the app URL of its saliency PNG."""
    found: dict[str, str] = {}
    for media in maps:
        url = str((media.get("content") or {}).get("url") or "")
        for part in media.get("partOf") or []:
            image = str(part.get("reference") or "")
            if image.startswith("Media/") and url.startswith("Binary/"):
                found[image.removeprefix("Media/")] = f"/app/binary/{url.removeprefix('Binary/')}"
    return found


def lesions(
    observations: list[Resource], media: list[Resource], maps: list[Resource], structures: list[Resource]
) -> list[Lesion]:
    """The case's lesions, each with its findings (AI first) and images (with their saliency maps)."""
    labels = {f"BodyStructure/{s['id']}": _structure_label(s) for s in structures}
    by_id = {str(m["id"]): m for m in media if not coded(m.get("modality"), *SALIENCY)}
    overlays = saliency_of(maps)
    grouped: dict[str, Lesion] = {}
    placed: set[str] = set()
    for observation in sorted(observations, key=lambda o: "device" not in o):
        reference = _focus(observation)
        lesion = grouped.setdefault(reference, Lesion(reference, labels.get(reference, reference)))
        lesion.findings.append(finding(observation))
        for media_id in _derived_media(observation):
            if media_id in by_id and media_id not in placed:
                placed.add(media_id)
                lesion.images.append(image_of(by_id[media_id], overlays))
    unplaced = [image_of(m, overlays) for i, m in by_id.items() if i not in placed]
    if unplaced:
        grouped.setdefault(NO_LESION, Lesion(NO_LESION, "Images without findings")).images.extend(unplaced)
    return list(grouped.values())


def image_of(media: Resource, overlays: dict[str, str]) -> Image:
    url = str((media.get("content") or {}).get("url") or "")
    path = "/" + url.split("://", 1)[1].split("/", 1)[1] if "://" in url else url  # same origin: the path only
    return Image(str(media["id"]), path, text_of(media.get("bodySite")), overlays.get(str(media["id"]), ""))


def _structure_label(structure: Resource) -> str:
    site = text_of(structure.get("location"))
    return str(structure.get("description") or site or f"Lesion {structure['id']}")


def banner(patient: Resource) -> dict[str, str]:
    """Minimal personal data: name, birth year, sex, the first identifier."""
    names = patient.get("name") or [{}]
    name = names[0].get("text") or " ".join([*names[0].get("given", []), names[0].get("family", "")]).strip()
    identifiers = patient.get("identifier") or [{}]
    return {
        "name": name or "(no name recorded)",
        "born": str(patient.get("birthDate") or "")[:4],
        "sex": str(patient.get("gender") or ""),
        "identifier": str(identifiers[0].get("value") or ""),
    }


def consent_summary(consents: list[Resource]) -> str:
    """The patient's consents as one line: status, permit/deny and purposes."""
    if not consents:
        return "No consent recorded"
    parts = []
    for consent in consents:
        provision = consent.get("provision") or {}
        purposes = ", ".join(p.get("display") or p.get("code", "") for p in provision.get("purpose") or [])
        parts.append(f"{consent.get('status', '')}: {provision.get('type', '')} {purposes}".strip())
    return "; ".join(parts)
