"""The case an image's AccessionNumber names (IHE RAD TF-1 SWF, 4.1: an Accession Number identifies one
Imaging Service Request, an order for one patient; PS3.3 C.7.2.1 General Study Module).

An image joins the case found by its accession only when the case's subject is the Patient its own
identifier matched (``dicom_node.patient_match``), or a record merged into that Patient (``replaced-by``).
When the accession names another patient's case, the image does not join it: it is filed in a case of its
own Patient (without the accession, which stays the order's), and the mismatch is made visible as a
patient identity review Task naming both patients and the order's case. While that review is open the
study's images are not analysed (``inference.identity_hold``), so no AI finding is written about a person
the image may not show; the ingest commits an AuditEvent naming both patients with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.patient_match import review_task, survivor
from fhir_server.audit.events import DCM, ENTITY_TYPE, OBJECT_ROLE
from fhir_server.errors import OperationOutcomeError
from fhir_server.repository import Repository, Stored
from fhir_server.search.escaping import escape, token

ACCESSION_SYSTEM = "urn:dermbridge:accession"
MAX_CANDIDATES = 20


@dataclass(frozen=True, slots=True)
class OrderMismatch:
    """An image's accession names the case of another patient: the order's case and its subject."""

    accession: str
    report_id: str
    patient_id: str  # the order's patient (the case's subject)
    review_id: str = ""  # the identity review Task opened about it


def _subject_id(report: dict[str, Any]) -> str:
    reference = str((report.get("subject") or {}).get("reference", ""))
    return reference.split("/_history/")[0].rsplit("Patient/", 1)[-1] if "Patient/" in reference else ""


async def _stands_for(repo: Repository, subject_id: str, patient_id: str) -> bool:
    """Whether the case's subject is the image's Patient, or a record merged into it ($merge)."""
    if not subject_id or subject_id == patient_id:
        return subject_id == patient_id
    try:
        subject = await repo.read("Patient", subject_id)
    except OperationOutcomeError:  # deleted or erased: it stands for nobody
        return False
    return str((await survivor(repo, subject)).resource["id"]) == patient_id


async def ordered_case(repo: Repository, accession: str, patient_id: str) -> tuple[Stored | None, OrderMismatch | None]:
    """The case of the order ``accession`` (its identifier, else its ``basedOn`` ServiceRequest's) whose
    subject is ``Patient/patient_id``; else, when the accession names only other patients' cases, the
    first of them as a mismatch."""
    mismatch = None
    for criteria in ([("identifier", token(ACCESSION_SYSTEM, accession))],
                     [("based-on:ServiceRequest.identifier", escape(accession))]):  # fmt: skip
        for stored in await repo.find("DiagnosticReport", criteria, MAX_CANDIDATES):
            subject = _subject_id(stored.resource)
            if await _stands_for(repo, subject, patient_id):
                return stored, None
            mismatch = mismatch or OrderMismatch(accession, str(stored.resource["id"]), subject)
    return None, mismatch


def _reference_input(what: str, reference: str) -> dict[str, Any]:
    return {"type": {"text": what}, "valueReference": {"reference": reference}}


async def flag_order_mismatch(repo: Repository, ds: Dataset, patient_id: str, mismatch: OrderMismatch) -> OrderMismatch:
    """The identity review Task of an image kept out of another patient's case (one per study and accession)."""
    order_patient = f"Patient/{mismatch.patient_id}" if mismatch.patient_id else "no patient"
    description = (
        f"DICOM study {ds.StudyInstanceUID} carries Accession Number {mismatch.accession!r}, the order of "
        f"DiagnosticReport/{mismatch.report_id} for {order_patient}, but its patient identifier matched "
        f"Patient/{patient_id}. The images were not added to that case: they were filed in a case of "
        f"Patient/{patient_id}, and their AI analysis waits for this review. Confirm the identity (complete this "
        "Task), or correct the images' patient or accession (DICOM) and send them again, or merge records "
        "(Patient/$merge) if both are the same person."
    )
    inputs = (_reference_input("case of the accession", f"DiagnosticReport/{mismatch.report_id}"),
              *([_reference_input("patient of the accession", order_patient)] if mismatch.patient_id else []),
              {"type": {"text": "accession number"},
               "valueIdentifier": {"system": ACCESSION_SYSTEM, "value": mismatch.accession}})  # fmt: skip
    key = f"{patient_id}/{ds.StudyInstanceUID}/accession/{mismatch.accession}"
    review = await review_task(repo, ds, key, patient_id, description, inputs)
    return OrderMismatch(mismatch.accession, mismatch.report_id, mismatch.patient_id, str(review.resource["id"]))


def order_mismatch_event(patient_id: str, media_id: str, mismatch: OrderMismatch) -> dict[str, Any]:
    """DICOM "Patient Record" (110110) AuditEvent, minor failure: the image was stored, not in the case its
    accession named; both patients, the image, the order's case and the review, by reference only."""
    patients = [(patient_id, "patient of the image"), (mismatch.patient_id, "patient of the accession")]
    others = [(f"Media/{media_id}", "image"), (f"DiagnosticReport/{mismatch.report_id}", "case of the accession"),
              (f"Task/{mismatch.review_id}", "identity review")]  # fmt: skip
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": "urn:dermbridge:audit", "code": "accession-patient-mismatch",
                     "display": "Accession names another patient's case"}],
        "action": "E",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": "4",
        "outcomeDesc": f"image of Patient/{patient_id} not added to DiagnosticReport/{mismatch.report_id} of its "
                       f"Accession Number (subject Patient/{mismatch.patient_id}): identity review opened",
        "agent": [{"who": {"display": "DermBridge DICOM node"}, "requestor": False}],
        "source": {"observer": {"display": "DermBridge DICOM node"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "entity": [*({"what": {"reference": f"Patient/{pid}"}, "type": {"system": ENTITY_TYPE, "code": "1"},
                      "role": {"system": OBJECT_ROLE, "code": "1"}, "description": role}
                     for pid, role in patients if pid),
                   *({"what": {"reference": ref}, "type": {"system": ENTITY_TYPE, "code": "2"}, "description": role}
                     for ref, role in others)],
    }  # fmt: skip
