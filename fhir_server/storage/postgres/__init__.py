"""The PostgreSQL engine: one schema per tenant, for several stateless processes over one database."""

from fhir_server.storage.postgres.engine import PostgresEngine

__all__ = ["PostgresEngine"]
