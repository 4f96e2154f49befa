"""Email to the reviewers of a tier when an urgent review opens (issue 14, "Notifications": email,
suppression and preferences, every send audited).

Opt-in per tenant (``reviewer_email`` in the notify settings, ``fhir_server.notify.config``): on a
``review-opened`` notification whose urgency the settings name, each Practitioner eligible for the tier now
(``workflow.review.roster``) gets one email from the ``reviewer_email`` template (by default a link to the
review Task, which needs a token to read: no clinical content), unless their address is suppressed or their
preference turns email off. Exactly once per (event, reviewer) as the subscription worker's own sends: a
delivery record written with its AuditEvent after the send, skipped on a redelivered event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.audit.events import ENTITY_TYPE
from fhir_server.audit.trail import AuditTrail
from fhir_server.notify.config import ReviewerEmail, TenantNotifications, tenant_notifications
from fhir_server.notify.templates import Context
from fhir_server.repository import Repository
from fhir_server.storage.port import Record, TenantStore
from fhir_server.subscriptions.audit import notification_event
from fhir_server.subscriptions.channels import Channels, DeliveryFailed
from fhir_server.workflow.events import Notification
from fhir_server.workflow.review.policy import read_policy
from fhir_server.workflow.review.roster import Contact, eligible_reviewers

DELIVERED = "subscription-delivered"  # the worker's delivery records: one idempotency ledger
OWNER = "tenant notify settings: reviewer_email"


class ReviewerMail:
    """Sends the reviewer emails of one notification through the worker's ``Channels``."""

    def __init__(self, channels: Channels, public_base: str, audit: AuditTrail | None) -> None:
        self.channels = channels
        self.public_base = public_base.rstrip("/")
        self.audit = audit

    async def send(self, store: TenantStore, notice: Notification, seq: int, *, last_attempt: bool) -> None:
        """Email each eligible reviewer once; ``DeliveryFailed`` when any send failed (the event is retried)."""
        if notice.event != "review-opened":
            return
        settings = await tenant_notifications(store, store.name, self.channels.config)
        wanted = settings.reviewer_email
        if wanted is None or str(notice.extra.get("urgency")) not in wanted.urgencies:
            return
        system = Repository.system(store, reason="reviewer email: eligibility")
        tier = str(notice.extra.get("tier") or "")
        failed = []
        for contact in await eligible_reviewers(system, tier, await read_policy(store), datetime.now(UTC)):
            try:
                await self._one(store, settings, wanted, contact, notice, seq)
            except DeliveryFailed as exc:
                failed.append(str(exc))
                await self._audit(store, contact, notice, "8" if last_attempt else "4", str(exc))
        if failed:
            raise DeliveryFailed("; ".join(failed))

    async def _one(
        self,
        store: TenantStore,
        settings: TenantNotifications,
        wanted: ReviewerEmail,
        contact: Contact,
        notice: Notification,
        seq: int,
    ) -> None:
        key = f"review-email|{contact.practitioner}|{seq}"
        if await store.get_record(DELIVERED, key) is not None:
            return
        review = str(notice.extra.get("review") or "")
        link = f"{self.public_base}/fhir/{store.name}/Task/{review}"
        report = await Repository.system(store, reason="reviewer email").current("DiagnosticReport", notice.report)
        context = Context(store.name, "Task", review, link, "", report or {})
        done = await self.channels.email(settings, wanted.template, contact.email, context, key)
        async with store.transaction() as tx:
            await tx.put_record(Record(DELIVERED, key, b"{}", {}))
            if self.audit is not None:
                await self.audit.record_in(store, tx, reviewer_email_event(contact, notice, "0", done))

    async def _audit(self, store: TenantStore, contact: Contact, notice: Notification, outcome: str, why: str) -> None:
        if self.audit is not None:
            await self.audit.record(store, reviewer_email_event(contact, notice, outcome, why))


def reviewer_email_event(contact: Contact, notice: Notification, outcome: str, description: str) -> dict[str, Any]:
    """The AuditEvent of one reviewer email: the Practitioner and the review Task, references only."""
    about = f"Task/{notice.extra.get('review')}"
    event = notification_event("", OWNER, about, f"mailto:{contact.email}", outcome, description)
    event["entity"][0] = {"what": {"reference": contact.practitioner}, "type": {"system": ENTITY_TYPE, "code": "1"}}
    return event
