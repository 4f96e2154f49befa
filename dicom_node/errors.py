"""The DICOM node's errors; turned into DIMSE statuses or HTTP answers only at its edges."""

from __future__ import annotations


class DicomNodeError(Exception):
    """Base of every error the DICOM node raises."""


class InvalidInstance(DicomNodeError):
    """The dataset cannot be stored as it is: ``status`` is the C-STORE failure to answer."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]  # ErrorComment is an LO: 64 characters at most


class UnknownCaller(DicomNodeError):
    """No tenant is configured for the calling AE title."""


class ForeignStudy(InvalidInstance):
    """The instance's identifier names one patient, but its Study, Series or SOP Instance UID belongs to
    what the node filed under another (``uid``: which of the three): refused, the identifier decides."""

    def __init__(self, status: int, uid: str, owner: str, claimed: str | None) -> None:
        super().__init__(status, f"{uid} belongs to another patient")
        self.uid = uid
        self.owner = owner
        self.claimed = claimed
