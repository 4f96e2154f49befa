"""A server with the DIMSE listener and the workflow engine running, and an inference worker the tests
drive by hand (``drain``), so "did the AI run?" is answered deterministically."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dermbridge import __version__
from dicom_node.blobs import FileBlobStore
from fhir_server.workflow.library import FlowLibrary, shipped
from inference.registry import ModelRegistry
from inference.worker import InferenceWorker
from tests.conftest import BASE, FhirTestClient, make_client
from tests.dicom_scu import c_store
from tests.inference.test_worker import DEADLINE, consenting_patient, lesion_instance, wait_for

CASE_TASK = "urn:dermbridge:workflow-step|case"
REVIEW = "urn:dermbridge:task|clinician-review"

__all__ = ["BASE", "CASE_TASK", "REVIEW", "consenting_patient", "lesion_instance", "wait_for"]


@dataclass
class Node:
    client: FhirTestClient
    worker: InferenceWorker
    tmp: Path

    def store(self, ds: pydicom.Dataset) -> None:
        """C-STORE with pynetdicom as the SCU; Success (0x0000) only once the instance is durable."""
        c_store(int(self.client.app.state.dimse.ports[0]), ds)  # type: ignore[attr-defined]

    def analyse(self) -> int:
        """One round of the inference worker over what is queued."""
        return int(self.client.portal.call(self.worker.drain))

    def get(self, url: str, **params: str) -> Any:
        response = self.client.get(f"{BASE}/{url}", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def total(self, url: str, **params: str) -> int:
        return int(self.get(url, _total="accurate", **params)["total"])

    def activate(self, name: str, **changes: Any) -> dict[str, Any]:
        """A tenant definition from a shipped one (as a new draft), then ``$activate``."""
        body = shipped(name)
        body.pop("id")
        body.update(status="draft", **changes)
        created = self.client.post(f"{BASE}/PlanDefinition", json=body)
        assert created.status_code == 201, created.text
        activated = self.client.post(f"{BASE}/PlanDefinition/{created.json()['id']}/$activate")
        assert activated.status_code == 200, activated.text
        assert activated.json()["status"] == "active"
        return dict(activated.json())

    def until(self, url: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The resource at ``url`` once ``check`` holds (bounded by the tests' deadline)."""
        deadline = time.monotonic() + DEADLINE
        while not check(resource := self.get(url)):
            assert time.monotonic() < deadline, f"{url} did not reach the expected state in {DEADLINE} s"
            time.sleep(0.1)
        return dict(resource)

    def case(self, patient_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The case of the patient and its root workflow Task (waited for)."""
        report = wait_for(self.client, "DiagnosticReport", {"subject": f"Patient/{patient_id}"})[0]
        root = wait_for(self.client, "Task", {"code": CASE_TASK, "focus": f"DiagnosticReport/{report['id']}"})[0]
        return report, root


@contextmanager
def running_node(tmp: Path, **settings: Any) -> Iterator[Node]:
    """The server (DIMSE from any AE title into ``default``) with ``settings``, and a hand-driven worker."""
    with make_client(tmp / "var", dicom_any_ae_tenant="default", **settings) as client:
        configured = client.app.state.settings  # type: ignore[attr-defined]
        runners = ModelRegistry.load(configured.inference_models).runners(configured.inference_device)
        worker = InferenceWorker(client.app.state.engine, FileBlobStore(configured.blob_root()), runners,  # type: ignore[attr-defined]
                                 audit=client.app.state.audit, server_version=__version__,  # type: ignore[attr-defined]
                                 human_review=False, flows=FlowLibrary())  # fmt: skip
        yield Node(client, worker, tmp)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(tmp_path_factory.mktemp("workflow")) as running:
        yield running
