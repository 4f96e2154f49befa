"""The whole SMART App Launch code flow over real sockets: a ``dermbridge serve`` process driven by httpx
(authorize -> login form -> consent -> code -> token with PKCE -> FHIR read), and what must be refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pyotp
import pytest

from tests.fhir_server.people.oidc_provider import Provider, provider_env, running_provider
from tests.server import Server, running_server

REDIRECT = "http://127.0.0.1:9/callback"
PASSWORD = "correct horse battery"


def dermbridge(data_dir: Path, *args: str, stdin: str = "") -> dict[str, object]:
    command = [sys.executable, "-m", "dermbridge", *args, "--data-dir", str(data_dir)]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    return json.loads(out) if out.startswith("{") else {}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("people") / "var"
    with running_provider() as provider, running_server(data_dir, env=provider_env(provider)) as server:
        for pid in ("p1", "p2", "p3", "p4", "p5"):
            put = server.http.put(f"{server.base}/Practitioner/{pid}", json={"resourceType": "Practitioner", "id": pid})
            assert put.status_code in (200, 201), put.text
        for name, pid in (
            ("alice", "p1"),
            ("bob", "p2"),
            ("carol", "p3"),
            ("dave", "p4"),
            ("frank", "p1"),
            ("grace", "p2"),
            ("henry", "p3"),
        ):
            dermbridge(
                data_dir,
                "user",
                "create",
                "--username",
                name,
                "--practitioner",
                pid,
                "--password-stdin",
                stdin=PASSWORD + "\n",
            )
        dermbridge(
            data_dir,
            "user",
            "create",
            "--username",
            "erin",
            "--practitioner",
            "p5",
            "--no-password",
            "--oidc-subject",
            "hospital-user-1",
        )
        app = dermbridge(
            data_dir,
            "client",
            "create",
            "--name",
            "Third party app",
            "--role",
            "clinician-reviewer",
            "--no-secret",
            "--redirect-uri",
            REDIRECT,
        )
        own = dermbridge(
            data_dir,
            "client",
            "create",
            "--name",
            "Hospital app",
            "--role",
            "clinician-reviewer",
            "--no-secret",
            "--redirect-uri",
            REDIRECT,
            "--first-party",
        )
        server.provider = provider  # type: ignore[attr-defined]
        yield server, data_dir, {"app": str(app["client_id"]), "own": str(own["client_id"])}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(server: Server, client_id: str, challenge: str, scope: str, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st-1",
        "aud": server.base,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return f"{server.root}/auth/authorize?{urlencode(params)}"


def hidden(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html.replace("&amp;", "&")))


def sign_in(browser: httpx.Client, root: str, location: str, username: str, code: str = "") -> httpx.Response:
    page = browser.get(location if location.startswith("http") else root + location)
    assert page.status_code == 200
    assert (
        "Content-Security-Policy" in page.headers
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )
    assert '<label for="username">' in page.text and '<label for="password">' in page.text
    form = {**hidden(page.text), "username": username, "password": PASSWORD, "code": code}
    return browser.post(f"{root}/auth/login", data=form)


def code_of(response: httpx.Response) -> str:
    assert response.status_code in (302, 303), response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


def exchange(server: Server, client_id: str, code: str, verifier: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    return httpx.post(f"{server.root}/auth/token", data=form)


def test_code_flow_with_consent_pkce_and_a_fhir_read(world: tuple[Server, Path, dict[str, str]]) -> None:
    server, _, clients = world
    verifier, challenge = pkce()
    scope = "openid fhirUser offline_access user/Practitioner.rs user/Patient.cruds"
    with httpx.Client() as browser:
        start = browser.get(authorize_url(server, clients["app"], challenge, scope))
        assert start.status_code == 303 and start.headers["location"].startswith("/auth/login?")
        signed = sign_in(browser, server.root, start.headers["location"], "alice")
        assert signed.status_code == 303, signed.text
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
        consent = browser.get(server.root + signed.headers["location"])
        assert consent.status_code == 200 and "Third party app" in consent.text
        assert "user/Patient.rs" in consent.text  # narrowed to what a clinician reviewer may do
        assert "127.0.0.1:9" in consent.headers["content-security-policy"]  # the form may end at the app
        fields = hidden(consent.text)
        forged = browser.post(f"{server.root}/auth/authorize", data={**fields, "csrf": "forged", "decision": "allow"})
        assert forged.status_code == 403
        code = code_of(browser.post(f"{server.root}/auth/authorize", data={**fields, "decision": "allow"}))
    token = exchange(server, clients["app"], code, verifier)
    assert token.status_code == 200, token.text
    body = token.json()
    assert "user/Patient.rs" in body["scope"] and "user/Patient.cruds" not in body["scope"]
    # SMART App Launch 2.x: the ID token is RS256, its key found in the JWKS by kid, and so announced
    assert jwt.get_unverified_header(body["id_token"])["alg"] == "RS256"
    key = jwt.PyJWKClient(f"{server.root}/.well-known/jwks.json").get_signing_key_from_jwt(body["id_token"]).key
    id_token = jwt.decode(body["id_token"], key, algorithms=["RS256"], audience=clients["app"], issuer=server.root)
    smart = httpx.get(f"{server.base}/.well-known/smart-configuration").json()
    assert "RS256" in smart["id_token_signing_alg_values_supported"]
    assert id_token["fhirUser"] == f"{server.base}/Practitioner/p1"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["fhirUser"] == "Practitioner/p1"
    read = httpx.get(f"{server.base}/Practitioner/p1", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert read.status_code == 200 and read.json()["id"] == "p1"
    write = httpx.put(
        f"{server.base}/Practitioner/p1",
        json={"resourceType": "Practitioner", "id": "p1"},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert write.status_code == 403  # the one access layer decides, with the user's scopes

    reused = exchange(server, clients["app"], code, verifier)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    refreshed = httpx.post(
        f"{server.root}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": clients["app"]},
    )
    assert refreshed.status_code == 400, "a reused code ends the refresh token its first use gave"


def test_refresh_tokens_rotate(world: tuple[Server, Path, dict[str, str]]) -> None:
    server, _, clients = world
    verifier, challenge = pkce()
    with httpx.Client() as browser:
        start = browser.get(authorize_url(server, clients["own"], challenge, "offline_access user/Patient.rs"))
        signed = sign_in(browser, server.root, start.headers["location"], "alice")
        code = code_of(browser.get(server.root + signed.headers["location"]))  # first party: no consent
    first = exchange(server, clients["own"], code, verifier).json()

    def refresh(token: str) -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": clients["own"]}
        return httpx.post(f"{server.root}/auth/token", data=form)

    stolen = httpx.post(  # another client presents it: refused, and the owner's token is not spent
        f"{server.root}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": clients["app"]},
    )
    assert stolen.status_code in (400, 401)
    second = refresh(first["refresh_token"])
    assert second.status_code == 200 and second.json()["refresh_token"] != first["refresh_token"]
    third = refresh(second.json()["refresh_token"])
    assert third.status_code == 200
    # the used token replayed: a thief and the owner both hold the chain; the whole grant ends (RFC 9700)
    assert refresh(first["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(third.json()["refresh_token"]).json()["error"] == "invalid_grant"


def test_wrong_pkce_verifier_and_unregistered_redirect_are_refused(world: tuple[Server, Path, dict[str, str]]) -> None:
    server, _, clients = world
    _, challenge = pkce()
    with httpx.Client() as browser:
        start = browser.get(authorize_url(server, clients["own"], challenge, "user/Patient.rs"))
        signed = sign_in(browser, server.root, start.headers["location"], "alice")
        code = code_of(browser.get(server.root + signed.headers["location"]))
        other_verifier, _ = pkce()
        wrong = exchange(server, clients["own"], code, other_verifier)
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        elsewhere = browser.get(
            authorize_url(server, clients["own"], challenge, "user/Patient.rs").replace("127.0.0.1%3A9", "evil.example")
        )
        assert elsewhere.status_code == 400 and "location" not in elsewhere.headers
        twice = browser.get(authorize_url(server, clients["own"], challenge, "user/Patient.rs") + "&redirect_uri=x")
        assert twice.status_code == 400 and "location" not in twice.headers
        plain = browser.get(
            authorize_url(server, clients["own"], challenge, "user/Patient.rs", code_challenge_method="plain")
        )
        assert plain.status_code == 302
        assert parse_qs(urlsplit(plain.headers["location"]).query)["error"] == ["invalid_request"]


def test_ehr_launch_gives_the_patient(world: tuple[Server, Path, dict[str, str]]) -> None:
    """Pentest 4 F4: the token of an EHR launch carries its patient and reads that patient only; the launch
    exists only for an existing Patient, is bound to the app it names and opens it once."""
    server, _, clients = world
    for pid in ("pat1", "pat2"):
        put = server.http.put(f"{server.base}/Patient/{pid}", json={"resourceType": "Patient", "id": pid})
        assert put.status_code in (200, 201), put.text
    launch_url = f"{server.root}/auth/launch"
    nobody = httpx.post(launch_url, data={"tenant": "default", "patient": "no-such"}, headers=server.headers)
    assert nobody.status_code == 400
    form = {"tenant": "default", "patient": "pat1", "client_id": clients["own"]}
    launch = httpx.post(launch_url, data=form, headers=server.headers).json()["launch"]
    verifier, challenge = pkce()
    scope = "launch patient/Patient.rs openid fhirUser"
    with httpx.Client() as browser:
        other_app = browser.get(authorize_url(server, clients["app"], challenge, scope, launch=launch))
        assert other_app.status_code == 302 and "error=invalid_request" in other_app.headers["location"]
        start = browser.get(authorize_url(server, clients["own"], challenge, scope, launch=launch))
        signed = sign_in(browser, server.root, start.headers["location"], "alice")
        code = code_of(browser.get(server.root + signed.headers["location"]))
        again = browser.get(authorize_url(server, clients["own"], challenge, scope, launch=launch))
        assert again.status_code == 302 and "error=invalid_request" in again.headers["location"], "used once"
    body = exchange(server, clients["own"], code, verifier).json()
    assert body["patient"] == "pat1" and "patient/Patient.rs" in body["scope"]
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["patient"] == "pat1"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(f"{server.base}/Patient/pat1", headers=bearer).status_code == 200
    assert httpx.get(f"{server.base}/Patient/pat2", headers=bearer).status_code in (403, 404)


def test_lockout_totp_disabled_user_and_sign_out(world: tuple[Server, Path, dict[str, str]]) -> None:
    server, data_dir, _ = world
    with httpx.Client() as browser:
        page = browser.get(f"{server.root}/auth/login")
        for _ in range(10):
            wrong = browser.post(
                f"{server.root}/auth/login",
                data={**hidden(page.text), "username": "bob", "password": "not the password"},
            )
            assert wrong.status_code == 401
        locked = browser.post(
            f"{server.root}/auth/login", data={**hidden(page.text), "username": "bob", "password": PASSWORD}
        )
        assert locked.status_code == 429, "locked from this address, even with the right password"
    totp = dermbridge(data_dir, "user", "totp", "--username", "carol")
    with httpx.Client() as browser:
        assert sign_in(browser, server.root, "/auth/login", "carol").status_code == 401
        now = pyotp.TOTP(str(totp["totp_secret"])).now()
        assert sign_in(browser, server.root, "/auth/login", "carol", now).status_code == 303
        assert browser.get(f"{server.root}/auth/session").json()["fhirUser"] == "Practitioner/p3"
    verifier, challenge = pkce()
    with httpx.Client() as browser:
        start = browser.get(authorize_url(server, world[2]["own"], challenge, "user/Practitioner.rs"))
        signed = sign_in(browser, server.root, start.headers["location"], "dave")
        assert signed.status_code == 303
        assert browser.get(f"{server.root}/auth/session").status_code == 200
        code = code_of(browser.get(server.root + signed.headers["location"]))
        token = exchange(server, world[2]["own"], code, verifier).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{server.base}/Practitioner/p4", headers=bearer).status_code == 200
        dermbridge(data_dir, "user", "disable", "--username", "dave")
        assert httpx.get(f"{server.base}/Practitioner/p4", headers=bearer).status_code == 401, "its token too"
        assert browser.get(f"{server.root}/auth/session").status_code == 401
        assert sign_in(browser, server.root, "/auth/login", "dave").status_code == 401
    with httpx.Client() as browser:
        assert sign_in(browser, server.root, "/auth/login", "alice").status_code == 303
        session = browser.get(f"{server.root}/auth/session").json()
        assert session["username"] == "alice"
        no_csrf = browser.post(f"{server.root}/auth/logout", data={"csrf": "nope"})
        assert no_csrf.status_code == 403
        out = browser.post(f"{server.root}/auth/logout", data={"csrf": session["csrf"]})
        assert out.status_code == 303
        assert browser.get(f"{server.root}/auth/session").status_code == 401
    events = server.http.get(f"{server.base}/AuditEvent", params={"_count": "500"}).json()
    logins = [
        e["resource"] for e in events.get("entry", []) if e["resource"].get("subtype", [{}])[0].get("code") == "110122"
    ]
    assert any(e["outcome"] == "4" and e["agent"][0]["who"].get("reference") == "Practitioner/p2" for e in logins)
    assert any(e["outcome"] == "0" and e["agent"][0]["who"].get("reference") == "Practitioner/p3" for e in logins)
    logouts = [
        e["resource"] for e in events.get("entry", []) if e["resource"].get("subtype", [{}])[0].get("code") == "110123"
    ]
    assert logouts and logouts[0]["agent"][0]["who"]["reference"] == "Practitioner/p1"
    assert PASSWORD not in json.dumps(events)


def test_sign_in_at_the_hospital_openid_provider(world: tuple[Server, Path, dict[str, str]]) -> None:
    server, _, clients = world
    provider: Provider = server.provider  # type: ignore[attr-defined]
    verifier, challenge = pkce()
    with httpx.Client() as browser:
        start = browser.get(authorize_url(server, clients["own"], challenge, "user/Patient.rs openid fhirUser"))
        page = browser.get(server.root + start.headers["location"])
        link = re.search(r'href="(/auth/oidc/login\?[^"]+)"', page.text)
        assert link is not None, "the sign-in page offers the hospital account"
        to_provider = browser.get(server.root + link.group(1).replace("&amp;", "&"))
        assert to_provider.status_code == 303 and to_provider.headers["location"].startswith(provider.issuer)
        back = browser.get(to_provider.headers["location"])  # the provider signs the person in and sends them back
        assert back.status_code == 302
        signed = browser.get(back.headers["location"])
        assert signed.status_code == 303, signed.text
        assert browser.get(f"{server.root}/auth/session").json()["fhirUser"] == "Practitioner/p5"
        code = code_of(browser.get(server.root + signed.headers["location"]))
        replayed = browser.get(back.headers["location"])  # the same state and code again
        assert replayed.status_code == 400
    token = exchange(server, clients["own"], code, verifier).json()
    assert jwt.decode(token["access_token"], options={"verify_signature": False})["fhirUser"] == "Practitioner/p5"

    provider.subject = "someone-not-registered"
    with httpx.Client() as browser:
        to_provider = browser.get(f"{server.root}/auth/oidc/login?tenant=default")
        back = browser.get(to_provider.headers["location"])
        refused = browser.get(back.headers["location"])
        assert refused.status_code == 403
        assert browser.get(f"{server.root}/auth/session").status_code == 401


async def _concurrent_sign_ins(root: str, forms: list[dict[str, str]]) -> list[int]:
    """Each form posted at once by its own browser (its own CSRF cookie): the statuses, in order."""
    browsers = [httpx.AsyncClient(timeout=120) for _ in forms]
    try:
        pages = [await b.get(f"{root}/auth/login") for b in browsers]
        posts = [
            b.post(f"{root}/auth/login", data={**hidden(page.text), **form})
            for b, page, form in zip(browsers, pages, forms, strict=True)
        ]
        return [r.status_code for r in await asyncio.gather(*posts)]
    finally:
        for browser in browsers:
            await browser.aclose()


def test_parallel_guesses_meet_the_lock(world: tuple[Server, Path, dict[str, str]]) -> None:
    """Pentest 4 F1: a burst of parallel wrong passwords is counted before any is checked, so at most the
    allowed number of passwords is evaluated and the right one afterwards does not sign in."""
    server, _, _ = world
    wrong = [{"username": "frank", "password": f"guess number {n}"} for n in range(24)]
    statuses = asyncio.run(_concurrent_sign_ins(server.root, wrong))
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= 10, f"{statuses.count(401)} passwords checked in one burst: {statuses}"
    right = asyncio.run(_concurrent_sign_ins(server.root, [{"username": "frank", "password": PASSWORD}]))
    assert right[0] in (401, 429), "the lock holds after a parallel burst"


def test_one_time_code_is_used_once_under_concurrency(world: tuple[Server, Path, dict[str, str]]) -> None:
    """Pentest 4 F9: the same TOTP code in five parallel sign-ins opens one session (RFC 6238 §5.2)."""
    server, data_dir, _ = world
    secret = str(dermbridge(data_dir, "user", "totp", "--username", "grace")["totp_secret"])
    code = pyotp.TOTP(secret).now()
    forms = [{"username": "grace", "password": PASSWORD, "code": code} for _ in range(5)]
    statuses = asyncio.run(_concurrent_sign_ins(server.root, forms))
    assert statuses.count(303) == 1 and statuses.count(401) == 4, statuses


def test_a_lock_from_one_address_does_not_lock_the_user_out_elsewhere(
    world: tuple[Server, Path, dict[str, str]],
) -> None:
    """Pentest 4 F3: failures from 127.0.0.2 throttle that address only; the user still signs in from
    127.0.0.1, and a locked name and an unknown name get the same page."""
    server, _, _ = world
    attacker = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with attacker, httpx.Client() as user:
        page = attacker.get(f"{server.root}/auth/login")
        answers = []
        for name in ["henry"] * 10 + ["nobody-here"] * 10:
            form = {**hidden(page.text), "username": name, "password": "not the password"}
            answers.append(attacker.post(f"{server.root}/auth/login", data=form))
        assert [a.status_code for a in answers] == [401] * 20
        assert answers[9].text == answers[19].text, "a locked-out name and an unknown name look alike"
        again = {**hidden(page.text), "username": "henry", "password": PASSWORD}
        assert attacker.post(f"{server.root}/auth/login", data=again).status_code == 429
        assert sign_in(user, server.root, "/auth/login", "henry").status_code == 303


def test_a_provider_callback_opened_in_another_browser_signs_nobody_in(
    world: tuple[Server, Path, dict[str, str]],
) -> None:
    """Pentest 4 F2: the state of a provider sign-in is bound to the browser that started it (OpenID Connect
    Core §3.1.2.1): the attacker's callback URL, opened by a victim's browser, gets 400 and no session."""
    server, _, _ = world
    provider: Provider = server.provider  # type: ignore[attr-defined]
    provider.subject = "hospital-user-1"
    with httpx.Client() as attacker, httpx.Client() as victim:
        to_provider = attacker.get(f"{server.root}/auth/oidc/login?tenant=default")
        assert to_provider.status_code == 303
        binding = to_provider.headers["set-cookie"]
        assert "dermbridge_oidc_state=" in binding and "HttpOnly" in binding and "samesite=lax" in binding.lower()
        back = attacker.get(to_provider.headers["location"])
        assert back.status_code == 302
        swapped = victim.get(back.headers["location"])
        assert swapped.status_code == 400 and "set-cookie" not in swapped.headers
        assert victim.get(f"{server.root}/auth/session").status_code == 401


def _stored_records(data_dir: Path) -> int:
    total = 0
    for path in data_dir.rglob("*.sqlite"):
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'record'").fetchone():
                total += db.execute("SELECT count(*) FROM record").fetchone()[0]
    return total


def test_starting_provider_sign_ins_stores_nothing(world: tuple[Server, Path, dict[str, str]]) -> None:
    """Pentest 4 F5: ``GET /auth/oidc/login`` needs no authentication, so the pending sign-in lives in a signed
    cookie, not the database; a forged or edited cookie is refused."""
    server, data_dir, _ = world
    before = _stored_records(data_dir)
    with httpx.Client() as stranger:
        for _ in range(50):
            assert stranger.get(f"{server.root}/auth/oidc/login?tenant=default").status_code == 303
        back = stranger.get(stranger.get(f"{server.root}/auth/oidc/login").headers["location"])
        pending = stranger.cookies["dermbridge_oidc_state"]
        body, _, mac = pending.partition(".")
        edited = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        edited["next"] = "/elsewhere"
        forged = f"{base64.urlsafe_b64encode(json.dumps(edited).encode()).decode().rstrip('=')}.{mac}"
        refused = httpx.get(back.headers["location"], headers={"Cookie": f"dermbridge_oidc_state={forged}"})
        assert refused.status_code == 400 and "set-cookie" not in refused.headers
    assert _stored_records(data_dir) == before
