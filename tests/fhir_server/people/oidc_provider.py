"""A small OpenID provider over real HTTP on loopback, for the browser sign-in tests: discovery, an
authorization endpoint that signs in one configured person at once (no page) or, with ``login_form``, shows
a sign-in form whose username becomes the subject (for a real browser), a token endpoint that checks the
client secret and PKCE and answers an ES256 ID token, and its JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

CLIENT_ID = "dermbridge"
CLIENT_SECRET = "provider-secret-for-tests"
PASSWORD = "hospital password for tests"


@dataclass
class Provider:
    issuer: str = ""
    subject: str = "hospital-user-1"  # who the next sign-in at the provider is
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    token_requests: int = 0
    login_form: bool = False  # show a sign-in page at the authorization endpoint (a browser fills it in)

    def jwks(self) -> dict[str, Any]:
        jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "ES256"}]}

    def id_token(self, nonce: str, subject: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "k1"})


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _html(self, status: int, body: str) -> None:
            raw = f"<!doctype html><html lang='en'><title>Hospital sign-in</title><main>{body}</main></html>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _signed_in(self, query: dict[str, str], status: int = 302) -> None:
            """Back to the client with a code for the person now signed in."""
            code = secrets.token_urlsafe(16)
            provider.codes[code] = {**query, "sub": provider.subject}
            self.send_response(status)
            back = urlencode({"code": code, "state": query["state"]})
            self.send_header("Location", f"{query['redirect_uri']}?{back}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _login_form(self, query: dict[str, str], status: int = 200) -> None:
            hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in query.items())
            form = (
                f'<h1>Hospital sign-in</h1><form method="post" action="/authorize">{hidden}'
                '<label for="u">Hospital username</label><input id="u" name="username">'
                '<label for="p">Hospital password</label><input id="p" name="password" type="password">'
                "<button type='submit'>Sign in at the hospital</button></form>"
            )
            self._html(status, form)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/.well-known/openid-configuration":
                return self._json(
                    200,
                    {
                        "issuer": provider.issuer,
                        "authorization_endpoint": f"{provider.issuer}/authorize",
                        "token_endpoint": f"{provider.issuer}/token",
                        "jwks_uri": f"{provider.issuer}/jwks",
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["ES256"],
                    },
                )
            if url.path == "/jwks":
                return self._json(200, provider.jwks())
            if url.path == "/authorize":
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                assert query["client_id"] == CLIENT_ID and query["code_challenge_method"] == "S256"
                return self._login_form(query) if provider.login_form else self._signed_in(query)
            return self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if urlsplit(self.path).path == "/authorize":  # the sign-in form
                username, password = form.pop("username", ""), form.pop("password", "")
                if password != PASSWORD:
                    return self._login_form(form, 401)
                provider.subject = username
                return self._signed_in(form, 303)
            provider.token_requests += 1
            asked = provider.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if asked is None or form.get("client_secret") != CLIENT_SECRET or challenge != asked["code_challenge"]:
                return self._json(400, {"error": "invalid_grant"})
            token = provider.id_token(asked["nonce"], asked["sub"])
            return self._json(200, {"access_token": "opaque", "token_type": "Bearer", "id_token": token})

    return Handler


@contextmanager
def running_provider() -> Iterator[Provider]:
    provider = Provider()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    provider.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()


def provider_env(provider: Provider) -> dict[str, str]:
    """A DermBridge server's settings that trust ``provider`` for tokens and sign-in."""
    return {
        "DERMBRIDGE_OIDC_ISSUER": provider.issuer,
        "DERMBRIDGE_OIDC_JWKS": f"{provider.issuer}/jwks",
        "DERMBRIDGE_OIDC_AUDIENCE": "dermbridge",
        "DERMBRIDGE_OIDC_LOGIN_CLIENT_ID": CLIENT_ID,
        "DERMBRIDGE_OIDC_LOGIN_CLIENT_SECRET": CLIENT_SECRET,
    }
