"""Binary content in its native form (binary.html#rest).

A read of a ``Binary`` whose ``Accept`` asks for no FHIR format (``image/png``, ``*/*``, ...) is
answered with the content itself, ``Content-Type`` the Binary's ``contentType`` and its
``securityContext`` in ``X-Security-Context``; so a viewer can use a ``Media.content.url`` directly.
Asking for FHIR JSON (``Accept`` or ``_format``) returns the Binary resource as before.
"""

from __future__ import annotations

import base64
import binascii

from fastapi.responses import Response

from fhir_server.api.messages import FhirResponse

_FHIR_KINDS = ("application/fhir+json", "application/json", "text/json", "application/fhir+xml", "application/xml",
               "text/xml")  # fmt: skip


def wants_native(method: str, segments: list[str], params: list[tuple[str, str]], accept: str) -> bool:
    """A read (or vread) of a Binary that does not ask for a FHIR format."""
    if method != "GET" or not segments or segments[0] != "Binary" or len(segments) not in (2, 4):
        return False
    if len(segments) == 4 and segments[2] != "_history":
        return False
    if any(k == "_format" for k, _ in params):
        return False
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    return not any(k in _FHIR_KINDS or k.endswith(("+json", "+xml")) for k in kinds)


def native_response(response: FhirResponse) -> Response | None:
    """The Binary's content as the HTTP body; None when ``response`` holds no readable Binary."""
    body = response.body
    if response.status != 200 or not isinstance(body, dict) or body.get("resourceType") != "Binary":
        return None
    try:
        content = base64.b64decode(str(body.get("data", "")), validate=True)
    except (binascii.Error, ValueError):
        return None
    headers = dict(response.headers)
    context = body.get("securityContext")
    if isinstance(context, dict) and isinstance(context.get("reference"), str):
        headers["X-Security-Context"] = context["reference"]
    return Response(content, media_type=str(body.get("contentType") or "application/octet-stream"), headers=headers)
