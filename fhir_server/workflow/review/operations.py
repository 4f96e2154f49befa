"""The review queue's operations on Task (operations.html), and the guard that keeps plain writes out.

- ``POST Task/{id}/$claim``, ``$release``, ``$decline`` (``reason`` a code of
  ``urn:dermbridge:review-decline-reason``, optional ``note``) and ``$complete`` (``decision`` and its
  parameters, ``fhir_server.workflow.review.decision``) move a review Task through its state machine
  (``fhir_server.workflow.review.transitions``); an illegal move is 409. Each answers the Task. A decline
  that exhausts a tier opens the case's review in the tier the policy escalates it to (``escalate_to``).
- ``GET Task/$worklist`` (``tier``, ``_count``): the caller's queue, a searchset Bundle of the Tasks of the
  tiers they may review that they may claim (queued, or a lapsed claim) or hold, most urgent first
  (``priority`` stat, asap, urgent, routine), then the earliest due date, then the oldest. FHIR R4 cannot
  ``_sort`` a token by its meaning, so the order is the operation's.
- A client's PUT, PATCH, POST or DELETE (also in a Bundle) that would move, make or delete a review Task is
  refused with 409 naming the operations (``fhir_server.workflow.review.guard``, a managed-content rule).

The caller needs update scope on Task and a fhirUser Practitioner eligible for the Task's tier
(``fhir_server.workflow.review.reviewer``); ``$complete`` also needs update on DiagnosticReport and create on
Observation. Writes go through the request's store, so the interaction's AuditEvent commits with them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_server import managed_content
from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.parameters import named_values, one_of
from fhir_server.api.router import FhirRouter, Operation
from fhir_server.errors import OperationOutcomeError, bad_request, conflict, unprocessable
from fhir_server.limits import whole_number
from fhir_server.repository import Repository, Stored
from fhir_server.workflow.events import NOTIFICATION, SIGNED_OFF, Notification
from fhir_server.workflow.review import transitions
from fhir_server.workflow.review.codes import (
    DECIDED,
    TIER_EXHAUSTED,
    TIER_SYSTEM,
    URGENCIES,
    is_review_task,
    state_of,
)
from fhir_server.workflow.review.codes import tier_of as task_tier
from fhir_server.workflow.review.decision import decide
from fhir_server.workflow.review.definitions import (
    CLAIM_DEFINITION,
    COMPLETE_DEFINITION,
    DECLINE_DEFINITION,
    RELEASE_DEFINITION,
    WORKLIST_DEFINITION,
)
from fhir_server.workflow.review.guard import review_state_rule
from fhir_server.workflow.review.policy import TIER_PATTERN, ReviewPolicy, read_policy
from fhir_server.workflow.review.queue import open_review
from fhir_server.workflow.review.reviewer import Reviewer, identify
from fhir_server.workflow.review.sweep import return_lapsed_claims

Clock = Callable[[], datetime]
Change = Callable[["Move"], Awaitable[dict[str, Any]]]
MAX_TIER = 64  # a tier parameter beyond this, or not a tier name, is refused (never echoed back)
MAX_WORKLIST = 1000
DEFAULT_COUNT = 50


def utc_now() -> datetime:
    return datetime.now(UTC)


class ReviewOperations:
    """The operation handlers; ``clock`` is injectable so tests move time instead of waiting."""

    def __init__(self, clock: Clock = utc_now) -> None:
        self.clock = clock

    def register(self, router: FhirRouter) -> None:
        for name, handler, definition in (
            ("claim", self.claim, CLAIM_DEFINITION),
            ("release", self.release, RELEASE_DEFINITION),
            ("decline", self.decline, DECLINE_DEFINITION),
            ("complete", self.complete, COMPLETE_DEFINITION),
        ):
            router.register(Operation(name, ("Task",), True, handler, definition, True, "u"))
        router.register(Operation("worklist", ("Task",), False, self.worklist, WORKLIST_DEFINITION, False, "s"))
        managed_content.register("Task", review_state_rule)

    async def claim(self, repo: Repository, request: FhirRequest, _type: str | None, id: str | None) -> FhirResponse:
        return await self._transition(repo, request, id, "claim", _claim)

    async def release(self, repo: Repository, request: FhirRequest, _type: str | None, id: str | None) -> FhirResponse:
        return await self._transition(repo, request, id, "release", _release)

    async def decline(self, repo: Repository, request: FhirRequest, _type: str | None, id: str | None) -> FhirResponse:
        return await self._transition(repo, request, id, "decline", _decline)

    async def complete(self, repo: Repository, request: FhirRequest, _type: str | None, id: str | None) -> FhirResponse:
        repo.policy.require("DiagnosticReport", "u")
        repo.policy.require("Observation", "c")
        return await self._transition(repo, request, id, "complete", _complete)

    async def _transition(
        self, repo: Repository, request: FhirRequest, id: str | None, name: str, change: Change
    ) -> FhirResponse:
        """Read the Task, check the reviewer may review its tier, apply ``change`` and write it back in one
        transaction (conditional on the version read: a concurrent move makes this one 409)."""
        assert id is not None
        given = named_values(request)
        now = self.clock()
        policy = await read_policy(repo.store)
        reviewer = await identify(repo, request.access, policy, now)
        async with repo.store.transaction() as tx:
            current = await repo.within(tx).read("Task", id)
            if not is_review_task(current.resource):
                raise unprocessable(f"Task/{id} is not a review Task (code {TIER_SYSTEM}|<tier>)")
            reviewer.check(task_tier(current.resource))
            system = Repository.system(repo.store, reason=f"${name} on Task/{id}", local_base=repo.local_base, tx=tx)
            move = Move(system, current.resource, reviewer, policy, now, given)
            changed = await change(move)
            try:
                stored = await system.update(
                    changed, resource_type="Task", id=id, if_match=current.etag, server_built=True
                )
            except OperationOutcomeError as error:
                if error.status != 412:
                    raise
                raise conflict(f"Task/{id} was changed by someone else meanwhile: read it again") from error
        return FhirResponse(200, stored.resource, {"ETag": stored.etag})

    async def worklist(
        self, repo: Repository, request: FhirRequest, _type: str | None, _id: str | None
    ) -> FhirResponse:
        given = named_values(request)
        now = self.clock()
        reviewer = await identify(repo, request.access, await read_policy(repo.store), now)
        tiers = sorted(reviewer.tiers)
        wanted = one_of(given, "tier")
        if wanted is not None:
            if not isinstance(wanted, str) or len(wanted) > MAX_TIER or not TIER_PATTERN.match(wanted):
                raise bad_request(
                    f"tier is a tier name ({TIER_PATTERN.pattern}, at most {MAX_TIER} characters)", ["tier"]
                )
            reviewer.check(str(wanted))
            tiers = [str(wanted)]
        count = whole_number(request.param("_count") or str(DEFAULT_COUNT), "_count", 4) or DEFAULT_COUNT
        mine, whole = await _offered_by_urgency(repo, tiers, reviewer, now, count) if tiers else ([], True)
        listed = [await _returned(repo, s, now) for s in sorted(mine, key=_queue_order)[: min(count, MAX_WORKLIST)]]
        entries = [
            {
                "fullUrl": f"{request.base_url}/Task/{s.resource['id']}",
                "resource": s.resource,
                "search": {"mode": "match"},
            }
            for s in listed
        ]
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
        if whole:  # a queue longer than one search's worth is listed by urgency band: no exact count (optional)
            bundle["total"] = len(mine)
        return FhirResponse(200, bundle)


async def _escalate(system: Repository, task: dict[str, Any], policy: ReviewPolicy, now: datetime) -> None:
    """An exhausted tier hands the case to the tier the policy escalates it to, if any (same urgency)."""
    tier = task_tier(task)
    following = policy.tier(tier).escalate_to
    if state_of(task) != TIER_EXHAUSTED or following is None:
        return
    report = str(task["focus"]["reference"]).split("/", 1)[1]
    patient = str(task["for"]["reference"]).split("/", 1)[1]
    reason = f"escalated: review tier {tier} exhausted"
    opened = await open_review(system, report_id=report, patient_id=patient, tier=following,
                               urgency=task.get("priority", "routine"), reason=reason, due=None, now=now)  # fmt: skip
    extra = {"urgency": str(opened.resource.get("priority")), "tier": following, "review": str(opened.resource["id"])}
    await _announce(system, Notification("review-opened", report, patient, "", reason, extra))


@dataclass(frozen=True, slots=True)
class Move:
    """What a transition works with: the system context in the request's transaction, the Task, who moves
    it under which policy, when, and the operation's parameters."""

    system: Repository
    task: dict[str, Any]
    reviewer: Reviewer
    policy: ReviewPolicy
    now: datetime
    given: list[tuple[str, Any]]


