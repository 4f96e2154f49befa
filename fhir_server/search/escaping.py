"""Values as search parameters carry them (search.html#escaping): ``\\,`` ``\\|`` ``\\$`` and ``\\\\``,
the inverse of ``fhir_server.search.request.unescape``, for server code that searches by a value it
did not choose (a DICOM PatientID, a client's identifier)."""

from __future__ import annotations


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")


def token(system: str, code: str) -> str:
    """``system|code`` with both escaped, for a token search."""
    return f"{escape(system)}|{escape(code)}"
