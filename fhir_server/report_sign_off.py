"""Sign-off of a DiagnosticReport: a person, not the server or the AI, makes it final.

A report whose status a client sets to ``final``, ``amended`` or ``corrected`` (diagnosticreport.html,
"the report is complete and verified by an authorized person") must name who verified it: a
``Practitioner`` or ``PractitionerRole`` in ``resultsInterpreter``. Without one, an AI's preliminary
conclusion could reach an EHR as a final report that nobody signed. A rule of
``fhir_server.managed_content``: it sees clients' writes only (the server's own writes, e.g. the AI
appending late results, go through a system context).
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import OperationOutcomeError

SIGNED_STATUSES = frozenset({"final", "amended", "corrected"})
SIGNERS = ("Practitioner", "PractitionerRole")
HOW_TO_SIGN_OFF = (
    "a DiagnosticReport is made final, amended or corrected by the clinician who verified it: name them in "
    "resultsInterpreter (a Practitioner or PractitionerRole reference) in the same write"
)


def _is_signer(reference: Any) -> bool:
    text = str((reference or {}).get("reference", "")) if isinstance(reference, dict) else ""
    parts = text.split("/")
    return len(parts) >= 2 and parts[-2] in SIGNERS


def require_signer(resource: dict[str, Any] | None, before: dict[str, Any] | None) -> None:
    """Refuses (422) a client's signed-off report that names no clinician in ``resultsInterpreter``."""
    if resource is None or resource.get("status") not in SIGNED_STATUSES:
        return
    if not any(_is_signer(r) for r in resource.get("resultsInterpreter") or []):
        raise OperationOutcomeError.of(422, "business-rule", HOW_TO_SIGN_OFF, ["DiagnosticReport.resultsInterpreter"])
