"""Topic-based Subscriptions in R4: the Subscriptions R5 Backport IG (STU 1.1,
http://hl7.org/fhir/uv/subscriptions-backport, "R4 Topic-Based Subscription"; profile ``backport-subscription``).

``Subscription.criteria`` is a topic's canonical URL (``urn:dermbridge:topic:urgent-finding``). R4 has no
SubscriptionTopic resource: the topics are the server's catalogue below, advertised in the
CapabilityStatement (``capabilitystatement-subscriptiontopic-canonical`` on ``rest.resource`` Subscription,
as the IG's R4 server example does) and documented in the README. Every topic is about a case: its focus is
the case's ``DiagnosticReport``, and it fires on the workflow's ``workflow.notification`` outbox events.

- Filters: ``Subscription._criteria.extension`` ``backport-filter-criteria`` (``valueString``, a search on
  the focus, ``DiagnosticReport?patient=Patient/123``); several are combined (AND). Checked at activation
  as a search the writer may run (400 unknown parameter, 403 out of its scopes).
- Payload: ``channel._payload.extension`` ``backport-payload-content`` ``empty`` | ``id-only`` (default) |
  ``full-resource``; a rest-hook's ``payload`` is ``application/fhir+json`` (the notification Bundle,
  ``topic_bundle``) or ``application/json`` (the tenant's Slack-style webhook text).
- Access: a notification is sent only when the focus matches the filters *as the Subscription's owner*
  (``owner.owner_policy``): the real search engine, ``_id`` added, so a ``patient/`` token's Subscription
  never hears of another patient's case, exactly as criteria Subscriptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.errors import unprocessable
from fhir_server.repository import Repository, Stored
from fhir_server.subscriptions.criteria import Criteria, check_criteria, match, parse_criteria
from fhir_server.workflow.events import SIGNED_OFF, Notification

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
SUBSCRIPTION_PROFILE = BACKPORT + "backport-subscription"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
TOPIC_CANONICAL = BACKPORT + "capabilitystatement-subscriptiontopic-canonical"
PREFIX = "urn:dermbridge:topic:"
FOCUS = "DiagnosticReport"
CONTENTS = ("empty", "id-only", "full-resource")
DEFAULT_CONTENT = "id-only"
URGENT = ("stat", "asap", "urgent")  # request-priority codes the review queue gives a malignancy suspicion
MAX_FILTERS = 8
REST_HOOK_PAYLOADS = ("application/fhir+json", "application/json")


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic: the workflow notification events that trigger it (and, for urgent ones, only urgent reviews)."""

    code: str
    title: str
    description: str
    events: tuple[str, ...]
    urgent_only: bool = False

    @property
    def canonical(self) -> str:
        return PREFIX + self.code

    def fires(self, notice: Notification) -> bool:
        if notice.event not in self.events:
            return False
        return not self.urgent_only or str(notice.extra.get("urgency")) in URGENT


CATALOGUE = (
    Topic(
        "urgent-finding",
        "Urgent finding",
        "A case's review opened as urgent (priority stat, asap or urgent): the AI suspects a malignancy "
        "(melanoma or SCC: asap, the 2-week wait).",
        ("review-opened",),
        urgent_only=True,
    ),
    Topic(
        "review-opened", "Review opened", "A case's review Task was opened, or made more urgent.", ("review-opened",)
    ),
    Topic(
        "escalated",
        "Escalated",
        "The flow sent the case to a human (risk, uncertainty, unsuitable image).",
        ("escalated",),
    ),
    Topic(
        "case-finalised",
        "Case finalised",
        "The case has its outcome: a clinician signed it off (the report is final) or the AI discharged it.",
        (SIGNED_OFF, "discharged"),
    ),
    Topic(
        "discharged", "Discharged by the AI", "The AI closed the case alone (autonomous discharge).", ("discharged",)
    ),
    Topic("refused", "Refused", "No workflow definition applies to the case: nothing runs.", ("refused",)),
    Topic("stored", "Stored", "A store-only flow stored the case's images.", ("stored",)),
)
BY_CANONICAL = {t.canonical: t for t in CATALOGUE}


def looks_like_topic(criteria: object) -> bool:
    """A canonical URL rather than a search (``Type?...``): a topic-based Subscription."""
    return isinstance(criteria, str) and (criteria.startswith(("urn:", "http:", "https:")))


def topic_of(subscription: dict[str, Any]) -> Topic | None:
    return BY_CANONICAL.get(str(subscription.get("criteria") or ""))


def topics_for(notice: Notification) -> list[Topic]:
    return [t for t in CATALOGUE if t.fires(notice)]


def check_topic_subscription(repo: Repository, body: dict[str, Any]) -> None:
    """The topic is one of ours, the filters a search on the focus its writer may run, the content known."""
    topic = topic_of(body)
    if topic is None:
        known = ", ".join(BY_CANONICAL)
        raise unprocessable(
            f"unknown topic {str(body.get('criteria'))[:200]!r}; known: {known}", ["Subscription.criteria"]
        )
    check_criteria(repo, filters(body))
    payload_content(body)
    channel = body.get("channel") or {}
    if channel.get("type") == "rest-hook" and channel.get("payload") not in REST_HOOK_PAYLOADS:
        raise unprocessable(
            "a topic-based rest-hook Subscription has channel.payload application/fhir+json (the notification "
            "Bundle) or application/json (a chat webhook)",
            ["Subscription.channel.payload"],
        )


def filters(subscription: dict[str, Any]) -> Criteria:
    """The ``backport-filter-criteria`` searches on the focus, combined; 422 when one is not a focus search."""
    texts = [
        e.get("valueString")
        for e in ((subscription.get("_criteria") or {}).get("extension") or [])
        if isinstance(e, dict) and e.get("url") == FILTER_CRITERIA
    ]
    if len(texts) > MAX_FILTERS:
        raise unprocessable(f"at most {MAX_FILTERS} filter criteria", ["Subscription.criteria"])
    params: list[tuple[str, str]] = []
    for text in texts:
        parsed = parse_criteria(text)
        if parsed.resource_type != FOCUS:
            raise unprocessable(
                f"a filter criteria of these topics is a {FOCUS} search ({FOCUS}?patient=Patient/123)",
                ["Subscription.criteria"],
            )
        params.extend(parsed.params)
    return Criteria(FOCUS, tuple(params))


def payload_content(subscription: dict[str, Any]) -> str:
    """``backport-payload-content`` of the channel's payload (absent: ``id-only``); 422 when unknown."""
    extensions = ((subscription.get("channel") or {}).get("_payload") or {}).get("extension") or []
    codes = [e.get("valueCode") for e in extensions if isinstance(e, dict) and e.get("url") == PAYLOAD_CONTENT]
    content = codes[0] if codes else DEFAULT_CONTENT
    if content not in CONTENTS:
        raise unprocessable(
            f"payload content {str(content)[:40]!r} is not one of {', '.join(CONTENTS)}",
            ["Subscription.channel.payload"],
        )
    return str(content)


async def focus_of(owner: Repository, subscription: dict[str, Any], notice: Notification) -> Stored | None:
    """The case as the owner sees it when it matches the filters (the real search engine), else None."""
    return await match(owner, filters(subscription), notice.report)


async def review_of(owner: Repository, notice: Notification) -> Stored | None:
    """The review Task the notice is about, when the owner may read it (``additional-context``)."""
    review = str(notice.extra.get("review") or "")
    return await match(owner, Criteria("Task", ()), review) if review else None
