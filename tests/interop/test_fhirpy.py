"""A third-party FHIR client (fhirpy) drives a real server process over a loopback socket."""

from __future__ import annotations

from pathlib import Path

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from tests.schema import assert_r4
from tests.server import running_server

pytestmark = pytest.mark.interop


def test_fhirpy_end_to_end(tmp_path: Path) -> None:
    with running_server(tmp_path / "var") as server:
        client = SyncFHIRClient(server.base, authorization=f"Bearer {server.token}")
        patient = client.resource(
            "Patient",
            name=[{"family": "Lesion", "given": ["Lara"]}],
            identifier=[{"system": "urn:clinic:mrn", "value": "D-1001"}],
            birthDate="1985-07-14",
        )
        patient.save()
        assert patient["id"] and patient["meta"]["versionId"] == "1"

        report = client.resource(
            "DiagnosticReport",
            status="registered",
            code={"coding": [{"system": "http://loinc.org", "code": "72170-4"}]},
            subject=patient.to_reference(),
        )
        report.save()

        found = client.resources("Patient").search(identifier="urn:clinic:mrn|D-1001").fetch_all()
        assert [p["id"] for p in found] == [patient["id"]]
        for resource in (patient, report, *found):
            assert_r4(resource.serialize())
        reports = (
            client.resources("DiagnosticReport")
            .search(subject=patient["id"])
            .include("DiagnosticReport", "subject")
            .fetch_raw()
        )
        assert_r4(reports)
        assert {e["resource"]["resourceType"] for e in reports["entry"]} == {"DiagnosticReport", "Patient"}

        report["status"] = "preliminary"
        report.save()
        fetched = client.reference("DiagnosticReport", report["id"]).to_resource()
        assert fetched["status"] == "preliminary" and fetched["meta"]["versionId"] == "2"
        assert_r4(fetched.serialize())

        for n in range(25):
            client.resource("Patient", name=[{"family": f"Bulk{n}"}]).save()
        everyone = client.resources("Patient").limit(7).fetch_all()  # follows the next links
        assert len(everyone) == 26
        for resource in everyone:
            assert_r4(resource.serialize())

        with pytest.raises(OperationOutcome):
            client.resource("Patient", gender="robot").save()

        report.delete()
        with pytest.raises(ResourceNotFound):
            client.reference("DiagnosticReport", report["id"]).to_resource()
