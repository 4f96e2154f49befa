"""What each ``dermbridge serve --role`` process runs.

Every role is stateless: what one process needs from another lives in the tenant databases (outbox
claims with leases, review claims, audit staging and signed heads, clients, API keys, client assertion
ids) or in the shared key directory, so any number of each role can run against one database and one
blob store (README "Running several processes"). ``all`` is the single process of ``make run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["all", "api", "dicom", "worker", "inference", "audit"]


@dataclass(frozen=True, slots=True)
class RolePlan:
    """The parts one process runs (each still subject to its own ``*_enabled`` setting)."""

    http_api: bool = False  # FHIR REST, DICOMweb, the token endpoint, Subscription websockets, conformance
    dimse: bool = False  # the DIMSE listener (C-STORE, C-FIND, C-GET, C-MOVE, C-ECHO)
    consumers: bool = False  # outbox consumers (workflow, consent watcher, outcomes linker), review sweep, retention
    subscriptions: bool = False  # Subscription delivery (rest-hook, email; websockets wake by polling)
    inference: bool = False  # the AI worker
    audit_loader: bool = False  # loads every tenant's staged AuditEvents and signs the heads, on a timer

    @property
    def workers(self) -> tuple[str, ...]:
        """The background parts /readyz expects running (names as in ``Readiness``)."""
        parts = (("consumers", self.consumers), ("subscriptions", self.subscriptions), ("inference", self.inference),
                 ("audit-loader", self.audit_loader), ("dimse", self.dimse))  # fmt: skip
        return tuple(name for name, on in parts if on)


PLANS: dict[str, RolePlan] = {
    "all": RolePlan(http_api=True, dimse=True, consumers=True, subscriptions=True, inference=True),
    "api": RolePlan(http_api=True),
    "dicom": RolePlan(dimse=True),
    "worker": RolePlan(consumers=True, subscriptions=True),
    "inference": RolePlan(inference=True),
    "audit": RolePlan(audit_loader=True),
}


def plan_for(role: str) -> RolePlan:
    return PLANS[role]
