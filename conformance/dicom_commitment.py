"""The Storage Commitment section of the DICOM conformance statement (PS3.2 A.2.2.1.4 SOP specific
conformance, PS3.4 J.4.1.1), written only when the node's AE accepts the Storage Commitment Push Model."""

from __future__ import annotations

from pynetdicom import AE

from dicom_node.dimse import DimseConfig
from dicom_node.storage_commitment import MAX_REFERENCES, STORAGE_COMMITMENT


def accepts_commitment(ae: AE) -> bool:
    return any(cx.abstract_syntax == STORAGE_COMMITMENT for cx in ae.supported_contexts)


def storage_commitment(ae: AE, config: DimseConfig) -> list[str]:
    """SOP specific conformance of the Storage Commitment Push Model SOP class (PS3.4 J.4.1.1)."""
    if not accepts_commitment(ae):
        return []
    return [
        "###### SOP specific conformance: Storage Commitment Push Model SCP",
        "",
        "- Who may ask: a calling AE with the store role, about its own tenant's instances.",
        f"- N-ACTION (Action Type 1) with a Transaction UID and at most {MAX_REFERENCES} references; the"
        " response is 0000, or 0123 (no such action), 0115 (invalid argument value), 0213 (resource limitation),"
        " 0124 (not authorized), with an ErrorComment.",
        "- The result is read from the durable store: an instance is committed when its index record is committed"
        " and its file is on disk (no more than C-STORE's Success already promised); the commitment lasts as long"
        " as the instance (a DICOMweb DELETE, a retention rule or a GDPR erasure ends it).",
        "- N-EVENT-REPORT: Event Type 1 (all committed; Referenced SOP Sequence, Retrieve AE Title"
        f" `{ae.ae_title}`) or 2 (failures exist; Failed SOP Sequence with Failure Reason 0112 no such object"
        " instance, 0119 class/instance conflict). Sent on a new association to the calling AE's address when it"
        " is configured (the C-MOVE destinations of section 1.4; the node proposes the context with the SCP role),"
        " else on the N-ACTION's own association, which the device must keep open until the report arrives."
        f" Configured: {len(config.move_destinations)} address(es).",
        "",
    ]
