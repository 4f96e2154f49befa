"""A Subscription a client writes is checked and activated (subscription.html#lifecycle):
the server moves it ``requested -> active`` once its criteria and channel are acceptable, or
answers 4xx with an OperationOutcome. A client may set ``off``; ``error`` is the server's.

Supported channels: ``rest-hook`` (an http(s) URL), ``email`` (``mailto:``) and ``websocket`` (no
endpoint, payload or header: the client binds it on the server's socket, ``websocket.py``). ``sms`` and
``message`` are refused with 422 (not supported). A rest-hook endpoint must pass the
``EndpointGuard`` (no loopback, private, link-local... hosts unless allow-listed); hop-by-hop and
framing headers (Host, Content-Length, Transfer-Encoding, Connection...) are refused in ``channel.header``.

``criteria`` is a search URL (R4) or a topic's canonical URL (Subscriptions Backport IG, ``topics``).

A Subscription is a standing grant of its owner's scopes, so its lifetime is capped
(``SubscriptionRules.max_lifetime``): a missing or later ``end`` is set to the cap.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

from fhir_server.api.messages import FhirRequest
from fhir_server.errors import unprocessable
from fhir_server.repository import Repository
from fhir_server.subscriptions import topics
from fhir_server.subscriptions.criteria import check_criteria, parse_criteria
from fhir_server.subscriptions.guard import EndpointGuard, EndpointRefused
from fhir_server.subscriptions.owner import stamp

CHANNELS = ("rest-hook", "email", "websocket")
PAYLOADS = {
    "rest-hook": (None, "application/fhir+json", "application/json"),
    "email": (None, "text/plain"),
    "websocket": (None,),  # R4 websocket notifications are "ping {id}": no content
}
MAX_HEADERS = 16
MAX_HEADER = 1024
MAX_ENDPOINT = 2048
HEADER_PATH = "Subscription.channel.header"
ENDPOINT_PATH = "Subscription.channel.endpoint"
HOP_BY_HOP = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
DEFAULT_LIFETIME = timedelta(days=30)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SubscriptionRules:
    """What an operator decides about Subscriptions: the endpoint allow-list and the longest lifetime."""

    guard: EndpointGuard = field(default_factory=EndpointGuard)
    max_lifetime: timedelta = DEFAULT_LIFETIME
    clock: Callable[[], datetime] = _utc_now


def activation_hook(rules: SubscriptionRules) -> Callable[[Repository, FhirRequest], Awaitable[None]]:
    """The router's write hook for Subscription under ``rules``."""

    async def hook(repo: Repository, request: FhirRequest) -> None:
        await activate(repo, request, rules)

    return hook


async def activate(repo: Repository, request: FhirRequest, rules: SubscriptionRules | None = None) -> None:
    """Router write hook for Subscription (create, update, conditional update, in bundles too)."""
    rules = rules or SubscriptionRules()
    if request.method == "PATCH":
        raise unprocessable("a Subscription is changed by PUT (its criteria and channel are checked as a whole)")
    body = request.body
    if not isinstance(body, dict) or body.get("resourceType") != "Subscription":
        return  # the ordinary validation answers
    channel = body.get("channel")
    if not isinstance(channel, dict):
        raise unprocessable("channel is required", ["Subscription.channel"])
    check_channel(channel)
    await check_endpoint(channel, rules.guard)
    if topics.looks_like_topic(body.get("criteria")):
        topics.check_topic_subscription(repo, body)  # Subscriptions Backport IG: criteria is a topic canonical
    else:
        check_criteria(repo, parse_criteria(body.get("criteria")))
    if body.get("status") != "off":
        body["status"] = "active"
    body.pop("error", None)
    now = rules.clock()
    body["end"] = capped_end(body.get("end"), now + rules.max_lifetime)
    stamp(body, repo.policy, now + rules.max_lifetime)


def capped_end(requested: object, cap: datetime) -> str:
    """``end`` no later than ``cap`` (a missing or unreadable ``end`` is the cap)."""
    try:
        end = datetime.fromisoformat(str(requested)) if isinstance(requested, str) else None
    except ValueError:
        end = None
    if end is not None and end.tzinfo is None:
        end = None  # a dateTime with a time carries a zone (datatypes.html#dateTime); a bare date: the cap
    chosen = cap if end is None or end > cap else end
    return chosen.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def check_endpoint(channel: dict[str, Any], guard: EndpointGuard) -> None:
    """A rest-hook endpoint the server may call (``EndpointGuard``); 422 otherwise."""
    if channel.get("type") != "rest-hook":
        return
    parts = urlsplit(str(channel["endpoint"]))
    try:
        await guard.resolve(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except EndpointRefused as exc:
        raise unprocessable(str(exc), [ENDPOINT_PATH]) from exc
    except ValueError as exc:  # an invalid port
        raise unprocessable("the endpoint URL is not valid", [ENDPOINT_PATH]) from exc


def check_channel(channel: dict[str, Any]) -> None:
    kind = channel.get("type")
    if kind not in CHANNELS:
        raise unprocessable(
            f"channel type {kind!r} is not supported here; use one of {', '.join(CHANNELS)}",
            ["Subscription.channel.type"],
        )
    if kind == "websocket":
        check_websocket(channel)
        return
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


def check_websocket(channel: dict[str, Any]) -> None:
    """subscription.html, channel "websocket": the client connects to the server's socket and binds the Subscription
    there, so an endpoint, payload or header would be meaningless (422 rather than silently ignored)."""
    for name in ("endpoint", "payload", "header"):
        if channel.get(name):
            raise unprocessable(
                f"a websocket channel has no {name}: the client binds it on the server's websocket "
                "(CapabilityStatement.rest extension capabilitystatement-websocket)",
                [f"Subscription.channel.{name}"],
            )


HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def parse_header(header: object) -> tuple[str, str]:
    """``Name: value`` (subscription.html: channel.header, "usual HTTP header syntax")."""
    text = header if isinstance(header, str) and len(header) <= MAX_HEADER else ""
    name, _, value = text.partition(":")
    if not HEADER_NAME.match(name.strip()) or not value.strip() or any(c in text for c in "\r\n\0"):
        raise unprocessable(f"channel.header {str(header)[:80]!r} is not 'Name: value'", [HEADER_PATH])
    if name.strip().lower() in HOP_BY_HOP:
        raise unprocessable(
            f"channel.header {name.strip()!r} is set by the server, not by a Subscription", [HEADER_PATH]
        )
    return name.strip(), value.strip()
