"""The admin pages over HTTP (in process, issue 18 "Admin"): only a signed-in person with the admin role opens
them (a reviewer gets a 403 page, a bearer token of any kind no page at all); every change is a form post with
the session's CSRF token and writes an AuditEvent naming the administrator; the workflow page publishes a new
version (the previous one retired), the clients page registers and disables clients in the registry the CLI
uses, the DICOM page stores the tenant's peers, the audit page lists events and says what `audit verify` says."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_server import dicom_peers
from fhir_server.workflow.library import shipped
from tests.conftest import BASE, FhirTestClient, make_client

PASSWORD = "correct horse battery"
NO_TOKEN = {"Authorization": ""}


def sign_in(client: FhirTestClient, username: str, roles: list[str]) -> str:
    """Create the user (with a Practitioner of their own), sign in; the session's CSRF token."""
    practitioner = f"p-{username}"
    body = {"resourceType": "Practitioner", "id": practitioner}
    assert client.put(f"{BASE}/Practitioner/{practitioner}", json=body).status_code == 201
    people = client.app.state.people  # type: ignore[attr-defined]
    client.portal.call(people.users.create, "default", username, practitioner, roles, PASSWORD)
    client.cookies.clear()
    page = client.get("/auth/login", headers=NO_TOKEN)
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    signed = client.post("/auth/login", data={**form, "username": username, "password": PASSWORD},
                         headers=NO_TOKEN, follow_redirects=False)  # fmt: skip
    assert signed.status_code == 303, signed.text
    return str(client.get("/auth/session", headers=NO_TOKEN).json()["csrf"])


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var") as c:
        yield c


def changes(client: FhirTestClient, setting: str) -> list[dict[str, object]]:
    """The admin changes of ``setting`` in the audit trail (read with the test's admin token)."""
    found = client.get(f"{BASE}/AuditEvent", params={"_count": "200", "_sort": "-date"}).json()
    events = [e["resource"] for e in found.get("entry") or []]
    return [e for e in events if str(e.get("outcomeDesc", "")).startswith(f"tenant setting {setting}:")]


def test_only_administrators_open_the_admin_pages(client: FhirTestClient) -> None:
    sign_in(client, "rita", ["clinician-reviewer"])
    refused = client.get("/app/admin/clients", headers=NO_TOKEN)
    assert refused.status_code == 403 and "Administrators only" in refused.text and "admin" in refused.text
    assert 'id="admin-link"' not in client.get("/app/", headers=NO_TOKEN).text
    client.cookies.clear()
    token = client.headers["Authorization"]  # the test's admin client: a token is not a session
    assert client.get("/app/admin/", headers={"Authorization": token}, follow_redirects=False).status_code == 303
    sign_in(client, "ivan", ["integration"])  # a system's role with the same scopes, given to a person
    assert client.get("/app/admin/clients", headers=NO_TOKEN).status_code == 403
    sign_in(client, "ada", ["admin"])
    home = client.get("/app/admin/", headers=NO_TOKEN)
    assert home.status_code == 200 and "content-security-policy" in home.headers
    assert 'id="admin-link"' in client.get("/app/", headers=NO_TOKEN).text


