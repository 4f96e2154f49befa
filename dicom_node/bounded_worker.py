"""One background thread for work the node sends out after answering a request (Storage Commitment reports on a
new association, PS3.4 J.3.3), with a bound on what may wait for it: a caller asks for a slot first and, when
none is left, is answered Resource limitation instead of starting another thread (pentest 4, F6)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class BoundedWorker:
    """Runs submitted work one at a time, in order; at most ``capacity`` pieces queued or running."""

    def __init__(self, name: str, capacity: int) -> None:
        self._name = name
        self._slots = threading.BoundedSemaphore(capacity)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def reserve(self) -> bool:
        """A slot for one piece of work, or False when ``capacity`` are waiting or running already."""
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        """Give back a reserved slot that will not be used."""
        self._slots.release()

    def submit(self, work: Callable[[], None]) -> None:
        """Run ``work`` (in a reserved slot) on the worker; its slot is freed when it ends, even by an error."""

        def run() -> None:
            try:
                work()
            except Exception:
                log.exception("%s: background work failed", self._name)
            finally:
                self._slots.release()

        try:
            self._executor.submit(run)
        except RuntimeError:  # shut down: the node is stopping
            self._slots.release()

    def shutdown(self) -> None:
        """Stop taking work; what is queued is dropped, what runs ends within its own timeouts."""
        self._executor.shutdown(wait=False, cancel_futures=True)
