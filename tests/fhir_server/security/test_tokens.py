"""OAuth2 at the edge: the token endpoint, bearer checks, and every refusal answered and audited."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm

from fhir_server.security.lockout import Lockout
from fhir_server.security.tokens import load_token_signer
from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import patient

TOKEN_URL = "http://testserver/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def anonymous(tmp_path: Path) -> Any:
    with make_client(tmp_path / "var", roles=()) as c:
        yield c


def new_client(c: FhirTestClient, roles: tuple[str, ...] = ("admin",), tenant: str = "default", **kw: Any) -> Any:
    return c.portal.call(lambda: c.app.state.clients.create(tenant, "t", roles, **kw))  # type: ignore[attr-defined]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_subtypes(c: FhirTestClient) -> list[tuple[str, str, str]]:
    admin = c.token()
    bundle = c.get(f"{BASE}/AuditEvent", params={"_count": "500"}, headers=bearer(admin)).json()
    events = [e["resource"] for e in bundle.get("entry", [])]
    return [(e["subtype"][0]["code"], e["outcome"], e.get("outcomeDesc", "")) for e in events]


def test_no_token_is_401_with_a_challenge_and_is_audited(anonymous: FhirTestClient) -> None:
    response = anonymous.get(f"{BASE}/Patient")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["issue"][0]["code"] == "login"
    assert anonymous.get(f"{BASE}/metadata").status_code == 200  # the CapabilityStatement is public
    assert ("search-type", "4", "HTTP 401") in audit_subtypes(anonymous)


def test_discovery_documents(anonymous: FhirTestClient) -> None:
    smart = anonymous.get(f"{BASE}/.well-known/smart-configuration").json()
    assert smart["token_endpoint"].endswith("/auth/token")
    assert "private_key_jwt" in smart["token_endpoint_auth_methods_supported"]
    assert "permission-v2" in smart["capabilities"]
    # tenant names are not secret (README "Tenants"): the public discovery documents answer 404 for an
    # unknown tenant, while any other URL answers 401 without a token, before the tenant is looked up
    assert anonymous.get("/fhir/nowhere/.well-known/smart-configuration").status_code == 404
    assert anonymous.get("/fhir/nowhere/metadata").status_code == 404
    assert anonymous.get(f"{BASE}/metadata").status_code == 200
    assert anonymous.get("/fhir/nowhere/Patient").status_code == anonymous.get(f"{BASE}/Patient").status_code == 401
    keys = anonymous.get("/.well-known/jwks.json").json()["keys"]
    assert keys[0]["kty"] == "OKP" and keys[0]["crv"] == "Ed25519" and "d" not in keys[0]
    assert keys[1]["kty"] == "RSA" and keys[1]["alg"] == "RS256" and not {"d", "p", "q"} & set(keys[1])  # ID tokens


def test_client_secret_basic_and_post(anonymous: FhirTestClient) -> None:
    client, secret = new_client(anonymous, ("clinician-reviewer",))
    basic = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    issued = anonymous.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "user/Patient.rs user/Observation.cruds system/*.cruds"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == "user/Patient.rs user/Observation.cruds"  # system/* is not the role's to give
    assert issued.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["tenant"] == "default" and claims["client_id"] == client.client_id
    form = {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret}
    posted = anonymous.post("/auth/token", data={**form, "scope": "patient/Observation.read"})
    assert posted.status_code == 400 and posted.json()["error"] == "invalid_scope"
    assert anonymous.get(f"{BASE}/Patient", headers=bearer(body["access_token"])).status_code == 200


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "password", "username": "a", "password": "b"}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "default.nope", "client_secret": "x"}, 401,
         "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "nowhere.x", "client_secret": "x"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_assertion": "not-a-jwt",
          "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, 400, "invalid_client"),
    ],
)  # fmt: skip
def test_bad_token_requests(anonymous: FhirTestClient, form: dict[str, str], status: int, error: str) -> None:
    response = anonymous.post("/auth/token", data=form)
    assert response.status_code == status and response.json()["error"] == error


def test_one_client_authentication_method_per_request(anonymous: FhirTestClient) -> None:
    """Pentest 2: Basic credentials with another client's id in the body got a token as the Basic
    client. RFC 6749 §2.3: one authentication method per request; a body client_id names the same client."""
    client, secret = new_client(anonymous, ("clinician-reviewer",))
    other, other_secret = new_client(anonymous, ("clinician-reviewer",))
    basic = {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()}
    grant = {"grant_type": "client_credentials"}
    refused = {
        "another client_id": {**grant, "client_id": other.client_id},
        "a second secret": {**grant, "client_secret": secret},
        "another client's secret": {**grant, "client_id": other.client_id, "client_secret": other_secret},
        "an assertion": {**grant, "client_assertion": "x.y.z", "client_assertion_type": ASSERTION_TYPE},
    }
    for name, form in refused.items():
        response = anonymous.post("/auth/token", data=form, headers=basic)
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"] == "invalid_request", name
    both = {**grant, "client_id": client.client_id, "client_secret": secret, "client_assertion": "x.y.z",
            "client_assertion_type": ASSERTION_TYPE}  # fmt: skip
    assert anonymous.post("/auth/token", data=both).json()["error"] == "invalid_request"
    same = anonymous.post("/auth/token", data={**grant, "client_id": client.client_id}, headers=basic)
    assert same.status_code == 200, same.text
    posted = anonymous.post("/auth/token", data={**grant, "client_id": other.client_id, "client_secret": other_secret})
    assert posted.status_code == 200, posted.text


def test_token_request_must_be_a_form(anonymous: FhirTestClient) -> None:
    response = anonymous.post("/auth/token", json={"grant_type": "client_credentials"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_wrong_secrets_lock_the_client_out_and_are_audited(anonymous: FhirTestClient) -> None:
    client, secret = new_client(anonymous)
    form = {"grant_type": "client_credentials", "client_id": client.client_id}
    for _ in range(10):
        assert anonymous.post("/auth/token", data={**form, "client_secret": "guess"}).status_code == 401
    locked = anonymous.post("/auth/token", data={**form, "client_secret": secret})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    anonymous.app.state.auth_http.endpoint.lockout = Lockout()  # type: ignore[attr-defined]  # unlock
    anonymous.portal.call(anonymous.app.state.auth_http.record_summaries, True)  # type: ignore[attr-defined]
    events = audit_subtypes(anonymous)
    refusals = [e for e in events if e[0] == "110122" and e[1] == "4"]
    assert any("429" in e[2] for e in refusals)
    assert any("9 more refused token requests" in e[2] for e in refusals)  # the first 401 alone, then a count


def signed(claims: dict[str, Any], key: Any, algorithm: str, kid: str | None = None) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def test_expired_forged_and_misdirected_tokens_are_401(anonymous: FhirTestClient, tmp_path: Path) -> None:
    signer = load_token_signer(tmp_path / "var" / "keys")
    now = int(time.time())
    client, _ = new_client(anonymous)
    good = {"iss": "http://127.0.0.1:8080", "aud": "http://127.0.0.1:8080/fhir/default", "sub": client.client_id,
            "tenant": "default", "scope": "system/*.cruds", "iat": now, "exp": now + 300}  # fmt: skip
    assert anonymous.get(f"{BASE}/Patient", headers=bearer(signer.sign(good))).status_code == 200
    cases = {
        "expired": signer.sign({**good, "iat": now - 900, "exp": now - 600}),
        "another audience": signer.sign({**good, "aud": "https://elsewhere.example/fhir"}),
        "another issuer": signer.sign({**good, "iss": "https://evil.example"}),
        "forged": signed(good, ed25519.Ed25519PrivateKey.generate(), "EdDSA", signer.key_id),
        "unsigned": jwt.encode(good, None, algorithm="none"),
        "garbage": "a.b.c",
    }
    for name, token in cases.items():
        response = anonymous.get(f"{BASE}/Patient", headers=bearer(token))
        assert response.status_code == 401, name
        assert 'error="invalid_token"' in response.headers["www-authenticate"], name


def test_a_token_of_another_tenant_gets_404_never_a_hint(anonymous: FhirTestClient) -> None:
    anonymous.portal.call(anonymous.app.state.engine.create_tenant, "clinic-b")  # type: ignore[attr-defined]
    created = anonymous.post(f"{BASE}/Patient", json=patient(), headers=bearer(anonymous.token())).json()
    other = bearer(anonymous.token(tenant="clinic-b"))
    for url in (f"{BASE}/Patient/{created['id']}", f"{BASE}/Patient", "/fhir/nowhere/Patient"):
        response = anonymous.get(url, headers=other)
        assert response.status_code == 404
        assert "unknown tenant" in response.json()["issue"][0]["diagnostics"]
    assert anonymous.get("/dicomweb/default/studies", headers=other).status_code == 404


def ec_key() -> tuple[Any, dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return private, {"keys": [{**jwk, "kid": "k1", "alg": "ES384", "use": "sig"}]}


def assertion(client_id: str, key: Any, **override: Any) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": int(time.time()) + 240,
              "jti": str(uuid.uuid4()), **override}  # fmt: skip
    return signed(claims, key, "ES384", "k1")


def backend_request(c: FhirTestClient, token: str) -> Any:
    form = {"grant_type": "client_credentials", "scope": "system/Observation.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": token}  # fmt: skip
    return c.post("/auth/token", data=form)


def test_smart_backend_services_private_key_jwt(anonymous: FhirTestClient) -> None:
    private, jwks = ec_key()
    client, secret = new_client(anonymous, ("integration",), secret=False, jwks=jwks)
    assert secret is None
    token = assertion(client.client_id, private)
    issued = backend_request(anonymous, token)
    assert issued.status_code == 200, issued.text
    assert issued.json()["scope"] == "system/Observation.rs"
    access = bearer(issued.json()["access_token"])
    assert anonymous.get(f"{BASE}/Observation", headers=access).status_code == 200
    assert anonymous.get(f"{BASE}/Patient", headers=access).status_code == 403

    replayed = backend_request(anonymous, token)
    assert replayed.status_code == 401 and "already used" in replayed.json()["error_description"]
    other_key, _ = ec_key()
    refused = {
        "expired": assertion(client.client_id, private, exp=int(time.time()) - 120),
        "too long-lived": assertion(client.client_id, private, exp=int(time.time()) + 3600),
        "wrong audience": assertion(client.client_id, private, aud="https://other.example/token"),
        "wrong key": assertion(client.client_id, other_key),
        "sub differs": assertion(client.client_id, private, sub="default.someone"),
    }
    for name, bad in refused.items():
        response = backend_request(anonymous, bad)
        assert response.status_code == 401, name
        assert response.json()["error"] == "invalid_client", name


def test_an_over_long_jti_is_named_not_called_a_replay(anonymous: FhirTestClient) -> None:
    private, jwks = ec_key()
    client, _ = new_client(anonymous, ("integration",), secret=False, jwks=jwks)
    response = backend_request(anonymous, assertion(client.client_id, private, jti="j" * 257))
    assert response.status_code == 401
    assert "jti is longer than 256 characters" in response.json()["error_description"]


def test_external_openid_provider_tokens(tmp_path: Path) -> None:
    private, jwks = ec_key()
    jwks["keys"][0]["alg"] = "ES384"
    (tmp_path / "idp.json").write_text(json.dumps(jwks))
    settings = {"oidc_issuer": "https://idp.example", "oidc_jwks": str(tmp_path / "idp.json"),
                "oidc_audience": "dermbridge"}  # fmt: skip
    with make_client(tmp_path / "var", **settings) as c:
        now = int(time.time())
        claims = {"iss": "https://idp.example", "aud": "dermbridge", "sub": "dr-who", "tenant": "default",
                  "scope": "user/Patient.rs", "iat": now, "exp": now + 300}  # fmt: skip
        good = signed(claims, private, "ES384", "k1")
        assert c.get(f"{BASE}/Patient", headers=bearer(good)).status_code == 200
        assert c.post(f"{BASE}/Patient", json=patient(), headers=bearer(good)).status_code == 403
        wrong_aud = signed({**claims, "aud": "someone-else"}, private, "ES384", "k1")
        assert c.get(f"{BASE}/Patient", headers=bearer(wrong_aud)).status_code == 401
        wrong_tenant = signed({**claims, "tenant": "other"}, private, "ES384", "k1")
        assert c.get(f"{BASE}/Patient", headers=bearer(wrong_tenant)).status_code == 404


@pytest.mark.parametrize(
    ("settings", "lifetimes"),
    [
        ({}, {"ten years": (0, 10 * 365 * 86400), "25 h, 2 h of it left": (-23 * 3600, 2 * 3600)}),
        ({"oidc_max_token_lifetime_seconds": 600}, {"15 min": (0, 900)}),
    ],
)  # fmt: skip
def test_long_lived_provider_tokens_are_401(
    tmp_path: Path, settings: dict[str, int], lifetimes: dict[str, tuple[int, int]]
) -> None:
    """Pentest 2: an external provider's token with a 10-year exp was accepted. A provider token may
    live at most DERMBRIDGE_OIDC_MAX_TOKEN_LIFETIME_SECONDS (24 h by default), counted from iat."""
    private, jwks = ec_key()
    (tmp_path / "idp.json").write_text(json.dumps(jwks))
    provider = {"oidc_issuer": "https://idp.example", "oidc_jwks": str(tmp_path / "idp.json"),
                "oidc_audience": "dermbridge"}  # fmt: skip
    with make_client(tmp_path / "var", **provider, **settings) as c:
        now = int(time.time())
        claims = {"iss": "https://idp.example", "aud": "dermbridge", "sub": "dr-who", "tenant": "default",
                  "scope": "user/Patient.rs", "iat": now, "exp": now + 300}  # fmt: skip
        assert c.get(f"{BASE}/Patient", headers=bearer(signed(claims, private, "ES384", "k1"))).status_code == 200
        for name, (issued, expires) in lifetimes.items():
            token = signed({**claims, "iat": now + issued, "exp": now + expires}, private, "ES384", "k1")
            response = c.get(f"{BASE}/Patient", headers=bearer(token))
            assert response.status_code == 401, name
            assert "longer than the" in response.json()["issue"][0]["diagnostics"], name


def test_insecure_development_mode_is_explicit_and_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with make_client(tmp_path / "var", roles=(), auth_enabled=False) as c:
        assert c.get(f"{BASE}/Patient").status_code == 200
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


def test_the_id_token_key_is_rsa_kept_owner_only_and_published_by_kid(tmp_path: Path) -> None:
    """SMART App Launch 2.x: ID tokens RS256; the key is made once and read by every later start (each process)."""
    keys = tmp_path / "keys"
    first, again = load_token_signer(keys), load_token_signer(keys)
    assert first.id_key_id == again.id_key_id and (keys / "id-token-rsa.pem").stat().st_mode & 0o077 == 0
    published = {k["kid"]: k for k in first.public_jwks()}
    assert published[first.id_key_id]["alg"] == "RS256" and published[first.key_id]["alg"] == "EdDSA"
    claims = {"sub": "default/alice", "aud": "app", "exp": int(time.time()) + 60}
    id_token = again.sign_id_token(claims)
    assert jwt.get_unverified_header(id_token)["kid"] == first.id_key_id
    public = jwt.PyJWK(published[first.id_key_id]).key
    assert jwt.decode(id_token, public, algorithms=["RS256"], audience="app")["sub"] == "default/alice"
