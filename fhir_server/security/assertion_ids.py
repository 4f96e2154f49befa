"""Client assertion ids (``jti``) seen, kept until they expire, in the client's tenant database.

RFC 7523 §3 (item 7): a server may ensure that JWTs are not replayed by keeping the ``jti`` values used
for as long as the JWT would be valid; SMART Backend Services asks the server to check the ``jti`` of an
authentication JWT so. Kept in the database, not in a process, so a replay sent to
another API process behind the same load balancer is refused too. The check and the write are one
transaction that reads first: on SQLite it holds the tenant database's write lock (BEGIN IMMEDIATE),
across processes, so of two uses of one ``jti`` at once exactly one wins. Expired ids are deleted as new
ones arrive (at most ``PRUNE`` per use).
"""

from __future__ import annotations

import time

from fhir_server.storage.port import Engine, Record
from fhir_server.storage.query import FieldMatch, RecordQuery

COLLECTION = "client-assertion-jti"
PRUNE = 100
MAX_JTI = 256  # RFC 7519 sets no bound; a longer one is refused rather than stored


def _until(expires: float) -> str:
    return f"{int(expires):012d}"  # fixed width: string order is time order for the range match


class AssertionIds:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def first_use(self, tenant: str, client_id: str, jti: str, expires: float) -> bool:
        """True the first time ``client_id`` presents ``jti`` before ``expires`` (seconds since the epoch)."""
        if len(jti) > MAX_JTI:
            return False
        store = await self.engine.tenant(tenant)
        key, now = f"{client_id} {jti}", time.time()
        async with store.transaction() as tx:
            seen = await tx.get_record(COLLECTION, key)
            if seen is not None and float(seen.body) > now:
                return False
            expired = RecordQuery(COLLECTION, (FieldMatch("until", "range", ("", _until(now))),), limit=PRUNE)
            for record in await tx.find_records(expired):
                await tx.delete_record(COLLECTION, record.key)
            await tx.put_record(Record(COLLECTION, key, str(expires).encode(), {"until": (_until(expires),)}))
        return True