async def _claim(move: Move) -> dict[str, Any]:
    return transitions.claim(move.task, move.reviewer.reference(), move.now, move.now + move.policy.lease())


async def _release(move: Move) -> dict[str, Any]:
    return transitions.release(move.task, move.reviewer.reference(), move.now)


async def _decline(move: Move) -> dict[str, Any]:
    reason, note = one_of(move.given, "reason"), one_of(move.given, "note")
    if isinstance(reason, dict):  # a Coding
        reason = reason.get("code")
    if note is not None and (not isinstance(note, str) or len(note) > 1000):
        raise bad_request("note is a string of at most 1000 characters", ["note"])
    who = move.reviewer.reference()
    declined = transitions.decline(move.task, who, str(reason), note or "", move.now, move.policy.max_declines)
    await _escalate(move.system, declined, move.policy, move.now)
    return declined


async def _complete(move: Move) -> dict[str, Any]:
    who = move.reviewer.reference()
    transitions.complete(move.task, who, move.now, "decided", [])  # refuses before anything is written
    decision = await decide(move.system, move.task, move.reviewer, move.given, move.now)
    if decision.state == DECIDED:  # the case is final: its subscribers hear it with the decision's commit
        await _signed_off(move.system, move.task, who["reference"])
    return transitions.complete(move.task, who, move.now, decision.state, decision.outputs)


