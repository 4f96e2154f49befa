"""A form posted to one of the app's pages: read by the server's one form reader (``api.auth_http.read_form``:
urlencoded, bounded, each field once) and checked against the session's CSRF token (OWASP CSRF prevention,
synchronizer token pattern), or the page that says why it was refused."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import HTMLResponse

from fhir_server.api.auth_http import read_form
from fhir_server.people.signed_in import Principal, csrf_ok
from fhir_server.reviewer_app.rendering import problem
from fhir_server.security.endpoint import OAuthError

MAX_FIELD = 2000  # characters of one field the app keeps


async def posted_form(request: Request, me: Principal, whole: tuple[str, ...] = ()) -> dict[str, str] | HTMLResponse:
    """The form's fields (``csrf`` checked and removed; each cut to ``MAX_FIELD`` characters but those named in
    ``whole``, bounded by the form's size), or the problem page to answer."""
    try:
        form = await read_form(request)
    except OAuthError as error:
        return problem("Form refused", error.description, error.status)
    if not csrf_ok(me, form.pop("csrf", None)):
        return problem("Form expired", "the form has expired or did not come from this site (CSRF check)", 403)
    return {key: value if key in whole else value[:MAX_FIELD] for key, value in form.items()}
