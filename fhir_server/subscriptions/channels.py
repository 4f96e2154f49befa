"""Delivering one notification on a Subscription's channel (subscription.html#channels).

- ``rest-hook`` without payload: ``POST`` to the endpoint with no body (a ping);
  with ``application/fhir+json``: ``PUT [endpoint]/[type]/[id]`` with the resource, or, for a topic-based
  Subscription, ``POST`` of the notification Bundle to the endpoint (Backport IG, "rest-hook");
  with ``application/json``: a Slack-style webhook, ``POST {"text": ...}`` from the tenant's webhook template.
  ``channel.header`` values are sent on every request. The endpoint's host is checked again by the
  ``EndpointGuard`` on each delivery and the request goes to the address checked (with the original
  ``Host`` and TLS server name), so a DNS answer changed since activation cannot redirect it.
- ``email``: a message from the tenant's email template to the ``mailto:`` address, unless the
  recipient is suppressed or has turned email off.

A failure raises ``DeliveryFailed`` with the reason recorded on the Subscription: only the HTTP status
or "unreachable", never the kind of network error (``Subscription.error`` must not make a scanner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from fhir_server.notify.config import NotifyConfig, TenantNotifications, tenant_notifications
from fhir_server.notify.email import build_message, send_email
from fhir_server.notify.templates import Context, Template
from fhir_server.storage.port import TenantReader
from fhir_server.subscriptions.activation import parse_header
from fhir_server.subscriptions.guard import EndpointGuard, EndpointRefused, Target

FHIR_JSON = "application/fhir+json"
WEBHOOK_JSON = "application/json"


class DeliveryFailed(Exception):
    """The endpoint could not be reached or refused the notification."""


@dataclass(frozen=True, slots=True)
class Notification:
    key: str  # subscription id | outbox event seq: the same notification is never sent twice
    subscription: dict[str, Any]
    context: Context
    bundle: dict[str, Any] | None = None  # a topic-based Subscription's notification Bundle

    @property
    def channel(self) -> dict[str, Any]:
        channel: dict[str, Any] = self.subscription.get("channel") or {}
        return channel


class Channels:
    """The senders of every supported channel type, sharing one HTTP client."""

    def __init__(
        self, config: NotifyConfig, *, guard: EndpointGuard | None = None, timeout_seconds: float = 10.0
    ) -> None:
        self.config = config
        self.guard = guard or EndpointGuard()
        self._http = httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False)

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, notification: Notification, reader: TenantReader) -> str:
        """Deliver; returns what was done (for the audit trail)."""
        settings = await tenant_notifications(reader, notification.context.tenant, self.config)
        if notification.channel.get("type") == "email":
            return await self._email(notification, settings)
        return await self._rest_hook(notification, settings)

    async def _rest_hook(self, notification: Notification, settings: TenantNotifications) -> str:
        channel, context = notification.channel, notification.context
        headers = dict(parse_header(h) for h in channel.get("header") or [])
        endpoint = str(channel["endpoint"])
        payload = channel.get("payload")
        if payload == FHIR_JSON and notification.bundle is not None:
            content = orjson.dumps(notification.bundle)
            request = self._http.build_request(
                "POST", endpoint, content=content, headers={**headers, "Content-Type": FHIR_JSON}
            )
        elif payload == FHIR_JSON:
            url = f"{endpoint.rstrip('/')}/{context.resource_type}/{context.id}"
            request = self._http.build_request(
                "PUT", url, content=orjson.dumps(context.resource), headers={**headers, "Content-Type": FHIR_JSON}
            )
        elif payload == WEBHOOK_JSON:
            recipient = endpoint
            if not settings.wants(recipient, "webhook"):
                return f"not sent: {endpoint} is suppressed"
            _, text = settings.templates.webhook.render(context)
            request = self._http.build_request("POST", endpoint, json={"text": text}, headers=headers)
        else:
            url = endpoint
            request = self._http.build_request("POST", url, headers=headers)
        shown = f"{request.method} {request.url}"
        await self._pin(request)
        try:
            response = await self._http.send(request)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"delivery failed: {shown}: endpoint unreachable") from exc
        if not response.is_success:
            raise DeliveryFailed(f"delivery failed: {shown}: HTTP status {response.status_code}")
        return f"{shown}: HTTP {response.status_code}"

    async def _pin(self, request: httpx.Request) -> None:
        """Check the host now and send to the checked address (DNS rebinding); raises ``DeliveryFailed``."""
        url = request.url
        try:
            target: Target = await self.guard.resolve(url.host, url.port or (443 if url.scheme == "https" else 80))
        except EndpointRefused as exc:
            raise DeliveryFailed(f"delivery refused: {exc}") from exc
        if target.address is None:
            return  # an allow-listed host name: connected as named
        request.headers["Host"] = url.netloc.decode("ascii")
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": url.host}
        request.url = url.copy_with(host=str(target.address))

    async def _email(self, notification: Notification, settings: TenantNotifications) -> str:
        recipient = str(notification.channel["endpoint"]).removeprefix("mailto:")
        return await self.email(settings, settings.templates.email, recipient, notification.context, notification.key)

    async def email(
        self, settings: TenantNotifications, template: Template, recipient: str, context: Context, key: str
    ) -> str:
        """One email from ``template`` unless the recipient is suppressed or has turned email off."""
        if not settings.wants(recipient, "email"):
            return f"not sent: {recipient} is suppressed or has turned email off"
        if settings.smtp is None:
            raise DeliveryFailed(f"tenant {context.tenant!r} has no SMTP server configured")
        subject, body = template.render(context)
        message = build_message(settings.smtp, recipient, subject, body, key)
        try:
            await send_email(settings.smtp, message)
        except (OSError, ValueError) as exc:  # smtplib.SMTPException is an OSError
            raise DeliveryFailed(f"email to {recipient} failed: {type(exc).__name__}: {exc}"[:500]) from exc
        return f"email sent to {recipient}"
