"""What an engine can tell the operator (``/readyz``, ``/metrics``): optional ports beside ``port.Engine``.

An engine offers each probe by having its method (checked at run time, each on its own: an engine may
offer some only); a wrapping engine (``crypto.store.EncryptingEngine``) is seen through by its ``inner``
engine. Figures, never content: counts, ages and pool sizes, no resource ids (the metrics must not carry
personal data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable


@dataclass(frozen=True, slots=True)
class Backlog:
    """One outbox consumer's events not yet acknowledged in one tenant, and the oldest one's age."""

    consumer: str
    pending: int
    oldest_age_seconds: float


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """Database connections of this process: open, and busy at this moment."""

    size: int
    in_use: int


@runtime_checkable
class BacklogProbe(Protocol):
    async def outbox_backlog(self, tenant: str) -> list[Backlog]:
        """Every consumer that has claimed events of ``tenant``: what it has not acknowledged."""
        ...


@runtime_checkable
class AuditStagedProbe(Protocol):
    async def audit_staged(self, tenant: str) -> int:
        """AuditEvents of ``tenant`` staged and not yet loaded, without opening the tenant's connections."""
        ...


@runtime_checkable
class SchemaProbe(Protocol):
    async def schema_current(self, tenant: str) -> bool:
        """Whether ``tenant``'s schema is at the version this code expects (its migrations ran)."""
        ...


@runtime_checkable
class PoolProbe(Protocol):
    def pool_usage(self) -> PoolUsage: ...


def backlog_probe(engine: object) -> BacklogProbe | None:
    return cast(BacklogProbe | None, _offering(engine, BacklogProbe))


def audit_staged_probe(engine: object) -> AuditStagedProbe | None:
    return cast(AuditStagedProbe | None, _offering(engine, AuditStagedProbe))


def schema_probe(engine: object) -> SchemaProbe | None:
    return cast(SchemaProbe | None, _offering(engine, SchemaProbe))


def pool_probe(engine: object) -> PoolProbe | None:
    return cast(PoolProbe | None, _offering(engine, PoolProbe))


def _offering(engine: object, kind: Any) -> object | None:
    """The engine (or an engine it wraps) that offers ``kind`` of probe; None when none does."""
    while not isinstance(engine, kind):
        engine = getattr(engine, "inner", None)
        if engine is None:
            return None
    return engine
