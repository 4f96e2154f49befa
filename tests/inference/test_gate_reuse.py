"""The quality gate's work is not done twice (issue 13, Explanations: speed): the pixel checks resize
the image and find its field of view once, and the lesion the gate segmented is the one the ABCD rule
of step 2 measures. Reuse must not change a result: the same mask, the same ABCD, the same verdict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.abcd import analyse
from inference.admission import admit
from inference.demo import ACCEPTS
from inference.pipeline import Prediction, Runner
from inference.quality import inspect
from inference.registry import ModelRegistry
from inference.segmentation import Segmentation, segment
from inference.synthetic import lesion_image, random_spec
from inference.synthetic_scenes import he_tile
from inference.worker import InferenceWorker, Job
from tests.conftest import FhirTestClient, make_client
from tests.dicom_factories import dermoscopic, with_pixels
from tests.inference.test_findings_first import new_worker
from tests.inference.test_worker import consenting_patient, lesion_instance, send

pytestmark = pytest.mark.interop


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var", dicom_any_ae_tenant="default") as client:  # no background worker
        yield client


def lesion(seed: int) -> np.ndarray:
    return lesion_image(random_spec(np.random.default_rng(seed), 256, bool(seed % 2)), 256, seed=seed)


@pytest.mark.parametrize("seed", range(4))
def test_the_gate_hands_on_the_lesion_it_segmented(seed: int) -> None:
    image = lesion(seed)
    report = inspect(image)
    assert report.problems == [] and report.segmentation is not None
    fresh = segment(image)
    assert np.array_equal(report.segmentation.lesion, fresh.lesion)
    assert np.array_equal(report.segmentation.field, fresh.field)
    assert analyse(image, (0.05, 0.05), report.segmentation) == analyse(image, (0.05, 0.05))


def test_a_refused_image_hands_on_no_lesion() -> None:
    tile = he_tile(256, 1)
    assert inspect(tile).segmentation is None
    dataset = with_pixels(dermoscopic(), lesion(1))
    assert admit(dataset, lesion(1), ACCEPTS, inspect(lesion(1))) == []
    assert {p.code for p in admit(dataset, tile, ACCEPTS, inspect(tile))} == {"no-skin"}


class Watching(InferenceWorker):
    """Notes the lesion each image's explanations are computed from."""

    seen: list[Segmentation | None]

    async def _explain(self, repo: Any, runner: Runner, job: Job, prediction: Prediction) -> None:
        self.seen.append(job.segmentation)
        await super()._explain(repo, runner, job, prediction)


def test_step_two_measures_the_gates_mask(node: FhirTestClient, tmp_path: Path) -> None:
    settings = node.app.state.settings  # type: ignore[attr-defined]
    runners = ModelRegistry.load(settings.inference_models).runners(settings.inference_device)
    worker = new_worker(node, runners, Watching, lease=30.0)
    worker.seen = []
    consenting_patient(node, "GR-1")
    instance = lesion_instance("GR-1", seed=21)
    send(node, tmp_path, instance)
    # one image event; a second may be the Consent's late-consent requeue of the same image when its consumer
    # runs after the image arrived (a busy machine): it finds the image analysed and settles without a model run
    assert node.portal.call(worker.drain) >= 1
    pixels = np.frombuffer(instance.PixelData, np.uint8).reshape(instance.Rows, instance.Columns, 3)
    assert len(worker.seen) == 1 and worker.seen[0] is not None  # the gate's, handed on
    assert np.array_equal(worker.seen[0].lesion, segment(pixels).lesion)
