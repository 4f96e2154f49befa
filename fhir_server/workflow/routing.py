"""The inference worker's question (DESIGN data flow 2): does this case's flow run AI on this image, and
with which models? Asked before the model runs, so the flow adds no hop in front of the findings.

Routing is by product (the definition is per product), and per ``ai-analysis`` step by body site (SNOMED CT
codes), by image type and SOP class, and by model (a step may name model keys; none named: every loaded
model). Several steps route several models, e.g. a dermoscopic model and a clinical-photograph model.

The **image type** comes from the image's IOD and modality (PS3.3 A.32.4, PS3.3 C.7.3.1.1.1):
``dermoscopic`` for a Dermoscopic Photography image or modality ``DMS`` (Dermoscopy), ``clinical`` (a
macroscopic, overview photograph) for anything else, e.g. a VL Photographic image of modality ``XC``
(External-camera Photography). A VL Photographic image taken through a dermatoscope is told apart only
by its pixels (the model's own admission check); a flow that must tell it by IOD names ``sopClass``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.repository import Repository
from fhir_server.workflow.definition import AiStep, Flow
from fhir_server.workflow.library import FlowLibrary

DERMOSCOPIC_PHOTOGRAPHY = "1.2.840.10008.5.1.4.1.1.77.1.7"  # Dermoscopic Photography Image Storage (PS3.4 B.5)
DERMOSCOPY_MODALITY = "DMS"  # PS3.16 CID 29


def site_codes(body_site: dict[str, Any] | None) -> frozenset[str]:
    return frozenset(str(c.get("code")) for c in (body_site or {}).get("coding") or [] if isinstance(c, dict))


@dataclass(frozen=True, slots=True)
class Image:
    """What routing knows of an image: its body site (SNOMED CT codes), SOP class and modality."""

    sites: frozenset[str] = frozenset()
    sop_class: str | None = None
    modality: str | None = None

    @classmethod
    def of(cls, media: dict[str, Any], sop_class: str | None) -> Image:
        """From the image's ``Media`` (``bodySite``, ``modality`` in DICOM's DCM system) and its SOP class."""
        modality = next((str(c.get("code")) for c in (media.get("modality") or {}).get("coding") or []
                         if isinstance(c, dict) and c.get("code")), None)  # fmt: skip
        return cls(site_codes(media.get("bodySite")), sop_class or None, modality)

    @property
    def type(self) -> str:
        if self.sop_class == DERMOSCOPIC_PHOTOGRAPHY or self.modality == DERMOSCOPY_MODALITY:
            return "dermoscopic"
        return "clinical"


def covers(step: AiStep, image: Image) -> bool:
    """Whether the step is for this image (each condition the step names holds)."""
    if step.body_sites and not image.sites & set(step.body_sites):
        return False
    if step.image_types and image.type not in step.image_types:
        return False
    return not step.sop_classes or image.sop_class in step.sop_classes


def uncovered(flow: Flow, image: Image) -> str | None:
    """Why no AI step of the flow is for this image (None: one is)."""
    if any(covers(step, image) for step in flow.ai):
        return None
    named = [what for what, wanted in (("body site", any(s.body_sites for s in flow.ai)),
             ("image type", any(s.image_types or s.sop_classes for s in flow.ai))) if wanted]  # fmt: skip
    return f"no AI model of this flow is for this {' and '.join(named) or 'image'} ({image.type} image)"


def models_for(flow: Flow | None, available: list[str], image: Image) -> list[str]:
    """Of ``available`` (model keys), those the flow's AI steps route this image to (pure)."""
    if flow is None:
        return []
    chosen: list[str] = []
    for step in flow.ai:
        if not covers(step, image):
            continue
        chosen += [key for key in available if (not step.models or key in step.models) and key not in chosen]
    return chosen


async def ai_models(
    library: FlowLibrary, repo: Repository, report_id: str, available: list[str], image: Image
) -> list[str]:
    """The models to run on an image of the case: none when its flow has no AI analysis (or no flow)."""
    choice = await library.for_case(repo, report_id)
    return models_for(choice.flow, available, image)
