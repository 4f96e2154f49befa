"""Client writes of ImagingStudy and Media that name DICOM objects (``identifier`` system ``urn:dicom:uid``,
imagingstudy.html#notes; the Study Instance UID of an ImagingStudy, the SOP Instance UID of a Media).

Such an identifier is the link ingest follows between the images and FHIR, so a client may not use it to
attach another patient's images to a record: a write naming a UID the node filed under a Patient must have
that Patient as its ``subject`` (409 otherwise), and a ``patient/`` scope may not add or change these
identifiers at all (403). Registered on the repository's write path by the composition root
(``fhir_server.write_guards``); the server's own sync writes in a system context and is not checked.
"""

from __future__ import annotations

from typing import Any

from dicom_node.attributes import INSTANCE, STUDY, recorded_patient
from dicom_node.fhir_sync import DICOM_UID_SYSTEM
from fhir_server.errors import OperationOutcomeError, conflict, forbidden
from fhir_server.security.policy import AccessPolicy
from fhir_server.security.scopes import Permission
from fhir_server.storage.port import TenantReader

UID_RECORDS = {"ImagingStudy": STUDY, "Media": INSTANCE}  # the record a type's DICOM UID identifier names
MAX_UID_IDENTIFIERS = 10


def _uids(resource: dict[str, Any] | None) -> set[str]:
    identifiers = (resource or {}).get("identifier") or []
    return {
        str(i.get("value") or "").removeprefix("urn:oid:")
        for i in identifiers
        if isinstance(i, dict) and i.get("system") == DICOM_UID_SYSTEM
    }


async def guard_dicom_uids(
    reader: TenantReader,
    policy: AccessPolicy,
    resource_type: str,
    resource: dict[str, Any] | None,
    before: dict[str, Any] | None,
) -> None:
    """Refuses a client's write whose ``urn:dicom:uid`` identifiers name images of another patient."""
    uids = _uids(resource)
    if resource is None or not uids:
        return
    if len(uids) > MAX_UID_IDENTIFIERS:
        raise OperationOutcomeError.of(
            422, "business-rule", f"at most {MAX_UID_IDENTIFIERS} {DICOM_UID_SYSTEM} identifiers", ["identifier"]
        )
    permission: Permission = "u" if before is not None else "c"
    if uids != _uids(before) and policy.decide(resource_type, permission) == "patient":
        raise forbidden(f"a patient/ scope cannot write {DICOM_UID_SYSTEM} identifiers: the node links images itself")
    subject = (resource.get("subject") or {}).get("reference")
    for uid in sorted(uids):
        owner = recorded_patient(await reader.get_record(UID_RECORDS[resource_type], uid))
        if owner is not None and subject != f"Patient/{owner}":
            raise conflict(f"{DICOM_UID_SYSTEM} identifier {uid[:64]} names images filed under another patient")
