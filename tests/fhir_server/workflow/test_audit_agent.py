"""Issue 14: an AuditEvent names the clinician a user token acts for (its SMART ``fhirUser`` claim) as the
requestor, beside the client (IHE BALP); system clients are recorded as before."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.audit.events import requestor_agents
from fhir_server.retention.audit import hold_event
from tests.conftest import BASE, FhirTestClient
from tests.fhir_server.workflow.review_case import ReviewCase
from tests.schema import assert_r4


def events(client: FhirTestClient, **params: str) -> list[dict[str, Any]]:
    found = client.get(f"{BASE}/AuditEvent", params={**params, "_count": "100"}).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_a_reviewer_s_operation_and_read_name_the_practitioner(client: FhirTestClient) -> None:
    case = ReviewCase(client)
    task = case.open()["id"]
    reviewer = case.reviewer("Dr Audit")
    assert reviewer.op(task, "claim").status_code == 200
    assert reviewer.get(f"Task/{task}").status_code == 200
    mine = events(client, agent=reviewer.practitioner)  # AuditEvent?agent= searches agent.who
    kinds = {e["subtype"][0]["code"]: e for e in mine}
    assert {"operation", "read"} <= set(kinds)
    claim = kinds["operation"]
    assert_r4(claim)
    user, app = claim["agent"]
    assert user == {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                         "code": "IRCP", "display": "information recipient"}]},
                    "who": {"reference": reviewer.practitioner}, "requestor": True}  # fmt: skip
    assert app["requestor"] is False and app["type"]["coding"][0]["code"] == "110153"
    assert app["who"]["display"].startswith("default.")  # the client id
    assert kinds["read"]["agent"][0]["who"] == {"reference": reviewer.practitioner}


def test_a_system_client_is_the_only_agent(client: FhirTestClient) -> None:
    client.get(f"{BASE}/Patient", params={"_count": "1"})
    searches = [e for e in events(client, subtype="search-type") if e["agent"][0]["who"].get("display")]
    assert searches and all(len(e["agent"]) == 1 and e["agent"][0]["requestor"] for e in searches)


@pytest.mark.parametrize(
    ("claim", "who"),
    [
        ("Practitioner/ada", {"reference": "Practitioner/ada"}),
        (
            "https://ehr.example.org/fhir/PractitionerRole/7",
            {"reference": "https://ehr.example.org/fhir/PractitionerRole/7"},
        ),
        ("Person/1", {"display": "fhirUser Person/1"}),  # not a type R4 AuditEvent.agent.who may reference
    ],
)
def test_the_user_agent_refers_only_to_what_r4_allows(claim: str, who: dict[str, str]) -> None:
    user, app = requestor_agents("client-1", claim, "10.0.0.5", "U")
    assert user["who"] == who and user["type"]["coding"][0]["code"] == "AGNT"
    assert app["network"] == {"address": "10.0.0.5", "type": "2"}


def test_a_legal_hold_s_event_names_the_user_too() -> None:
    flag = {"id": "f1", "subject": {"reference": "Patient/p1"}}
    event = hold_event("legal-hold", flag, "client-1", "litigation", "Practitioner/ada")
    assert event["agent"][0]["who"] == {"reference": "Practitioner/ada"} and event["agent"][0]["requestor"]
    assert event["agent"][1]["who"] == {"display": "client-1"}
