"""What one caller may do in one tenant: the single place access decisions are made.

The ``Repository`` holds an ``AccessPolicy`` and consults it on every read, search (each type a
chain or ``_has`` crosses too), include and write, the way Medplum's repository asks
``canReadResourceType``/``canWriteResourceType``. A policy comes from a verified access token's
SMART App Launch v2 scopes (scopes-and-launch-context.html), or is the named system context of an
internal caller (``AccessPolicy.system``): DICOM ingest, the inference worker, erasure. There is no
unnamed privileged policy.

Under a ``patient/`` scope a resource is visible when its launch patient owns it (its
subject/patient reference: ``fhir_server.search.membership.owners``), and a write is accepted only
when the launch patient is its one owner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from fhir_server.errors import OperationOutcomeError, forbidden
from fhir_server.report_sign_off import SIGNED_STATUSES
from fhir_server.search.membership import owner_clause, owners
from fhir_server.security.scopes import Access, Permission
from fhir_server.storage.query import AnyClause, ChainMatch, Clause, HasClause, Match, ParamClause, SearchQuery

Decision = Literal["all", "patient", "none"]
SERVER_RECORDS = frozenset({"AuditEvent"})  # never written under a patient/ scope (BALP: the record of others' acts)
VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


# what a DICOMweb DELETE does on the FHIR side: the study, the images' Media, the reports and results citing them
DICOM_DELETION_RIGHTS: tuple[tuple[str, Permission], ...] = (
    ("ImagingStudy", "d"),
    ("Media", "d"),
    ("DiagnosticReport", "u"),
    ("Observation", "u"),
)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The scopes of one caller; ``access`` None only in the named system context (``system_reason``)."""

    access: Access | None
    system_reason: str | None = None

    @classmethod
    def of(cls, access: Access) -> AccessPolicy:
        """The policy of a verified access token."""
        return cls(access)

    @classmethod
    def system(cls, reason: str) -> AccessPolicy:
        """Full privilege for an internal caller, which must say why (kept for logs and reviews)."""
        if not reason.strip():
            raise ValueError("a system context names its reason")
        return cls(None, reason)

    @classmethod
    def nobody(cls) -> AccessPolicy:
        """No scope at all (a request without a valid token)."""
        return cls(Access("", "(not authenticated)", ()))

    def __post_init__(self) -> None:
        if self.access is None and not self.system_reason:
            raise ValueError("an AccessPolicy without a token is the named system context: AccessPolicy.system(...)")

    @property
    def patient(self) -> str | None:
        """The launch patient of ``patient/`` scopes."""
        return self.access.patient if self.access is not None else None

    def decide(self, resource_type: str, permission: Permission) -> Decision:
        """``all``: any instance; ``patient``: only what the launch patient owns; ``none``."""
        return "all" if self.access is None else self.access.decide(resource_type, permission)

    def can(self, resource_type: str, permission: Permission) -> bool:
        return self.decide(resource_type, permission) != "none"

    def can_search(self, resource_type: str) -> bool:
        """Whether a search of ``resource_type`` can run: granted, and under a patient/ scope owned by patients."""
        decision = self.decide(resource_type, "s")
        if decision == "patient":
            assert self.patient is not None
            return owner_clause(resource_type, self.patient) is not None
        return decision != "none"

    def require(self, resource_type: str, permission: Permission) -> Decision:
        """The decision, or 403 when no scope grants ``permission`` on ``resource_type``."""
        decision = self.decide(resource_type, permission)
        if decision == "none":
            raise forbidden(f"the access token's scopes do not allow {VERBS[permission]} on {resource_type}")
        return decision

    def owns(self, resource: dict[str, Any]) -> bool:
        """Whether the launch patient owns ``resource``."""
        return self.patient is not None and self.patient in owners(resource)

    def may(self, resource: dict[str, Any], permission: Permission = "r") -> bool:
        """Whether ``permission`` holds on this very resource (used to filter what a search adds)."""
        decision = self.decide(str(resource.get("resourceType")), permission)
        return decision == "all" or (decision == "patient" and self.owns(resource))

    def check_write(self, resource_type: str, resource: dict[str, Any], permission: Permission) -> Decision:
        """403 unless ``permission`` holds on the type and, under ``patient/``, the patient is the one owner."""
        decision = self.require(resource_type, permission)
        if decision == "patient" and resource_type in SERVER_RECORDS:
            raise forbidden(f"a patient/ scope cannot write {resource_type}: the audit trail records who did what")
        if resource_type == "DiagnosticReport":
            self._signs_as_self(resource)
        if decision == "patient" and owners({**resource, "resourceType": resource_type}) != {self.patient}:
            raise forbidden(
                "a patient/ scope writes only its patient's own record: the subject/patient reference "
                f"must be Patient/{self.patient} and no other patient"
            )
        return decision

    def _signs_as_self(self, report: dict[str, Any]) -> None:
        """A user (a token with ``fhirUser``) who makes a report final, amended or corrected signs it in their
        own name: ``resultsInterpreter`` names them (a reviewer cannot sign as another clinician). A system
        client (an EHR interface) has no ``fhirUser`` and signs for whom it says."""
        user = self.access.fhir_user if self.access is not None else None
        if not user or report.get("status") not in SIGNED_STATUSES:
            return
        named = {str(r.get("reference", "")) for r in report.get("resultsInterpreter") or [] if isinstance(r, dict)}
        if user not in named:
            raise forbidden(
                f"a report is signed off in the signer's own name: resultsInterpreter must name {user}, the user "
                "of this token"
            )

    # -- DICOM objects (DICOMweb, PS3.18) ------------------------------------------------------
    def read_dicom(self, permission: Permission) -> Decision:
        """Reading DICOM objects (QIDO-RS ``s``, WADO-RS ``r``): an object carries its Patient module
        (PS3.3 C.7.1.1: name, birth date, sex), so it needs ``permission`` on ImagingStudy and read on
        Patient; the narrower decision of the two (``patient``: the launch patient's studies only)."""
        study, person = self.require("ImagingStudy", permission), self.require("Patient", "r")
        return "patient" if "patient" in (study, person) else "all"

    def store_dicom(self) -> None:
        """Storing DICOM objects (STOW-RS): create on ImagingStudy under a user/ or system/ scope. The
        object's PatientID, not the token, decides whose record it joins, so a patient/ scope cannot store."""
        if self.require("ImagingStudy", "c") == "patient":
            raise forbidden("STOW-RS needs a user/ or system/ scope on ImagingStudy: a patient/ scope cannot store")

    def delete_dicom(self) -> None:
        """Deleting DICOM objects (DICOMweb DELETE of a study, series or instance): delete on ImagingStudy
        under a user/ or system/ scope; like storing, never under a patient/ scope (a patient's portal
        does not remove the clinic's images). The deletion also removes the images' Media and marks the
        reports and results that cite them (``dicom_node.web.fhir_links``), so the caller needs those
        rights too: a key scoped to ImagingStudy alone does not rewrite clinical reports."""
        for resource_type, permission in DICOM_DELETION_RIGHTS:
            if self.require(resource_type, permission) == "patient":
                raise forbidden(
                    f"deleting DICOM objects needs a user/ or system/ scope on {resource_type}, not patient/"
                )

    # -- search ---------------------------------------------------------------------------------
    def bound(self, query: SearchQuery) -> SearchQuery:
        """``query`` as this caller may run it: search scope on every type it names or crosses
        (403 otherwise), and under ``patient/`` each such type narrowed to the patient's own."""
        where = tuple(self._clause(c) for c in query.where)
        bounded = [t for t in query.resource_types if self.require(t, "s") == "patient"]
        if bounded:
            if len(query.resource_types) > 1:
                raise forbidden("a patient/ scope searches one type at a time, not " + ", ".join(query.resource_types))
            where = (self._owner_clause(bounded[0]), *where)
        return replace(query, where=where)

    def bound_or_none(self, query: SearchQuery, permission: Permission = "s") -> SearchQuery | None:
        """Like ``bound`` for one type, but None (nothing to add) where ``bound`` would refuse: includes."""
        (resource_type,) = query.resource_types
        decision = self.decide(resource_type, permission)
        if decision == "none" or (decision == "patient" and owner_clause(resource_type, self.patient or "") is None):
            return None
        try:
            where = tuple(self._clause(c) for c in query.where)
        except OperationOutcomeError:  # a hop the caller may not cross: nothing of it is included
            return None
        if decision == "patient":
            where = (self._owner_clause(resource_type), *where)
        return replace(query, where=where)

    def _owner_clause(self, resource_type: str) -> Clause:
        assert self.patient is not None
        clause = owner_clause(resource_type, self.patient)
        if clause is None:
            raise forbidden(f"{resource_type} belongs to no patient's record: a patient/ scope cannot search it")
        return clause

    def _clause(self, clause: Clause) -> Clause:
        if isinstance(clause, HasClause):
            inner = tuple(self._clause(c) for c in clause.where)
            if self.require(clause.source_type, "s") == "patient":
                inner = (self._owner_clause(clause.source_type), *inner)
            return replace(clause, where=inner)
        if isinstance(clause, AnyClause):
            return replace(clause, alternatives=tuple(self._clause(c) for c in clause.alternatives))
        if isinstance(clause, ParamClause) and any(isinstance(m, ChainMatch) for m in clause.matches):
            return replace(clause, matches=tuple(m for match in clause.matches for m in self._match(match)))
        return clause

    def _match(self, match: Match) -> tuple[Match, ...]:
        """A chain hop, split per target type: each needs search scope; the types the caller may not
        search are dropped (403 when none is left), patient-bounded ones narrowed to the patient's own."""
        if not isinstance(match, ChainMatch):
            return (match,)
        where = tuple(self._clause(c) for c in match.where)
        hops: list[Match] = []
        for target in match.target_types:
            decision = self.decide(target, "s")
            if decision == "all":
                hops.append(ChainMatch((target,), where))
            elif decision == "patient" and self.patient and owner_clause(target, self.patient) is not None:
                hops.append(ChainMatch((target,), (self._owner_clause(target), *where)))
        if not hops:
            raise forbidden(f"the access token's scopes do not allow search on {', '.join(match.target_types)}")
        return tuple(hops)
