"""The notification Bundle of a topic-based Subscription (Subscriptions R5 Backport IG STU 1.1,
"R4 Notifications": profile ``backport-subscription-notification-r4``).

A ``history`` Bundle whose first entry is a ``Parameters`` (profile ``backport-subscription-status-r4``:
``subscription``, ``topic``, ``status``, ``type`` ``event-notification``, ``events-since-subscription-start``
and one ``notification-event`` with ``event-number``, ``timestamp`` and, unless the content is ``empty``,
``focus`` and ``additional-context``), its ``request`` the ``$status`` read it stands for (bdl-3/bdl-4).
``id-only`` adds an entry per reference with ``fullUrl`` only; ``full-resource`` adds the resources too,
as the owner may see them.

``Bundle.timestamp`` is when the Bundle was built (just before it is sent) and the event's ``timestamp``
when the workflow appended it (in the transaction that committed the change): the difference is the
notification's latency from commit.

The event number counts the Subscription's delivered notifications (``EVENT_COUNT``, a record written in
the transaction that records the delivery), so a retried notification keeps its number.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from fhir_server.repository import Stored
from fhir_server.storage.port import Record, TenantReader
from fhir_server.subscriptions.topics import BACKPORT, Topic

STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
NOTIFICATION_PROFILE = BACKPORT + "backport-subscription-notification-r4"
EVENT_COUNT = "subscription-event-count"


async def delivered_count(reader: TenantReader, subscription_id: str) -> int:
    """How many notifications the Subscription has been sent (``events-since-subscription-start``)."""
    record = await reader.get_record(EVENT_COUNT, subscription_id)
    return int(orjson.loads(record.body)["count"]) if record is not None else 0


async def next_event_number(reader: TenantReader, subscription_id: str) -> int:
    """The number of the Subscription's next notification (1 for the first)."""
    return await delivered_count(reader, subscription_id) + 1


def event_count(subscription_id: str, number: int) -> Record:
    """The record of ``number`` notifications delivered (written with the delivery record)."""
    return Record(EVENT_COUNT, subscription_id, orjson.dumps({"count": number}), {})


def notification_bundle(
    base: str,
    subscription_id: str,
    topic: Topic,
    number: int,
    happened: str,
    content: str,
    references: list[Stored],
) -> dict[str, Any]:
    """The Bundle for one event; ``references``: the focus first, then additional context."""
    subscription_url = f"{base}/Subscription/{subscription_id}"
    event: list[dict[str, Any]] = [
        {"name": "event-number", "valueString": str(number)},
        {"name": "timestamp", "valueInstant": happened},
    ]
    entries: list[dict[str, Any]] = []
    if content != "empty":
        for index, stored in enumerate(references):
            url = f"{base}/{stored.resource['resourceType']}/{stored.resource['id']}"
            event.append(
                {"name": "focus" if index == 0 else "additional-context", "valueReference": {"reference": url}}
            )
            entries.append(_entry(url, stored, content == "full-resource"))
    status_id = str(uuid.uuid4())
    status = {
        "resourceType": "Parameters",
        "id": status_id,
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": subscription_url}},
            {"name": "topic", "valueCanonical": topic.canonical},
            {"name": "status", "valueCode": "active"},
            {"name": "type", "valueCode": "event-notification"},
            {"name": "events-since-subscription-start", "valueString": str(number)},
            {"name": "notification-event", "part": event},
        ],
    }
    first = {
        "fullUrl": f"urn:uuid:{status_id}",
        "resource": status,
        "request": {"method": "GET", "url": f"{subscription_url}/$status"},
        "response": {"status": "200"},
    }
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "entry": [first, *entries],
    }


def _entry(url: str, stored: Stored, full: bool) -> dict[str, Any]:
    resource = stored.resource
    entry: dict[str, Any] = {
        "fullUrl": url,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        "response": {"status": "200", "etag": stored.etag},
    }
    if full:
        entry["resource"] = resource
    return entry