async def _signed_off(system: Repository, task: dict[str, Any], who: str) -> None:
    report = str(task["focus"]["reference"]).removeprefix("DiagnosticReport/")
    patient = str((task.get("for") or {}).get("reference") or "").removeprefix("Patient/")
    await _announce(system, Notification(SIGNED_OFF, report, patient, "", f"signed off by {who}",
                                         {"review": str(task["id"])}))  # fmt: skip


async def _announce(system: Repository, message: Notification) -> None:
    """A ``workflow.notification`` committed with the move (topic Subscriptions, reviewer email)."""
    assert system.transaction is not None
    await system.transaction.append_event(NOTIFICATION, message.payload())


async def _offered_by_urgency(
    repo: Repository, tiers: list[str], reviewer: Reviewer, now: datetime, count: int
) -> tuple[list[Stored], bool]:
    """The Tasks of ``tiers`` offered to the reviewer, read band by band of ``priority`` (most urgent first;
    in a band the oldest first, at most ``MAX_WORKLIST``) until ``MAX_WORKLIST`` Tasks were read and ``count``
    offered: a queue longer than one search never hides a newer urgent case behind older routine ones.
    True with them when every band was read whole (the count of offered Tasks is exact)."""
    codes = ",".join(f"{TIER_SYSTEM}|{t}" for t in tiers)
    offered: list[Stored] = []
    read, whole = 0, True
    for priority in URGENCIES:
        if read >= MAX_WORKLIST and len(offered) >= count:
            return offered, False
        criteria = [("code", codes), ("status", "requested,in-progress"), ("priority", priority)]
        band = await repo.find("Task", [*criteria, ("_sort", "authored-on")], MAX_WORKLIST)
        read += len(band)
        whole = whole and len(band) < MAX_WORKLIST
        offered += [s for s in band if _offered(s.resource, reviewer, now)]
    return offered, whole


def _offered(task: dict[str, Any], reviewer: Reviewer, now: datetime) -> bool:
    if reviewer.practitioner in transitions.declined_by(task):
        return False
    if task.get("status") == "requested" or transitions.lapsed(task, now):
        return True
    return transitions.owner(task) == reviewer.practitioner


def _queue_order(stored: Stored) -> tuple[int, str, str]:
    task = stored.resource
    rank = URGENCIES.index(task["priority"]) if task.get("priority") in URGENCIES else len(URGENCIES)
    due = str(((task.get("restriction") or {}).get("period") or {}).get("end") or "9999")
    return rank, due, str(task.get("authoredOn") or "")


async def _returned(repo: Repository, stored: Stored, now: datetime) -> Stored:
    """A lapsed claim, written back to the queue as it is listed (another process may have done it: kept)."""
    queued = transitions.lapse(stored.resource, now)
    if queued is None:
        return stored
    system = Repository.system(repo.store, reason="return a lapsed review claim", local_base=repo.local_base)
    try:
        return await system.update(
            queued, resource_type="Task", id=queued["id"], if_match=stored.etag, server_built=True
        )
    except OperationOutcomeError:
        return Stored(queued, stored.version)


async def return_lapsed(repo: Repository, now: datetime, limit: int = MAX_WORKLIST) -> int:
    """A sweep of the repository's tenant (``fhir_server.workflow.review.sweep``, which the server runs on a
    schedule): how many lapsed claims this call returned to the queue."""
    return len(await return_lapsed_claims(repo.store, now, None, limit))
