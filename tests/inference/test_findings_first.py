"""Findings first (issue 13, Explanations: speed): the risk results are committed and searchable, and
the case lists them, before the explanations are computed; a crash between the two steps leaves a
redelivered event to do only the second, so the image has one set of results and one of explanations.

The worker is driven by hand (no background worker): dcmtk's storescu stores the image, a worker
whose explanation step dies (a ``BaseException``, as a killed process: no retry, no acknowledgement)
commits the findings only, and a fresh worker takes the event again once its lease has run out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dermbridge import __version__
from dicom_node.blobs import FileBlobStore
from inference.pipeline import Prediction, Runner
from inference.registry import ModelRegistry
from inference.worker import InferenceWorker, Job
from tests.conftest import BASE, FhirTestClient, make_client
from tests.inference.test_findings import DIAGNOSIS, EVERY_CLASS, search
from tests.inference.test_worker import DEADLINE, SALIENCY, consenting_patient, lesion_instance, send

pytestmark = pytest.mark.interop
ABCD = "urn:dermbridge:abcd|abc-partial"


class Killed(BaseException):
    """The process dies: nothing in the worker catches it."""


class DiesBeforeExplaining(InferenceWorker):
    """A worker whose process dies after the findings' commit, before the explanations."""

    async def _explain(self, repo: Any, runner: Runner, job: Job, prediction: Prediction) -> None:
        raise Killed


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var", dicom_any_ae_tenant="default") as client:  # no background worker
        yield client


def new_worker(node: FhirTestClient, runners: list[Runner], kind: type[InferenceWorker], lease: float) -> Any:
    settings = node.app.state.settings  # type: ignore[attr-defined]
    return kind(node.app.state.engine, FileBlobStore(settings.blob_root()), runners,  # type: ignore[attr-defined]
                audit=node.app.state.audit, server_version=__version__, lease_seconds=lease)  # type: ignore[attr-defined]  # fmt: skip


def test_findings_are_searchable_before_the_explanations_and_a_crash_between_does_not_duplicate(
    node: FhirTestClient, tmp_path: Path
) -> None:
    settings = node.app.state.settings  # type: ignore[attr-defined]
    runners = ModelRegistry.load(settings.inference_models).runners(settings.inference_device)
    patient_id = consenting_patient(node, "FF-1")
    send(node, tmp_path, lesion_instance("FF-1", seed=13))  # C-STORE success: the event is committed
    subject = {"subject": f"Patient/{patient_id}"}

    dying = new_worker(node, runners, DiesBeforeExplaining, lease=0.5)

    async def until_killed() -> bool:  # the kill stops here, not in the test's event loop
        try:
            await dying.drain()
        except Killed:
            return True
        return False

    assert node.portal.call(until_killed)
    # step 1 committed, step 2 never ran: the findings are searchable and the case lists them
    risks = search(node, "Observation", {**subject, "code": EVERY_CLASS})
    diagnoses = search(node, "Observation", {**subject, "code": DIAGNOSIS})
    assert len(risks) == 2 and len(diagnoses) == 1
    found = search(node, "Observation", {**subject, "code": "urn:dermbridge:ai-risk|probability-of-93655004",
                                         "value-quantity": "ge0.5"})  # fmt: skip
    assert [o["id"] for o in found] == [o["id"] for o in risks if o["code"]["coding"][0]["code"].endswith("93655004")]
    report = search(node, "DiagnosticReport", subject)[0]
    listed = {r["reference"] for r in report["result"]}
    assert listed == {f"Observation/{o['id']}" for o in (*risks, *diagnoses)}
    assert report["status"] == "preliminary" and "Malignant melanoma of skin" in report["conclusion"]
    assert search(node, "Provenance", {"target": f"Observation/{diagnoses[0]['id']}"})
    assert search(node, "Observation", {**subject, "code": ABCD}) == []
    assert search(node, "Media", {**subject, "modality": SALIENCY}) == []

    # the event was never acknowledged: a fresh worker gets it once the lease has run out
    fresh = new_worker(node, runners, InferenceWorker, lease=30.0)
    deadline = time.monotonic() + DEADLINE
    while node.portal.call(fresh.drain) == 0:
        assert time.monotonic() < deadline, "the unacknowledged event never came back"
        time.sleep(0.1)
    assert len(search(node, "Observation", {**subject, "code": EVERY_CLASS})) == 2  # one set of results
    assert [d["id"] for d in search(node, "Observation", {**subject, "code": DIAGNOSIS})] == [diagnoses[0]["id"]]
    abcd = search(node, "Observation", {**subject, "code": ABCD})
    maps = search(node, "Media", {**subject, "modality": SALIENCY})
    assert len(abcd) == 1 and len(maps) == 1  # one set of explanations
    after = search(node, "DiagnosticReport", subject)[0]
    assert {r["reference"] for r in after["result"]} == listed | {f"Observation/{abcd[0]['id']}"}
    assert after["conclusion"] == report["conclusion"]  # the explanations do not change the AI's conclusion
    assert len(search(node, "Provenance", {"target": f"Observation/{diagnoses[0]['id']}"})) == 1
    audits = node.get(f"{BASE}/AuditEvent", params={"subtype": "ai-analysis", "_count": "50"}).json()
    texts = sorted(e["resource"]["outcomeDesc"].split(" ", 1)[0] for e in audits.get("entry", []))
    assert texts == ["explanations", "findings"]  # one record per step, none repeated
    assert node.portal.call(fresh.drain) == 0  # settled: nothing left to deliver


