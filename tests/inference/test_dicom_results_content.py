"""What the AI results' SR and SEG say (``inference.dicom_results``), read back with highdicom: what a
dermatologist would conclude from them must match the FHIR results (issue 17, clinical meaning first)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.derived import encoded
from dicom_node.iod import check_ai_result
from inference.demo import DEMO_DIR
from inference.dicom_results import AiResultObjects, build
from inference.loaders import load_model
from inference.model_card import ModelCard
from inference.segmentation import segment
from tests.dicom_factories import dermoscopic, with_pixels
from tests.inference.test_worker import lesion_instance

MELANOMA, NEVUS = "93655004", "400096001"
POSITIVE, NEGATIVE, EQUIVOCAL = "10828004", "260385009", "42425007"


@pytest.fixture(scope="module")
def demo() -> ModelCard:
    return load_model(DEMO_DIR).card


@pytest.fixture(scope="module")
def image() -> Dataset:
    ds = lesion_instance("SR-U", seed=31)
    ds.ImageLaterality = "R"
    return ds


def made(image: Dataset, card: ModelCard, probabilities: list[float], lesion: bool = True) -> AiResultObjects:
    segmentation = segment(np.asarray(image.pixel_array)) if lesion else None
    return build(image, card, probabilities, segmentation, server_version="test", weights_sha256="ab" * 32,
                 lesion="Lesion at Skin structure, Right", lesion_key="b1")  # fmt: skip


def _codes(ds: Dataset) -> Iterator[tuple[str, str]]:
    """Every (code value, keyword of the sequence holding it) in the dataset, nested ones too."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                value = item.get("CodeValue") or item.get("LongCodeValue")
                if value:
                    yield str(value), element.keyword
                yield from _codes(item)


def _values(sr: Dataset) -> set[str]:
    """The codes the report asserts as values (CODE content items), not the concepts it names."""
    return {code for code, keyword in _codes(sr) if keyword == "ConceptCodeSequence"}


def _evaluations(sr: Dataset, tmp_path: Path) -> dict[str, hd.sr.CodedConcept]:
    path = tmp_path / "sr.dcm"
    path.write_bytes(encoded(sr))
    report = hd.sr.srread(path)
    groups = report.content.get_planar_roi_measurement_groups() or report.content.get_image_measurement_groups()
    return {q.name.value: q.value for q in groups[0].get_qualitative_evaluations()}


def test_a_demonstration_model_never_asserts_a_disease(demo: ModelCard, image: Dataset, tmp_path: Path) -> None:
    objects = made(image, demo, [0.0001, 0.9999])
    assert MELANOMA not in _values(objects.sr) and NEVUS not in _values(objects.sr)
    evaluations = _evaluations(objects.sr, tmp_path)
    assert evaluations["439401001"].scheme_designator == "99DERMBRIDGE"
    assert evaluations["439401001"].meaning == "Malignant melanoma of skin (demo model, not a diagnosis)"
    assert evaluations[f"reading-of-{MELANOMA}"].value == POSITIVE
    assert "DEMONSTRATION" in objects.sr.SeriesDescription
    assert objects.seg is not None and "DEMONSTRATION" in objects.seg.SeriesDescription


