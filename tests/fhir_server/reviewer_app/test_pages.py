"""The reviewer app's pages over HTTP (in process): a session is needed, forms need the session's CSRF token,
every page carries the content security policy and no inline script, assets come from a fixed list, and the
session cookie opens DICOMweb reads (the pages' images) but never a write."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import BASE, FhirTestClient, make_client

PASSWORD = "correct horse battery"
NO_TOKEN = {"Authorization": ""}


def _signed_in(tmp_path: Path) -> FhirTestClient:
    client = make_client(tmp_path / "var")
    client.__enter__()
    assert client.put(f"{BASE}/Practitioner/p1", json={"resourceType": "Practitioner", "id": "p1"}).status_code == 201
    people = client.app.state.people  # type: ignore[attr-defined]
    client.portal.call(people.users.create, "default", "alice", "p1", ["clinician-reviewer"], PASSWORD)
    page = client.get("/auth/login", headers=NO_TOKEN)
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    signed = client.post(
        "/auth/login",
        data={**form, "username": "alice", "password": PASSWORD},
        headers=NO_TOKEN,
        follow_redirects=False,
    )
    assert signed.status_code == 303
    return client


def test_pages_need_a_session_carry_the_csp_and_refuse_forged_forms(tmp_path: Path) -> None:
    anonymous = make_client(tmp_path / "anon")
    with anonymous:
        away = anonymous.get("/app/", headers=NO_TOKEN, follow_redirects=False)
        assert away.status_code == 303 and away.headers["location"].startswith("/auth/login?next=%2Fapp%2F")
    client = _signed_in(tmp_path)
    try:
        worklist = client.get("/app/", headers=NO_TOKEN)
        assert worklist.status_code == 200, worklist.text
        csp = worklist.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert re.search(r"<script(?![^>]*\bsrc=)", worklist.text) is None  # no inline script
        assert "No case is waiting for you." in worklist.text  # no eligible role: an empty queue
        forged = client.post("/app/cases/t1/claim", data={"csrf": "forged"}, headers=NO_TOKEN)
        assert forged.status_code == 403 and "CSRF" in forged.text
        csrf = client.get("/auth/session", headers=NO_TOKEN).json()["csrf"]
        missing = client.post("/app/cases/nope/claim", data={"csrf": csrf}, headers=NO_TOKEN)
        assert missing.status_code == 404 and 'role="alert"' in missing.text  # the outcome's words, in a page
        plain = {"resourceType": "Task", "id": "t2", "status": "requested", "intent": "order"}
        assert client.put(f"{BASE}/Task/t2", json=plain).status_code == 201
        not_a_case = client.get("/app/cases/t2", headers=NO_TOKEN)
        assert not_a_case.status_code == 404 and "is not the review of a case" in not_a_case.text
        assert client.get("/app/static/app.js", headers=NO_TOKEN).headers["content-type"].startswith("text/javascript")
        assert client.get("/app/static/..%2Frouting.py", headers=NO_TOKEN).status_code == 404
    finally:
        client.__exit__(None, None, None)


def test_the_session_cookie_reads_dicomweb_but_never_writes(tmp_path: Path) -> None:
    client = _signed_in(tmp_path)
    try:
        assert client.get("/dicomweb/default/studies", headers=NO_TOKEN).status_code in (200, 204)
        stow = client.post(
            "/dicomweb/default/studies", content=b"", headers={**NO_TOKEN, "Content-Type": "application/dicom"}
        )
        assert stow.status_code == 401  # a write needs a token: a cookie a browser sends by itself is not enough
        assert client.get("/dicomweb/other/studies", headers=NO_TOKEN).status_code in (401, 404)
    finally:
        client.__exit__(None, None, None)