def test_explanations_failing_on_the_last_attempt_leave_the_findings_standing(
    node: FhirTestClient, tmp_path: Path
) -> None:
    """Step 2 fails every time (a model card naming a Grad-CAM layer the network does not have): the
    case does not say "analysis failed"; it says the explanations are unavailable and the findings stand."""
    settings = node.app.state.settings  # type: ignore[attr-defined]
    loaded = ModelRegistry.load(settings.inference_models).runners(settings.inference_device)
    broken = [Runner(replace(r.model, card=replace(r.model.card, saliency_layer="features.no_such_layer")), r.device)
              for r in loaded]  # fmt: skip
    worker = new_worker(node, broken, InferenceWorker, lease=0.05)
    worker.max_attempts = 2
    patient_id = consenting_patient(node, "FF-2")
    send(node, tmp_path, lesion_instance("FF-2", seed=14))
    subject = {"subject": f"Patient/{patient_id}"}
    unavailable = {"patient": f"Patient/{patient_id}", "code": "urn:dermbridge:task|ai-explanations"}
    deadline = time.monotonic() + DEADLINE
    while not search(node, "Task", unavailable):  # attempt 1, its back-off, attempt 2 (the last)
        assert time.monotonic() < deadline, "the explanations' failure was never recorded"
        node.portal.call(worker.drain)
        time.sleep(0.05)

    task = search(node, "Task", unavailable)[0]
    assert task["status"] == "failed"
    assert "explanations unavailable" in task["statusReason"]["text"]
    assert "findings of this image were committed and stand" in task["statusReason"]["text"]
    outcome = node.get(f"{BASE}/{task['output'][0]['valueReference']['reference']}").json()
    assert outcome["issue"][0]["severity"] == "warning" and outcome["issue"][0]["code"] == "incomplete"
    assert search(node, "Task", {"patient": f"Patient/{patient_id}", "code": "urn:dermbridge:task|ai-analysis"}) == []
    # the findings stand: searchable, listed on the case, which keeps its conclusion
    risks = search(node, "Observation", {**subject, "code": EVERY_CLASS})
    diagnoses = search(node, "Observation", {**subject, "code": DIAGNOSIS})
    assert len(risks) == 2 and len(diagnoses) == 1
    report = search(node, "DiagnosticReport", subject)[0]
    assert task["focus"]["reference"] == f"DiagnosticReport/{report['id']}"
    assert {f"Observation/{o['id']}" for o in (*risks, *diagnoses)} <= {r["reference"] for r in report["result"]}
    assert "Malignant melanoma of skin" in report["conclusion"]
    assert search(node, "Media", {**subject, "modality": SALIENCY}) == []
    audits = node.get(f"{BASE}/AuditEvent", params={"subtype": "ai-analysis", "_count": "50"}).json()
    texts = [e["resource"]["outcomeDesc"] for e in audits.get("entry", [])]
    assert not any("analysis failed" in text for text in texts)
    assert any(text.startswith("AI explanations unavailable") for text in texts)
    store = node.portal.call(node.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
    left = node.portal.call(store.claim_events, "inference", 100, 60)
    assert [e for e in left if e.topic == "imaging.instance-stored"] == []  # settled, nothing stuck