def test_a_clinical_models_negative_is_no_finding_and_its_call_is_coded(demo: ModelCard, image: Dataset,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    clinical = replace(demo, clinical_use=True)
    negative = made(image, clinical, [0.95, 0.05])  # a nevus called, melanoma negative
    evaluations = _evaluations(negative.sr, tmp_path)
    assert evaluations[f"reading-of-{MELANOMA}"].value == NEGATIVE  # the disease named, its value Negative
    assert evaluations["439401001"].value == NEVUS
    assert MELANOMA not in _values(negative.sr)  # melanoma is never a value of a negative
    assert "DEMONSTRATION" not in negative.sr.SeriesDescription
    positive = _evaluations(made(image, clinical, [0.1, 0.9]).sr, tmp_path)
    assert (positive["439401001"].value, positive["439401001"].scheme_designator) == (MELANOMA, "SCT")
    near = _evaluations(made(image, clinical, [0.55, 0.45]).sr, tmp_path)  # melanoma just under its 0.5
    assert near[f"reading-of-{MELANOMA}"].value == EQUIVOCAL and near["439401001"].value == EQUIVOCAL


def test_without_a_segmented_lesion_the_report_references_the_image(demo: ModelCard, tmp_path: Path) -> None:
    plain = with_pixels(dermoscopic(seed=3), np.full((64, 64, 3), 200, np.uint8))  # no lesion to segment
    objects = made(plain, demo, [0.6, 0.4], lesion=False)
    assert objects.seg is None
    path = tmp_path / "plain.dcm"
    path.write_bytes(encoded(objects.sr))
    [group] = hd.sr.srread(path).content.get_image_measurement_groups()
    assert [s.referenced_sop_instance_uid for s in group.source_images] == [plain.SOPInstanceUID]


def test_the_objects_are_the_same_when_made_again_and_the_image_is_untouched(demo: ModelCard, image: Dataset) -> None:
    first, again = made(image, demo, [0.3, 0.7]), made(image, demo, [0.3, 0.7])
    assert first.sr.SOPInstanceUID == again.sr.SOPInstanceUID and first.seg is not None and again.seg is not None
    assert first.seg.SOPInstanceUID == again.seg.SOPInstanceUID
    assert first.sr.SeriesInstanceUID != image.SeriesInstanceUID != first.seg.SeriesInstanceUID
    assert "PixelSpacing" in image  # the SEG is built without it, from a copy
    [site] = [item for item in first.seg.SegmentSequence[0].AnatomicRegionSequence]
    assert site.CodeValue == "39937001"


def _group(sr: Dataset, tmp_path: Path) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    path = tmp_path / "group.dcm"
    path.write_bytes(encoded(sr))
    report = hd.sr.srread(path)
    return (report.content.get_planar_roi_measurement_groups() or report.content.get_image_measurement_groups())[0]


def test_each_probability_comes_with_the_models_decision_threshold(demo: ModelCard, image: Dataset,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    measured = {m.name.value: m.value for m in _group(made(image, demo, [0.3, 0.7]).sr, tmp_path).get_measurements()}
    for output in demo.classes:
        assert measured[f"threshold-of-{output.code}"] == pytest.approx(output.threshold)
        assert f"probability-of-{output.code}" in measured


def test_a_demonstration_label_sits_in_the_measurement_group(demo: ModelCard, image: Dataset, tmp_path: Path) -> None:
    evaluations = {q.name.value: q.value for q in _group(made(image, demo, [0.3, 0.7]).sr, tmp_path)
                   .get_qualitative_evaluations()}  # fmt: skip
    assert "DEMONSTRATION" in evaluations["ai-output-use"].meaning
    clinical = _group(made(image, replace(demo, clinical_use=True), [0.3, 0.7]).sr, tmp_path)
    assert "ai-output-use" not in {q.name.value for q in clinical.get_qualitative_evaluations()}


def test_an_image_without_pixel_spacing_still_gets_a_valid_segmentation(demo: ModelCard, tmp_path: Path) -> None:
    bare = lesion_instance("SR-NS", seed=31)
    for keyword in ("PixelSpacing", "SeriesNumber", "InstanceNumber", "AnatomicRegionSequence"):
        if keyword in bare:
            delattr(bare, keyword)
    objects = made(bare, demo, [0.3, 0.7])
    assert objects.seg is not None
    path = tmp_path / "seg.dcm"
    path.write_bytes(encoded(objects.seg))
    check_ai_result(dcmread(path))
    assert hd.seg.segread(path).number_of_segments == 1
    dumped = subprocess.run(["dcmdump", "-E", str(path)], capture_output=True, text=True, timeout=60)
    assert dumped.returncode == 0 and "Segmentation" in dumped.stdout, dumped.stderr
    evidence = objects.sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert objects.seg.SOPInstanceUID in {i.ReferencedSOPInstanceUID for s in evidence for i in s.ReferencedSOPSequence}
