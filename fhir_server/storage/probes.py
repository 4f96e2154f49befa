"""What an engine can tell the operator (``/readyz``, ``/metrics``): an optional port beside ``port.Engine``.

An engine offers it by having these methods (``EngineProbe`` is checked at run time); a wrapping engine
(``crypto.store.EncryptingEngine``) is seen through by its ``inner`` engine. Figures, never content: counts,
ages and pool sizes, no resource ids (the metrics must not carry personal data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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
class EngineProbe(Protocol):
    async def outbox_backlog(self, tenant: str) -> list[Backlog]:
        """Every consumer that has claimed events of ``tenant``: what it has not acknowledged."""
        ...

    async def schema_current(self, tenant: str) -> bool:
        """Whether ``tenant``'s schema is at the version this code expects (its migrations ran)."""
        ...

    def pool_usage(self) -> PoolUsage: ...


def probe_of(engine: object) -> EngineProbe | None:
    """The engine's probe, through wrapping engines; None when the engine offers none."""
    while not isinstance(engine, EngineProbe):
        engine = getattr(engine, "inner", None)
        if engine is None:
            return None
    return engine
