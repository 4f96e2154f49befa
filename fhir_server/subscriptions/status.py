"""``$status`` of a topic-based Subscription (Subscriptions Backport IG STU 1.1, OperationDefinition
``backport-subscription-status``): ``GET [base]/Subscription/[id]/$status`` answers a ``searchset`` Bundle
holding one ``Parameters`` SubscriptionStatus (profile ``backport-subscription-status-r4``, ``type``
``query-status``): the Subscription, its topic, its status, ``events-since-subscription-start`` and, when it
is in error, the error. The caller must be able to read the Subscription (404 otherwise, as a read);
a criteria-based (non-topic) Subscription has no topic to report: 422.
"""

from __future__ import annotations

from typing import Any

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.errors import unprocessable
from fhir_server.operation_definitions import operation_definition, parameter, returns
from fhir_server.repository import Repository
from fhir_server.subscriptions.topic_bundle import STATUS_PROFILE, delivered_count
from fhir_server.subscriptions.topics import topic_of

STATUS_DEFINITION = operation_definition(
    "status",
    level="instance",
    resource=("Subscription",),
    affects_state=False,
    id="backport-subscription-status",  # the Backport IG's, so its canonical resolves against the server's base
    url="http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
    description="The status of a topic-based Subscription (Subscriptions Backport IG): a Bundle with one "
    "SubscriptionStatus Parameters of type query-status.",
    parameters=[parameter("id", "in", "id"), returns("Bundle")],
)


async def subscription_status(
    repo: Repository, request: FhirRequest, _type: str | None, id: str | None
) -> FhirResponse:
    """The handler of ``Subscription/[id]/$status``."""
    assert id is not None
    subscription = (await repo.read("Subscription", id)).resource
    topic = topic_of(subscription)
    if topic is None:
        raise unprocessable(f"Subscription/{id} is not topic-based: $status reports a topic's notifications")
    reference = f"{repo.local_base}/Subscription/{id}" if repo.local_base else f"Subscription/{id}"
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": reference}},
        {"name": "topic", "valueCanonical": topic.canonical},
        {"name": "status", "valueCode": subscription.get("status")},
        {"name": "type", "valueCode": "query-status"},
        {"name": "events-since-subscription-start", "valueString": str(await delivered_count(repo.store, id))},
    ]
    if subscription.get("error"):
        parameters.append({"name": "error", "valueCodeableConcept": {"text": str(subscription["error"])}})
    status = {"resourceType": "Parameters", "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters}
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [{"resource": status, "search": {"mode": "match"}}],
    }
    return FhirResponse(200, bundle)
