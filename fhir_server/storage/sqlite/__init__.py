"""The embedded SQLite engine: one WAL database file per tenant."""

from fhir_server.storage.sqlite.engine import SqliteEngine

__all__ = ["SqliteEngine"]
