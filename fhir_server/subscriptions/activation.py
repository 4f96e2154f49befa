"""A Subscription a client writes is checked and activated (subscription.html#lifecycle):
the server moves it ``requested -> active`` once its criteria and channel are acceptable, or
answers 4xx with an OperationOutcome. A client may set ``off``; ``error`` is the server's.

Supported channels: ``rest-hook`` (an http(s) URL) and ``email`` (``mailto:``). ``websocket``,
``sms`` and ``message`` are refused with 422 (not supported).
"""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

from fhir_server.api.messages import FhirRequest
from fhir_server.errors import unprocessable
from fhir_server.repository import Repository
from fhir_server.subscriptions.criteria import check_criteria, parse_criteria
from fhir_server.subscriptions.owner import stamp

CHANNELS = ("rest-hook", "email")
PAYLOADS = {"rest-hook": (None, "application/fhir+json", "application/json"), "email": (None, "text/plain")}
MAX_HEADERS = 16
MAX_HEADER = 1024
MAX_ENDPOINT = 2048
HEADER_PATH = "Subscription.channel.header"


async def activate(repo: Repository, request: FhirRequest) -> None:
    """Router write hook for Subscription (create, update, conditional update, in bundles too)."""
    if request.method == "PATCH":
        raise unprocessable("a Subscription is changed by PUT (its criteria and channel are checked as a whole)")
    body = request.body
    if not isinstance(body, dict) or body.get("resourceType") != "Subscription":
        return  # the ordinary validation answers
    channel = body.get("channel")
    if not isinstance(channel, dict):
        raise unprocessable("channel is required", ["Subscription.channel"])
    check_channel(channel)
    check_criteria(repo, parse_criteria(body.get("criteria")))
    if body.get("status") != "off":
        body["status"] = "active"
    body.pop("error", None)
    stamp(body, repo.policy)


def check_channel(channel: dict[str, Any]) -> None:
    kind = channel.get("type")
    if kind not in CHANNELS:
        raise unprocessable(
            f"channel type {kind!r} is not supported here; use one of {', '.join(CHANNELS)}",
            ["Subscription.channel.type"],
        )
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str) or len(endpoint) > MAX_ENDPOINT:
        raise unprocessable("channel.endpoint is required", ["Subscription.channel.endpoint"])
    if kind == "rest-hook":
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise unprocessable("a rest-hook endpoint is an http(s) URL", ["Subscription.channel.endpoint"])
    elif not endpoint.startswith("mailto:") or "@" not in parseaddr(endpoint[7:])[1]:
        raise unprocessable("an email endpoint is mailto:address", ["Subscription.channel.endpoint"])
    if channel.get("payload") not in PAYLOADS[kind]:
        allowed = ", ".join(p for p in PAYLOADS[kind] if p) + " or none"
        raise unprocessable(f"channel.payload of {kind} is {allowed}", ["Subscription.channel.payload"])
    headers = channel.get("header") or []
    if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
        raise unprocessable(f"at most {MAX_HEADERS} channel.header values", ["Subscription.channel.header"])
    for header in headers:
        parse_header(header)


HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def parse_header(header: object) -> tuple[str, str]:
    """``Name: value`` (subscription.html: channel.header, "usual HTTP header syntax")."""
    text = header if isinstance(header, str) and len(header) <= MAX_HEADER else ""
    name, _, value = text.partition(":")
    if not HEADER_NAME.match(name.strip()) or not value.strip() or any(c in text for c in "\r\n\0"):
        raise unprocessable(f"channel.header {str(header)[:80]!r} is not 'Name: value'", [HEADER_PATH])
    return name.strip(), value.strip()
