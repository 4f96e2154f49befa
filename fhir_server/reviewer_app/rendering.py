"""The reviewer app's pages: Jinja2 templates (autoescaped) served with a content security policy (CSP Level 3)
that allows only this origin's own script, style and images, no inline script, no frames (clickjacking), and
form posts to this origin only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}  # the only files served under /app/static/
_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), trim_blocks=True
)


def page(template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
    """A page of the app, rendered from ``template`` with ``context``."""
    html = _templates.get_template(template).render(**context)
    return HTMLResponse(html, http_status, headers=HEADERS)


def problem(title: str, message: str, status: int, **context: Any) -> HTMLResponse:
    """A page saying what went wrong (the OperationOutcome's words) and the way back."""
    return page("problem.html", status, title=title, message=message, **context)


def static_file(name: str) -> Response:
    """One of the app's own assets (a fixed list: no path from the URL reaches the file system)."""
    media = STATIC.get(name)
    if media is None:
        return Response("not found", 404, media_type="text/plain")
    body = (HERE / "static" / name).read_bytes()
    return Response(
        body, 200, media_type=media, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    )
