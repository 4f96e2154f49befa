"""multipart/related bodies (RFC 2387) as DICOMweb sends and receives them (PS3.18 8.6.1.2)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass


class MultipartError(ValueError):
    """The body is not the multipart/related message its Content-Type announces."""


@dataclass(frozen=True, slots=True)
class Part:
    content_type: str
    body: bytes


def media_parameters(content_type: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=x`` -> (media type, parameters)."""
    media, *params = content_type.split(";")
    found = {}
    for param in params:
        name, _, value = param.strip().partition("=")
        found[name.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), found


def parse(body: bytes, boundary: str, default_type: str) -> list[Part]:
    delimiter = b"--" + boundary.encode("latin-1")
    if delimiter not in body:
        raise MultipartError("the body has no part with the announced boundary")
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        head, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            head, separator, content = chunk.partition(b"\n\n")
        if not separator:
            raise MultipartError("a part has no header/body separator")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        content_type = default_type
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                content_type = value.strip()
        parts.append(Part(content_type, content))
    return parts


def build(parts: list[Part]) -> tuple[bytes, str]:
    """The body and its boundary."""
    boundary = secrets.token_hex(16)
    chunks = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part.content_type}\r\n\r\n".encode("latin-1"))
        chunks.append(part.body)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("latin-1"))
    return b"".join(chunks), boundary
