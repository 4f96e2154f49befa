"""The ``storage`` setting: which engine holds the tenants, as a URL.

``sqlite:///var`` (a directory relative to the working directory; ``sqlite:////srv/dermbridge`` absolute,
as SQLAlchemy spells it) holds one SQLite file per tenant under ``tenants/``; ``postgresql://user@host:port/db``
(libpq's URI form, https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING) one schema per
tenant in that database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

MAX_URL = 2048
SQLITE = "sqlite:///"
FILE = "file://"
POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class StorageUrl:
    engine: Literal["sqlite", "postgresql"]
    url: str  # as given: for PostgreSQL the DSN handed to the engine (it may hold a password: never logged)
    path: Path | None = None  # SQLite: the directory whose ``tenants/`` holds the tenant files

    def shown(self) -> str:
        """The URL without its password, for messages and logs."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        return self.url.replace(f":{parts.password}@", ":***@", 1)


@dataclass(frozen=True, slots=True)
class BlobUrl:
    """Where the DICOM objects are (the ``blobs`` setting): a directory, or the PostgreSQL database ``dsn``."""

    path: Path | None = None
    dsn: str | None = None


def parse_blob_url(text: str, storage: StorageUrl | None) -> BlobUrl:
    """``file:///DIR`` (``file://var/blobs`` relative) or ``postgresql``: the database of ``storage``, which must be
    PostgreSQL (None: not checked yet). ValueError saying what is wrong."""
    if text.startswith(FILE):
        path = text[len(FILE) :]
        if not path or "?" in path or "#" in path:
            raise ValueError("blobs=file:///DIRECTORY needs a directory")
        return BlobUrl(path=Path(path))
    if text != "postgresql":
        raise ValueError(f"blobs must be file:///DIRECTORY or postgresql, not {text!r}")
    if storage is not None and storage.engine != "postgresql":
        raise ValueError("blobs=postgresql keeps the objects in the PostgreSQL storage: set storage=postgresql://...")
    return BlobUrl(dsn=storage.url if storage is not None else "")


def sqlite_at(path: Path) -> StorageUrl:
    return StorageUrl("sqlite", f"{SQLITE}{path}", path)


def parse_storage_url(text: str) -> StorageUrl:
    """The engine and where its data is; ValueError saying what is wrong with ``text``."""
    if len(text) > MAX_URL:
        raise ValueError(f"a storage URL is at most {MAX_URL} characters")
    if text.startswith(SQLITE):
        path = text[len(SQLITE) :]
        if not path or "?" in path or "#" in path:
            raise ValueError("sqlite:///DIRECTORY needs a directory (sqlite:////abs/path for an absolute one)")
        return sqlite_at(Path(path))
    parts = urlsplit(text)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(
            f"storage must be sqlite:///DIRECTORY or postgresql://user@host:port/db, not a {parts.scheme!r} URL"
        )
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError as exc:
        raise ValueError(f"the PostgreSQL port is not a port number: {exc}") from None
    database = parts.path.lstrip("/")
    if not database or "/" in database:
        raise ValueError("postgresql://user@host:port/DATABASE needs one database name")
    return StorageUrl("postgresql", text)
