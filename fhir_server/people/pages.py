"""The server-rendered sign-in, consent and error pages: plain HTML with labelled inputs in a natural tab
order (WCAG 2.1 1.3.1, 2.1.1), no script, nothing from another origin, served with a content security
policy (CSP Level 3) that forbids everything else and frames (clickjacking)."""

from __future__ import annotations

import base64
import hashlib
from html import escape
from urllib.parse import urlencode

from starlette.responses import HTMLResponse

from fhir_server.security.scopes import parse_scope

STYLE = (
    "body{font-family:sans-serif;max-width:32rem;margin:2rem auto;line-height:1.5}label{display:block;margin-top:1rem}"
)
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()  # CSP 3 hash-source


def page(title: str, body: str, status: int = 200, form_targets: tuple[str, ...] = ()) -> HTMLResponse:
    """An HTML page; ``form_targets`` are the origins its forms may end at (a consent form redirects to the app:
    CSP ``form-action`` also governs the redirect after a form post)."""
    csp = (
        f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; form-action 'self' {' '.join(form_targets)}".rstrip()
        + "; frame-ancestors 'none'; base-uri 'none'"
    )
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} - DermBridge</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return HTMLResponse(html, status, headers=headers)


def _hidden(fields: dict[str, str]) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items())


def login_page(
    tenant: str, next_url: str, csrf: str, message: str | None = None, status: int = 200, provider: bool = False
) -> HTMLResponse:
    alert = f'<p role="alert">{escape(message)}</p>' if message else ""
    if provider:
        link = f"/auth/oidc/login?{urlencode({'tenant': tenant, 'next': next_url})}"
        alert += f'<p><a href="{escape(link)}">Sign in with your hospital account</a></p>'

    body = (
        f'{alert}<form method="post" action="/auth/login">'
        f"{_hidden({'tenant': tenant, 'next': next_url, 'csrf': csrf})}"
        '<label for="username">Username</label>'
        '<input id="username" name="username" autocomplete="username" required autofocus maxlength="64">'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password" required'
        ' maxlength="1024">'
        '<label for="code">One-time code (if two-factor sign-in is on for you)</label>'
        '<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="10">'
        '<p><button type="submit">Sign in</button></p></form>'
    )
    return page("Sign in", body, status)


def describe_scope(text: str) -> str:
    """A scope in words a clinician reads on the consent screen."""
    fixed = {
        "openid": "know who you are",
        "fhirUser": "know who you are (your Practitioner record)",
        "profile": "know who you are",
        "launch": "know the patient the EHR opened it for",
        "launch/patient": "know the patient in context",
        "offline_access": "keep access after you sign out",
        "online_access": "keep access while you are signed in",
    }
    scope = parse_scope(text)
    if scope is None:
        return fixed.get(text, text)
    verbs = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
    what = "all resources" if scope.resource_type == "*" else f"{scope.resource_type} resources"
    whose = "of the patient in context" if scope.context == "patient" else "you may see"
    return f"{', '.join(verbs[p] for p in scope.permissions)} {what} {whose}"


def consent_page(app_name: str, scopes: list[str], fields: dict[str, str], redirect_origin: str) -> HTMLResponse:
    items = "".join(f"<li><code>{escape(s)}</code>: {escape(describe_scope(s))}</li>" for s in scopes)
    body = (
        f"<p>The app <strong>{escape(app_name)}</strong> asks to act for you on DermBridge. It may:</p>"
        f'<ul>{items}</ul><form method="post" action="/auth/authorize">{_hidden(fields)}'
        '<button type="submit" name="decision" value="allow">Allow</button> '
        '<button type="submit" name="decision" value="deny">Deny</button></form>'
    )
    return page("Allow access?", body, form_targets=(redirect_origin,))


def error_page(message: str, status: int = 400) -> HTMLResponse:
    return page("Cannot continue", f'<p role="alert">{escape(message)}</p>', status)
