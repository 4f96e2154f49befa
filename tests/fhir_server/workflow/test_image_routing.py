"""Issue 14, routing by image type: a tenant's flow routes its AI step to dermoscopic or clinical images only;
an image of the other type runs no model and goes to a human. Images C-STOREd with pynetdicom into the running
server; the inference worker driven by hand."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.workflow.library import shipped
from tests.fhir_server.workflow.conftest import REVIEW, Node, consenting_patient, lesion_instance, wait_for
from tests.fhir_server.workflow.test_flows import SUSPICIOUS_SEED, steps

pytestmark = pytest.mark.interop


def routed_to(image_type: str, version: str) -> dict[str, Any]:
    """The ai-then-signoff definition whose AI step is for ``image_type`` images only."""
    actions = shipped("ai-then-signoff")["action"]
    ai = next(a for a in actions if a["code"][0]["coding"][0]["code"] == "ai-analysis")
    ai["dynamicValue"] = [{"path": "imageType", "expression": {"language": "text/fhirpath",
                                                               "expression": f"'{image_type}'"}}]  # fmt: skip
    return {"version": version, "action": actions}


def test_an_image_of_another_type_runs_no_model_and_goes_to_a_human(node: Node) -> None:
    node.activate("ai-then-signoff", **routed_to("clinical", "routing-1"))
    patient = consenting_patient(node.client, "ROUTE-DERM")
    node.store(lesion_instance("ROUTE-DERM", seed=SUSPICIOUS_SEED, accession="ROUTE-DERM"))  # dermoscopic, DMS
    report, root = node.case(patient)
    review = wait_for(node.client, "Task", {"code": REVIEW, "focus": f"DiagnosticReport/{report['id']}"})[0]
    assert review["priority"] == "routine"
    node.analyse()
    assert node.total("Observation", subject=f"Patient/{patient}") == 0  # the worker ran no model
    reason = steps(node, root)["human-review"]["businessStatus"]["text"]
    assert "no AI model of this flow is for this image type (dermoscopic image)" in reason


def test_an_image_of_the_routed_type_is_analysed(node: Node) -> None:
    node.activate("ai-then-signoff", **routed_to("dermoscopic", "routing-2"))
    patient = consenting_patient(node.client, "ROUTE-OK")
    node.store(lesion_instance("ROUTE-OK", seed=SUSPICIOUS_SEED, accession="ROUTE-OK"))
    node.case(patient)
    assert node.analyse() >= 1
    assert node.total("Observation", subject=f"Patient/{patient}") >= 2