def test_clients_are_registered_and_disabled_in_the_registry(client: FhirTestClient) -> None:
    csrf = sign_in(client, "ada", ["admin"])
    forged = client.post("/app/admin/clients", data={"csrf": "x", "name": "PACS", "role": "integration"},
                         headers=NO_TOKEN)  # fmt: skip
    assert forged.status_code == 403
    bad = client.post("/app/admin/clients", data={"csrf": csrf, "name": "PACS", "role": "root"}, headers=NO_TOKEN)
    assert bad.status_code == 422 and "Not registered" in bad.text
    made = client.post("/app/admin/clients", data={"csrf": csrf, "name": "PACS", "role": "integration"},
                       headers=NO_TOKEN)  # fmt: skip
    assert made.status_code == 200, made.text
    client_id = re.search(r'id="new-client-id">([^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    assert re.search(r'id="new-secret">[^<]{20,}<', made.text)
    registry = client.app.state.clients  # type: ignore[attr-defined]
    assert client.portal.call(registry.get, client_id).active
    off = client.post(f"/app/admin/clients/{client_id}/disable", data={"csrf": csrf}, headers=NO_TOKEN,
                      follow_redirects=False)  # fmt: skip
    assert off.status_code == 303
    assert not client.portal.call(registry.get, client_id).active
    other = client.post("/app/admin/clients/other.123/disable", data={"csrf": csrf}, headers=NO_TOKEN)
    assert other.status_code == 404
    said = [str(e["outcomeDesc"]) for e in changes(client, "oauth-clients")]
    assert any(f"disabled {client_id}" in s for s in said) and any(f"registered {client_id}" in s for s in said)
    event = changes(client, "oauth-clients")[0]
    assert event["agent"][0]["who"] == {"reference": "Practitioner/p-ada", "display": "ada"}  # type: ignore[index]


def test_a_new_workflow_version_is_published_and_the_old_one_retired(client: FhirTestClient) -> None:
    csrf = sign_in(client, "ada", ["admin"])
    first = {**shipped("ai-then-signoff"), "status": "draft"}
    first.pop("id")
    published = client.post("/app/admin/workflows/publish", data={"csrf": csrf, "definition": json.dumps(first)},
                            headers=NO_TOKEN, follow_redirects=False)  # fmt: skip
    assert published.status_code == 303, published.text
    first_id = published.headers["location"].rsplit("/", 1)[1]
    view = client.get(f"/app/admin/workflows/{first_id}", headers=NO_TOKEN)
    assert view.status_code == 200 and 'id="status">active<' in view.text
    draft = re.search(r'<textarea id="definition"[^>]*>(.*?)</textarea>', view.text, re.S).group(1)  # type: ignore[union-attr]
    following = json.loads(
        draft.replace("&#34;", '"').replace("&quot;", '"').replace("&#39;", "'").replace("&amp;", "&")
    )
    assert following["version"] == "2" and following["status"] == "draft"
    again = client.post("/app/admin/workflows/publish", data={"csrf": csrf, "definition": json.dumps(following)},
                        headers=NO_TOKEN, follow_redirects=False)  # fmt: skip
    assert again.status_code == 303, again.text
    assert client.get(f"{BASE}/PlanDefinition/{first_id}").json()["status"] == "retired"
    listed = client.get("/app/admin/workflows", headers=NO_TOKEN).text
    assert listed.count("urn:dermbridge:workflow:ai-then-signoff") == 2
    broken = client.post("/app/admin/workflows/publish", data={"csrf": csrf, "definition": "{not json"},
                         headers=NO_TOKEN)  # fmt: skip
    assert broken.status_code == 422 and "not JSON" in broken.text
    nested = client.post("/app/admin/workflows/publish", data={"csrf": csrf, "definition": "[" * 5000 + "]" * 5000},
                         headers=NO_TOKEN)  # fmt: skip
    assert nested.status_code == 422 and "not JSON" in nested.text
    assert len(changes(client, "workflow")) == 2


def test_the_next_version_is_offered_only_after_a_plain_number() -> None:
    from fhir_server.reviewer_app.admin_routes import _next_version

    assert [_next_version(v) for v in ("1", "1.2", "2.0.9", "1.²", "1." + "9" * 5000, "draft", "")] == [
        "2", "1.3", "2.0.10", "", "", "", ""
    ]  # fmt: skip


def test_dicom_peers_are_stored_for_the_tenant(client: FhirTestClient) -> None:
    csrf = sign_in(client, "ada", ["admin"])
    caller = {"csrf": csrf, "ae_title": "DERMATOSCOPE", "service-echo": "on", "service-store": "on",
              "hosts": "10.0.0.0/24"}  # fmt: skip
    assert client.post("/app/admin/dicom/caller/save", data=caller, headers=NO_TOKEN,
                       follow_redirects=False).status_code == 303  # fmt: skip
    target = {"csrf": csrf, "ae_title": "VIEWER", "host": "10.0.0.9", "port": "104"}
    assert client.post("/app/admin/dicom/destination/save", data=target, headers=NO_TOKEN,
                       follow_redirects=False).status_code == 303  # fmt: skip
    store = client.portal.call(client.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
    peers = client.portal.call(dicom_peers.read, store)
    assert peers["callers"]["DERMATOSCOPE"] == {"services": ["echo", "store"], "hosts": ["10.0.0.0/24"]}
    assert peers["destinations"]["VIEWER"] == {"host": "10.0.0.9", "port": 104}
    page = client.get("/app/admin/dicom", headers=NO_TOKEN).text
    assert 'data-ae="DERMATOSCOPE"' in page and 'data-destination="VIEWER"' in page
    for wrong in ({"ae_title": "A\\B"}, {"ae_title": "X" * 17}, {"ae_title": "V", "port": "70000"},
                  {"ae_title": "V", "host": "a/b"}):  # fmt: skip
        answer = client.post("/app/admin/dicom/destination/save", data={**target, **wrong}, headers=NO_TOKEN)
        assert answer.status_code == 422 and "Not changed" in answer.text, wrong
    assert len(changes(client, "dicom-peers")) == 2
    wide = ",".join(f"2001:db8:{n:x}:1111:2222:3333:4444:5500/120" for n in range(32))  # the most hosts allowed
    answers = [
        client.post(
            "/app/admin/dicom/caller/save",
            data={**caller, "ae_title": f"DEVICE{n}", "hosts": wide},
            headers=NO_TOKEN,
            follow_redirects=False,
        ).status_code
        for n in range(60)
    ]
    assert 500 not in answers and answers[-1] == 422, answers  # the stored setting's size limit, said


def test_the_audit_trail_is_listed_filtered_and_verified(client: FhirTestClient) -> None:
    sign_in(client, "ada", ["admin"])
    page = client.get("/app/admin/audit", headers=NO_TOKEN)
    assert page.status_code == 200 and page.text.count("<tr>") >= 2  # the header and at least one event
    trail = client.app.state.audit  # type: ignore[attr-defined]
    store = client.portal.call(client.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
    client.portal.call(trail.flush, store)
    client.portal.call(trail.checkpoint, store)  # as `dermbridge audit checkpoint`
    checked = client.get("/app/admin/audit", params={"check": "1"}, headers=NO_TOKEN)
    assert re.search(r'id="verified">audit trail of default: \d+ events.*intact', checked.text)
    logins = client.get("/app/admin/audit", params={"type": "110114"}, headers=NO_TOKEN)  # User Authentication
    assert logins.status_code == 200 and "User Authentication" in logins.text and "Security Alert" not in logins.text
    future = client.get("/app/admin/audit", params={"since": "2999-01-01"}, headers=NO_TOKEN)
    assert future.status_code == 200 and future.text.count("<tr>") == 1
