"""The OperationDefinitions of the review queue's operations on Task (operationdefinition.html), built by
``fhir_server.operation_definitions`` like every other operation of the server."""

from __future__ import annotations

from fhir_server.operation_definitions import operation_definition, parameter, returns
from fhir_server.workflow.review.codes import DECISIONS, DECLINE_REASONS

CLAIM_DEFINITION = operation_definition(
    "claim",
    level="instance",
    resource=("Task",),
    description="Claims a queued review Task (or renews the caller's own claim): status in-progress, owner the "
    "caller's Practitioner (the token's fhirUser), a lease ending at the urn:dermbridge:review-lease-end extension.",
    parameters=[returns("Task")],
)
RELEASE_DEFINITION = operation_definition(
    "release",
    level="instance",
    resource=("Task",),
    description="Gives the caller's claimed review Task back to the queue.",
    parameters=[returns("Task")],
)
DECLINE_DEFINITION = operation_definition(
    "decline",
    level="instance",
    resource=("Task",),
    description=f"Declines a review Task with a coded reason ({', '.join(DECLINE_REASONS)}): it returns to the "
    "queue; after the tenant's max_declines (default 3) the tier is exhausted (status rejected, businessStatus "
    "tier-exhausted) and the case goes to the tier the policy escalates to.",
    parameters=[parameter("reason", "in", "code", min=1), parameter("note", "in", "string"), returns("Task")],
)
COMPLETE_DEFINITION = operation_definition(
    "complete",
    level="instance",
    resource=("Task",),
    description=f"Records the claimed review's decision ({', '.join(DECISIONS)}): the clinician's findings beside "
    "the AI's, the case final with resultsInterpreter, a Provenance naming the verifier.",
    parameters=[
        parameter("decision", "in", "code", min=1),
        parameter(
            "finding",
            "in",
            max="*",
            part=[
                parameter("lesion", "in", "Reference", min=1),
                parameter("diagnosis", "in", "CodeableConcept", min=1),
                parameter("urgency", "in", "code"),
                parameter("note", "in", "string"),
            ],
        ),
        parameter("conclusion", "in", "string"),
        parameter("reason", "in", "string"),
        returns("Task"),
    ],
)
WORKLIST_DEFINITION = operation_definition(
    "worklist",
    level="type",
    resource=("Task",),
    affects_state=False,
    description="The caller's review queue: the Tasks of the tiers they may review that they may claim or hold, "
    "most urgent first (priority), then the earliest due date, then the oldest.",
    parameters=[parameter("tier", "in", "code"), returns("Bundle")],
)
