"""A user signs a report off in their own name (pentest 3, finding 7): a token whose ``fhirUser`` is a
Practitioner cannot make a DiagnosticReport final naming another clinician in ``resultsInterpreter``; a
system client (an EHR interface, no ``fhirUser``) still signs for whom it names."""

from __future__ import annotations

import functools

from tests.conftest import BASE, FhirTestClient
from tests.factories import diagnostic_report, patient


def user_token(client: FhirTestClient, fhir_user: str) -> str:
    clients = client.app.state.clients  # type: ignore[attr-defined]
    made, secret = client.portal.call(  # type: ignore[union-attr]
        functools.partial(clients.create, "default", "Dr Ada", ("clinician-reviewer",), fhir_user=fhir_user)
    )
    form = {"grant_type": "client_credentials", "client_id": made.client_id, "client_secret": secret}
    answer = client.post("/auth/token", data=form, headers={"Authorization": ""})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_a_user_signs_a_report_only_in_their_own_name(client: FhirTestClient) -> None:
    ada = client.post(f"{BASE}/Practitioner", json={"resourceType": "Practitioner"}).json()["id"]
    ben = client.post(f"{BASE}/Practitioner", json={"resourceType": "Practitioner"}).json()["id"]
    subject = client.post(f"{BASE}/Patient", json=patient(family="Signed")).json()["id"]
    report = client.post(f"{BASE}/DiagnosticReport", json=diagnostic_report(f"Patient/{subject}")).json()
    headers = {"Authorization": f"Bearer {user_token(client, f'Practitioner/{ada}')}"}
    as_ben = {**report, "status": "final", "resultsInterpreter": [{"reference": f"Practitioner/{ben}"}]}
    refused = client.put(f"{BASE}/DiagnosticReport/{report['id']}", json=as_ben, headers=headers)
    assert refused.status_code == 403, refused.text
    assert f"Practitioner/{ada}" in refused.json()["issue"][0]["diagnostics"]
    as_ada = {**report, "status": "final", "resultsInterpreter": [{"reference": f"Practitioner/{ada}"}]}
    assert client.put(f"{BASE}/DiagnosticReport/{report['id']}", json=as_ada, headers=headers).status_code == 200
    # the system client of the fixture (no fhirUser) signs for the clinician it names
    amended = {**client.get(f"{BASE}/DiagnosticReport/{report['id']}").json(), "status": "amended",
               "resultsInterpreter": [{"reference": f"Practitioner/{ben}"}]}  # fmt: skip
    assert client.put(f"{BASE}/DiagnosticReport/{report['id']}", json=amended).status_code == 200
