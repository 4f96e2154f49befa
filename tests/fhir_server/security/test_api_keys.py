"""The pure parts of standing credentials: what scopes a new API key may get, how a key's text is
read, and that a request with a standing credential has no token expiry to watch."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.security.api_keys import key_scopes, split_key
from fhir_server.security.bearer import Authenticator
from fhir_server.security.clients import Client, ClientError
from fhir_server.security.scopes import Scope
from fhir_server.security.tokens import TokenService, load_token_signer


def client(*roles: str) -> Client:
    return Client("default.abc", "default", "pacs", roles)


def test_a_key_gets_at_most_its_clients_role_scopes() -> None:
    assert key_scopes(client("imaging-device"), "system/ImagingStudy.rs system/Patient.rs", None) == [
        Scope("system", "ImagingStudy", "rs")
    ]
    assert key_scopes(client("imaging-device"), None, None) == [Scope("system", "ImagingStudy", "crs")]
    with pytest.raises(ClientError, match="none of the requested scopes"):
        key_scopes(client("auditor"), "system/Patient.rs", None)


def test_a_patient_key_has_patient_scopes_and_its_patient_only() -> None:
    wanted = "patient/ImagingStudy.rs patient/Patient.rs"
    assert key_scopes(client("integration"), wanted, "p1") == [
        Scope("patient", "ImagingStudy", "rs"),
        Scope("patient", "Patient", "rs"),
    ]
    with pytest.raises(ClientError, match="--patient"):
        key_scopes(client("integration"), wanted, None)
    with pytest.raises(ClientError, match="patient/ scopes only"):
        key_scopes(client("integration"), "system/Patient.rs", "p1")
    with pytest.raises(ClientError, match="patient/ scopes only"):
        key_scopes(client("integration"), f"{wanted} system/Observation.rs", "p1")


def test_key_text_is_prefix_id_and_secret() -> None:
    assert split_key("dbk_0123abcd_s3cr_et-x") == ("0123abcd", "s3cr_et-x")
    for not_a_key in ("dbk_", "dbk_abc", "eyJhbGciOi.x.y", "dbk_abc_" + "x" * 300):
        assert split_key(not_a_key) is None


def test_standing_credentials_have_no_token_expiry(tmp_path: Path) -> None:
    """A subscription websocket opened with Basic or an API key is not closed at a token's expiry it
    does not have (it used to fail: the Basic text was verified as a JWT)."""
    tokens = TokenService(load_token_signer(tmp_path), "http://127.0.0.1")
    authenticator = Authenticator(tokens)
    assert authenticator.expires("Basic ZGVmYXVsdC5hYmM6c2VjcmV0", "default") is None
    assert authenticator.expires("Bearer dbk_0123abcd_secret", "default") is None
    token, _ = tokens.mint(tenant="default", client_id="default.abc", scopes=[], roles=())
    expires = authenticator.expires(f"Bearer {token}", "default")
    assert expires is not None and expires > 0
