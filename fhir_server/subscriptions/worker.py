"""The subscription worker: evaluates every active Subscription's criteria on each committed
change and delivers the matches (subscription.html; DESIGN "outbox").

- An outbox consumer of ``resource.created`` / ``resource.updated`` / ``resource.deleted``: at least
  once, with leases. A deleted resource no longer matches any search, so deletions notify nobody.
- And of ``workflow.notification``: topic-based Subscriptions (``topics``, Backport IG) whose topic the
  event triggers get the notification Bundle (``topic_bundle``), when the case matches their filters as
  their owner sees it; an urgent review's reviewers are emailed if the tenant opted in (``reviewer_mail``).
- A match is a search through the real search engine, ``criteria`` plus ``_id=<changed id>``,
  run by a ``Repository`` holding the Subscription owner's ``AccessPolicy``.
- Idempotent: each (Subscription, event) delivered is recorded (``DELIVERED``); a redelivered
  event skips what already went out. Changes to Subscriptions and AuditEvents notify nobody.
- A failed delivery defers the event with exponential back-off (``retry_seconds``, twice it, ...);
  after ``max_attempts`` the Subscription goes to ``status = error`` with the reason in ``error``.
- A Subscription whose owning client was disabled (or revoked its tokens) after writing it is silent.
- One owned by an external provider's subject (not revocable here) is turned ``off`` once its
  ``authorised-until`` passes, with an ``error`` asking the owner to re-authorise (write it again).
- Every send, suppressed send, failed attempt (outcome 4) and final failure (8) is audited.
  A Subscription past its ``end`` is skipped.
- ``websocket`` channels are not sent from here: the match is recorded in the ``feed`` (with the
  DELIVERED record and the AuditEvent, in one transaction) for the process holding the socket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError
from fhir_server.notify.templates import Context
from fhir_server.outbox import OutboxLoop, claimed
from fhir_server.repository import Repository, Stored
from fhir_server.security.clients import ClientRegistry
from fhir_server.storage.port import Engine, OutboxEvent, Record, TenantStore
from fhir_server.subscriptions import feed, topics
from fhir_server.subscriptions.audit import notification_event
from fhir_server.subscriptions.channels import Channels, DeliveryFailed, Notification
from fhir_server.subscriptions.criteria import Criteria, match, parse_criteria
from fhir_server.subscriptions.owner import owner_client, owner_client_id, owner_policy, reauthorisation_due
from fhir_server.subscriptions.reviewer_mail import ReviewerMail
from fhir_server.subscriptions.topic_bundle import event_count, next_event_number, notification_bundle
from fhir_server.workflow.events import NOTIFICATION
from fhir_server.workflow.events import Notification as WorkflowNotice

log = logging.getLogger(__name__)
CONSUMER = "subscriptions"
TOPICS = ("resource.created", "resource.updated")
QUIET_TYPES = ("Subscription", "AuditEvent")
DELIVERED = "subscription-delivered"
REASON = "subscription delivery"
SCAN = 100
MAX_SUBSCRIPTIONS = 1000  # active Subscriptions looked at per changed resource type
MAX_BACKOFF = 3600.0
FED = "recorded for the Subscription's websocket bindings (a ping follows on each bound socket)"
REAUTHORISE = (
    "re-authorisation needed: the owner's grant from an external identity provider has reached the "
    "server's maximum Subscription lifetime; the owner must write the Subscription again (PUT) to resume"
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SubscriptionWorker(OutboxLoop):
    name = "subscription-worker"

    def __init__(
        self,
        engine: Engine,
        channels: Channels,
        *,
        public_base: str,
        audit: AuditTrail | None = None,
        max_attempts: int = 5,
        retry_seconds: float = 30.0,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        clients: ClientRegistry | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        super().__init__(engine, poll_seconds)
        self.engine = engine
        self.channels = channels
        self.public_base = public_base.rstrip("/")
        self.audit = audit
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.lease = lease_seconds
        self.clients = clients
        self.clock = clock
        self.feed_listeners: list[Callable[[str, str], None]] = []  # (tenant, Subscription id): a websocket entry
        self.reviewers = ReviewerMail(channels, self.public_base, audit)

    async def stop(self) -> None:
        await super().stop()
        await self.channels.close()

    async def drain(self) -> int:
        """Settle what is due now in every tenant; returns how many events were settled."""
        settled = 0
        async for store, events in claimed(self.engine, CONSUMER, SCAN, self.lease):
            for event in events:
                settled += await self.handle(store, event)
        return settled

    async def handle(self, store: TenantStore, event: OutboxEvent) -> int:
        """Deliver one event to every matching Subscription; 1 when the event is settled (acknowledged)."""
        system = Repository.system(store, reason=REASON)
        targets = await self._targets(system, event)
        if targets is None:
            await store.ack_event(CONSUMER, event.seq)
            return 1
        failures: dict[str, tuple[dict[str, Any], str]] = {}
        for subscription in targets:
            try:
                await self._deliver(store, subscription, event)
            except DeliveryFailed as exc:
                failures[str(subscription["id"])] = (subscription, str(exc))
            except Exception as exc:  # a fault of ours must not hold up the other subscriptions' events
                log.exception("Subscription/%s: delivery of event %s failed", subscription.get("id"), event.seq)
                failures[str(subscription["id"])] = (subscription, f"internal error: {type(exc).__name__}")
        mailed = await self._reviewer_mail(store, event)
        if not failures and mailed:
            await store.ack_event(CONSUMER, event.seq)
            return 1
        if event.attempts >= self.max_attempts:
            for subscription, reason in failures.values():
                await self._give_up(system, subscription, event, reason)
            await store.ack_event(CONSUMER, event.seq)
            return 1
        delay = min(MAX_BACKOFF, self.retry_seconds * 2 ** (event.attempts - 1))
        await store.defer_event(CONSUMER, event.seq, delay)
        for subscription, reason in failures.values():  # each failed attempt is audited, not only the last
            retry = f"{reason} (attempt {event.attempts}; retried in {delay:g} s)"
            await self._audit_failure(system, subscription, event, "4", retry)
        if failures:
            log.warning(
                "event %s: %d subscription(s) failed (attempt %d), retried in %.1f s",
                event.seq,
                len(failures),
                event.attempts,
                delay,
            )
        return 0

    async def _targets(self, system: Repository, event: OutboxEvent) -> list[dict[str, Any]] | None:
        """The Subscriptions an event may notify; None when it notifies nobody (acknowledged at once)."""
        if event.topic == NOTIFICATION:
            return await self._topic_subscriptions(system, WorkflowNotice.of(event.payload))
        resource_type = str(event.payload.get("type"))
        if event.topic not in TOPICS or resource_type in QUIET_TYPES:
            return None
        return await self._subscriptions(system, resource_type)

    async def _reviewer_mail(self, store: TenantStore, event: OutboxEvent) -> bool:
        """The reviewer emails of a workflow notification (``reviewer_mail``); False when one failed."""
        if event.topic != NOTIFICATION:
            return True
        try:
            last = event.attempts >= self.max_attempts
            await self.reviewers.send(store, WorkflowNotice.of(event.payload), event.seq, last_attempt=last)
        except DeliveryFailed as exc:
            log.warning("event %s: reviewer email failed (attempt %d): %s", event.seq, event.attempts, exc)
            return False
        return True

    async def _subscriptions(self, system: Repository, resource_type: str) -> list[dict[str, Any]]:
        """Active Subscriptions whose criteria name ``resource_type`` (``criteria`` is a string prefix search)."""
        found = await system.find(
            "Subscription", [("status", "active"), ("criteria", resource_type)], MAX_SUBSCRIPTIONS
        )
        return await self._live(system, [s.resource for s in found if _names(s.resource, resource_type)])

    async def _topic_subscriptions(self, system: Repository, notice: WorkflowNotice) -> list[dict[str, Any]]:
        """Active topic-based Subscriptions of the topics the workflow notification triggers (Backport IG)."""
        found: list[dict[str, Any]] = []
        for topic in topics.topics_for(notice):
            criteria = [("status", "active"), ("criteria", topic.canonical)]
            found += [s.resource for s in await system.find("Subscription", criteria, MAX_SUBSCRIPTIONS)
                      if s.resource.get("criteria") == topic.canonical]  # fmt: skip
        return await self._live(system, found)

    async def _live(self, system: Repository, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Those not past their ``end``; an external owner's whose grant lapsed is turned off."""
        now = self.clock()
        live = []
        for subscription in found:
            if reauthorisation_due(subscription, now):
                await self._turn_off(system, subscription, REAUTHORISE)
            elif not _ended(subscription, now):
                live.append(subscription)
        return live

    async def _turn_off(self, system: Repository, subscription: dict[str, Any], reason: str) -> None:
        log.warning("Subscription/%s turned off: %s", subscription["id"], reason)
        await _leave_active(system, subscription, "off", reason)

    async def _deliver(self, store: TenantStore, subscription: dict[str, Any], event: OutboxEvent) -> None:
        key = f"{subscription['id']}|{event.seq}"
        if await store.get_record(DELIVERED, key) is not None:
            return  # sent before this event came back (a crash or another subscription's retry)
        if await self._owner_revoked(subscription):
            return  # the client that wrote it was disabled or revoked its tokens since: its scopes are gone
        owner = Repository(store, owner_policy(subscription, store.name))
        topic = topics.topic_of(subscription)
        if topic is None:
            version = event.payload.get("version")
            found = await match(owner, _criteria(subscription), str(event.payload["id"]), version)
        else:
            found = await topics.focus_of(owner, subscription, WorkflowNotice.of(event.payload))
        if found is None:
            return
        context = self._context(store.name, subscription, found.resource)
        bundle, number = None, 0
        if topic is not None:
            number = await next_event_number(store, str(subscription["id"]))
            bundle = await self._bundle(store.name, owner, subscription, topic, number, found, event)
            context = replace(context, topic=topic.canonical)
        websocket = (subscription.get("channel") or {}).get("type") == "websocket"
        notification = Notification(key, subscription, context, bundle)
        done = FED if websocket else await self.channels.send(notification, store)
        async with store.transaction() as tx:  # the record of the send and its AuditEvent commit together
            if websocket:  # the API process holding the socket sends the ping (``feed``)
                await feed.publish(tx, str(subscription["id"]), event.seq, f"{context.resource_type}/{context.id}")
            await tx.put_record(Record(DELIVERED, key, b"{}", {"subscription": (str(subscription["id"]),)}))
            if number:
                await tx.put_record(event_count(str(subscription["id"]), number))
            if self.audit is not None:
                await self.audit.record_in(store, tx, self._audit_event(subscription, context, "0", done))
        if websocket:
            for listener in self.feed_listeners:
                listener(store.name, str(subscription["id"]))

    async def _bundle(
        self,
        tenant: str,
        owner: Repository,
        subscription: dict[str, Any],
        topic: topics.Topic,
        number: int,
        focus: Stored,
        event: OutboxEvent,
    ) -> dict[str, Any]:
        """The Backport IG notification Bundle: the case, and the review Task when the owner may read it."""
        notice = WorkflowNotice.of(event.payload)
        review = await topics.review_of(owner, notice)
        base = f"{self.public_base}/fhir/{tenant}"
        content = topics.payload_content(subscription)
        references = [focus, *([review] if review is not None else [])]
        return notification_bundle(base, str(subscription["id"]), topic, number, notice.at, content, references)

    async def _owner_revoked(self, subscription: dict[str, Any]) -> bool:
        """Token revocation carried over: a registered client disabled (or that revoked its tokens)
        after it last wrote the Subscription. External providers' subjects are not registered here."""
        client_id = owner_client_id(subscription)
        client = await self.clients.get(client_id) if self.clients is not None and client_id else None
        if client is None:
            return False
        written = datetime.fromisoformat(str(subscription["meta"]["lastUpdated"])).timestamp()
        return client.revokes(int(written))

    async def _give_up(self, system: Repository, subscription: dict[str, Any], event: OutboxEvent, reason: str) -> None:
        """subscription.html#errors: ``status`` = error, ``error`` = the last failure."""
        log.error(
            "Subscription/%s failed %d times; status set to error: %s", subscription["id"], event.attempts, reason
        )
        await _leave_active(system, subscription, "error", f"{reason} (after {event.attempts} attempts)")
        await self._audit_failure(system, subscription, event, "8", reason)

    async def _audit_failure(
        self, system: Repository, subscription: dict[str, Any], event: OutboxEvent, outcome: str, reason: str
    ) -> None:
        """A failed attempt (``4``, retried) or the last one (``8``, the Subscription is in error)."""
        if self.audit is not None:
            about = f"{event.payload.get('type')}/{event.payload.get('id')}"
            context = Context(system.tenant, "", "", about, str(subscription["id"]), {})
            await self.audit.record(system.store, self._audit_event(subscription, context, outcome, reason, about))

    def _context(self, tenant: str, subscription: dict[str, Any], resource: dict[str, Any]) -> Context:
        link = f"{self.public_base}/fhir/{tenant}/{resource['resourceType']}/{resource['id']}"
        return Context(
            tenant, str(resource["resourceType"]), str(resource["id"]), link, str(subscription["id"]), resource
        )

    @staticmethod
    def _audit_event(
        subscription: dict[str, Any], context: Context, outcome: str, description: str, about: str | None = None
    ) -> dict[str, Any]:
        channel = subscription.get("channel") or {}
        endpoint = str(channel.get("endpoint") or channel.get("type") or "")
        what = about or f"{context.resource_type}/{context.id}"
        return notification_event(
            str(subscription["id"]), owner_client(subscription), what, endpoint, outcome, description
        )


async def _leave_active(system: Repository, subscription: dict[str, Any], status: str, error: str) -> None:
    """subscription.html#errors: the server sets ``status`` (off / error) and the reason in ``error``."""
    current = await system.current("Subscription", str(subscription["id"]))
    if current is not None and current.get("status") == "active":
        updated = {**current, "status": status, "error": error}
        await system.update(updated, resource_type="Subscription", id=str(subscription["id"]))


def _criteria(subscription: dict[str, Any]) -> Criteria:
    return parse_criteria(subscription.get("criteria"))


def _ended(subscription: dict[str, Any], now: datetime) -> bool:
    """subscription.html: ``end`` is when the server stops delivering."""
    end = subscription.get("end")
    try:
        return isinstance(end, str) and datetime.fromisoformat(end) <= now
    except ValueError:
        return False


def _names(subscription: dict[str, Any], resource_type: str) -> bool:
    try:
        return _criteria(subscription).resource_type == resource_type
    except OperationOutcomeError:  # stored before activation checked it: never matches
        return False
