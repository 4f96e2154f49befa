"""The API server-rendered pages use (``fhir_server.people.signed_in``): who is signed in, and FHIR as them
through the same access layer and audit trail as the REST API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from fhir_server.people.signed_in import SignedInUser, csrf_ok, fhir_as
from tests.conftest import BASE, make_client

PASSWORD = "correct horse battery"


def _page_routes(app: Any) -> None:
    @app.get("/test-pages/practitioner/{pid}")
    async def read(request: Request, me: SignedInUser, pid: str) -> Response:
        answer = await fhir_as(request, me, "GET", ["Practitioner", pid])
        return JSONResponse(answer.body, answer.status)

    @app.post("/test-pages/practitioner/{pid}")
    async def write(request: Request, me: SignedInUser, pid: str) -> Response:
        form = await request.form()
        if not csrf_ok(me, str(form.get("csrf") or "")):
            return JSONResponse({"error": "csrf"}, 403)
        answer = await fhir_as(
            request, me, "PUT", ["Practitioner", pid], body={"resourceType": "Practitioner", "id": pid}
        )
        return JSONResponse(answer.body, answer.status)


def test_pages_act_as_the_signed_in_user_through_the_access_policy(tmp_path: Path) -> None:
    client = make_client(tmp_path / "var")
    _page_routes(client.app)
    with client as c:
        assert c.put(f"{BASE}/Practitioner/p1", json={"resourceType": "Practitioner", "id": "p1"}).status_code == 201
        people = c.app.state.people  # type: ignore[attr-defined]
        c.portal.call(people.users.create, "default", "alice", "p1", ["clinician-reviewer"], PASSWORD)
        anonymous = c.get("/test-pages/practitioner/p1", headers={"Authorization": ""}, follow_redirects=False)
        assert anonymous.status_code == 303
        assert anonymous.headers["location"].startswith("/auth/login?next=%2Ftest-pages%2Fpractitioner%2Fp1")
        page = c.get("/auth/login", headers={"Authorization": ""})
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        signed = c.post(
            "/auth/login",
            data={**form, "username": "alice", "password": PASSWORD},
            headers={"Authorization": ""},
            follow_redirects=False,
        )
        assert signed.status_code == 303
        read = c.get("/test-pages/practitioner/p1", headers={"Authorization": ""})
        assert read.status_code == 200 and read.json()["id"] == "p1"
        csrf = c.get("/auth/session", headers={"Authorization": ""}).json()["csrf"]
        refused = c.post("/test-pages/practitioner/p1", data={"csrf": "forged"}, headers={"Authorization": ""})
        assert refused.status_code == 403 and refused.json() == {"error": "csrf"}
        write = c.post("/test-pages/practitioner/p1", data={"csrf": csrf}, headers={"Authorization": ""})
        assert write.status_code == 403  # a clinician reviewer has no Practitioner write scope: the policy says no
        assert write.json()["resourceType"] == "OperationOutcome"
        events = c.get(f"{BASE}/AuditEvent", params={"_count": "200"}).json()["entry"]
        rest = [e["resource"] for e in events if e["resource"]["type"].get("code") == "rest"]
        by_alice = [e for e in rest if any(a.get("who", {}).get("reference") == "Practitioner/p1" for a in e["agent"])]
        assert {e.get("subtype", [{}])[0].get("code") for e in by_alice} >= {"read", "update"}
        assert any(e["outcome"] != "0" for e in by_alice), "the refused write is audited too"


def test_a_spray_of_names_from_one_address_is_slowed(tmp_path: Path) -> None:
    with make_client(tmp_path / "var") as c:
        people = c.app.state.people  # type: ignore[attr-defined]
        c.portal.call(people.users.create, "default", "alice", "p1", ["clinician-reviewer"], PASSWORD)
        page = c.get("/auth/login", headers={"Authorization": ""})
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        for n in range(50):  # ADDRESS_LIMIT of fhir_server.security.lockout
            guess = c.post(
                "/auth/login",
                data={**form, "username": f"user{n}", "password": "a guessed password"},
                headers={"Authorization": ""},
                follow_redirects=False,
            )
            assert guess.status_code == 401
        right = c.post(
            "/auth/login",
            data={**form, "username": "alice", "password": PASSWORD},
            headers={"Authorization": ""},
            follow_redirects=False,
        )
        assert right.status_code == 429 and int(right.headers["retry-after"]) > 0


def _sign_in_refusals(c: Any) -> list[dict[str, Any]]:
    bundle = c.get(f"{BASE}/AuditEvent", params={"_count": "1000", "outcome": "4"}).json()
    events = [e["resource"] for e in bundle.get("entry", [])]
    return [e for e in events if e["source"]["observer"]["display"] == "DermBridge sign-in"]


def _counted(events: list[dict[str, Any]]) -> int:
    details = [[d for e in event.get("entity", []) for d in e.get("detail", [])] for event in events]
    return sum(int(found[0]["valueString"]) if found else 1 for found in details)


def test_a_flood_of_refused_sign_ins_is_audited_in_aggregate(tmp_path: Path) -> None:
    """pentest-4 F5: a stranger cannot append to the trail at request rate through ``POST /auth/login``."""
    with make_client(tmp_path / "var") as c:
        people = c.app.state.people  # type: ignore[attr-defined]
        c.portal.call(people.users.create, "default", "alice", "p1", ["clinician-reviewer"], PASSWORD)
        page = c.get("/auth/login", headers={"Authorization": ""})
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        statuses = set()
        for _ in range(200):
            guess = {**form, "username": "alice", "password": "a guessed password"}
            statuses.add(c.post("/auth/login", data=guess, headers={"Authorization": ""}).status_code)
        assert statuses == {401, 429}
        assert len(_sign_in_refusals(c)) <= 2  # the first 401 and the first 429; the rest are counted
        c.portal.call(c.app.state.auth_http.record_summaries, True)  # type: ignore[attr-defined]
        events = _sign_in_refusals(c)
        assert len(events) <= 4 and _counted(events) == 200
        summary = next(e for e in events if "more refused sign-ins" in e.get("outcomeDesc", ""))
        assert summary["period"]["start"] <= summary["period"]["end"] and summary["agent"][0]["altId"] == "alice"
