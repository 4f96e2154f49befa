"""A large code system (a SNOMED CT release: hundreds of thousands of concepts) held in a store of its own:
one read-only SQLite file per release, with the is-a hierarchy kept as its transitive closure (one row per
ancestor-descendant pair), so that ``is-a``/``descendent-of`` filters, ``$subsumes`` and ``:below`` are one
indexed query each instead of a walk of an in-memory graph (codesystem.html#hierarchy; the closure table
is the usual encoding of a polyhierarchy, which nested intervals cannot encode).

The file is written once by ``write_store`` (to a temporary name, then renamed) and never changed: a
newer release is a new file. Readers open it ``immutable``, so several processes may share it.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terminology.codesystem import HIERARCHY_OPS, Concept, check_filter
from terminology.errors import invalid, not_supported, too_costly

BATCH = 500  # codes per IN (...) query
MAX_RELATIVES = 1_000  # parents or children a $lookup lists
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE concept (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, display TEXT, level INTEGER);
CREATE TABLE designation (concept INTEGER NOT NULL, use_system TEXT, use_code TEXT, language TEXT, value TEXT NOT NULL);
CREATE TABLE parent (child INTEGER NOT NULL, parent INTEGER NOT NULL, PRIMARY KEY (child, parent)) WITHOUT ROWID;
CREATE TABLE closure (ancestor INTEGER NOT NULL, descendant INTEGER NOT NULL,
                      PRIMARY KEY (ancestor, descendant)) WITHOUT ROWID;
"""
CLOSURE_INDEXES = """
CREATE INDEX concept_level ON concept (level);
CREATE INDEX closure_descendant ON closure (descendant, ancestor);
"""
INDEXES = """
CREATE INDEX designation_concept ON designation (concept);
CREATE INDEX parent_parent ON parent (parent, child);
"""


@dataclass(frozen=True, slots=True)
class StoredConcept:
    """One concept to store: its designations are (use system, use code, language, term), None when absent."""

    code: str
    display: str | None
    designations: tuple[tuple[str | None, str | None, str | None, str], ...] = ()


def write_store(
    path: Path, meta: dict[str, str], concepts: Iterable[StoredConcept], is_a: Iterable[tuple[str, str]]
) -> int:
    """Write a store of ``concepts`` and their ``(child, parent)`` is-a pairs; answers the concept count.
    Pairs naming an unknown code are left out (an inactive concept's relationships)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    conn = sqlite3.connect(partial)
    try:
        conn.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -200000;")
        conn.executescript(SCHEMA)
        ids: dict[str, int] = {}
        designations: list[tuple[int, str | None, str | None, str | None, str]] = []
        rows: list[tuple[int, str, str | None]] = []
        for concept in concepts:
            number = ids.setdefault(concept.code, len(ids) + 1)
            if number != len(ids):
                continue  # a code given twice: the first wins
            rows.append((number, concept.code, concept.display))
            designations.extend((number, *d) for d in concept.designations)
            if len(designations) > 50_000 or len(rows) > 50_000:
                _flush(conn, rows, designations)
        _flush(conn, rows, designations)
        pairs = {(ids[c], ids[p]) for c, p in is_a if c in ids and p in ids and c != p}
        conn.executemany("INSERT INTO parent (child, parent) VALUES (?, ?)", sorted(pairs))
        _close(conn, ids, pairs)
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [*meta.items(), ("count", str(len(ids)))])
        conn.executescript(INDEXES)
        conn.commit()
    finally:
        conn.close()
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return len(ids)


def _flush(conn: sqlite3.Connection, rows: list[Any], designations: list[Any]) -> None:
    conn.executemany("INSERT INTO concept (id, code, display) VALUES (?, ?, ?)", rows)
    conn.executemany(
        "INSERT INTO designation (concept, use_system, use_code, language, value) VALUES (?, ?, ?, ?, ?)", designations
    )
    rows.clear()
    designations.clear()


def _close(conn: sqlite3.Connection, ids: dict[str, int], pairs: set[tuple[int, int]]) -> None:
    """The transitive closure, level by level: a concept's level is one more than its deepest parent's, so
    when a level is reached every ancestor of its parents is already in the closure (a cycle, which is-a
    must not have, leaves its members out)."""
    parents: dict[int, list[int]] = {}
    children: dict[int, list[int]] = {}
    for child, parent in pairs:
        parents.setdefault(child, []).append(parent)
        children.setdefault(parent, []).append(child)
    waiting = {c: len(p) for c, p in parents.items()}
    level = {i: 0 for i in ids.values() if i not in parents}
    frontier = list(level)
    while frontier:
        following = []
        for node in frontier:
            for child in children.get(node, ()):
                waiting[child] -= 1
                if waiting[child] == 0:
                    level[child] = level[node] + 1
                    following.append(child)
        frontier = following
    conn.executemany("UPDATE concept SET level = ? WHERE id = ?", ((v, k) for k, v in level.items()))
    conn.executescript(CLOSURE_INDEXES)
    at_level = "p.child IN (SELECT id FROM concept WHERE level = ?)"
    for depth in range(1, max(level.values(), default=0) + 1):
        conn.execute(f"INSERT OR IGNORE INTO closure SELECT p.parent, p.child FROM parent p WHERE {at_level}", (depth,))
        conn.execute(
            "INSERT OR IGNORE INTO closure SELECT a.ancestor, p.child FROM parent p "
            f"JOIN closure a ON a.descendant = p.parent WHERE {at_level}",
            (depth,),
        )


class ClosureCodeSystem:
    """A ``terminology.codesystem.CodeSystemView`` over a store file (read-only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        self.url: str = meta.get("url", "")
        self.version: str | None = meta.get("version")
        self.name: str | None = meta.get("name")
        self.content = "complete"
        self.case_sensitive = meta.get("caseSensitive", "true") == "true"
        self.count = int(meta.get("count", "0"))

    def _id(self, code: str) -> int | None:
        row = self._conn.execute("SELECT id FROM concept WHERE code = ?", (code,)).fetchone()
        return int(row[0]) if row else None

    def _codes(self, sql: str, args: tuple[Any, ...]) -> list[str]:
        return [row[0] for row in self._conn.execute(sql, args)]

    def get(self, code: str) -> Concept | None:
        found = self.many([code])
        if not found:
            return None
        concept = found[0]
        concept.parents = self._codes(
            "SELECT c.code FROM parent p JOIN concept c ON c.id = p.parent "
            "WHERE p.child = (SELECT id FROM concept WHERE code = ?) ORDER BY c.id LIMIT ?",
            (code, MAX_RELATIVES),
        )
        concept.children = self._codes(
            "SELECT c.code FROM parent p JOIN concept c ON c.id = p.child "
            "WHERE p.parent = (SELECT id FROM concept WHERE code = ?) ORDER BY c.id LIMIT ?",
            (code, MAX_RELATIVES),
        )
        return concept

    def many(self, codes: Iterable[str], designations: bool = True) -> list[Concept]:
        wanted = list(codes)
        found: dict[str, Concept] = {}
        for start in range(0, len(wanted), BATCH):
            chunk = wanted[start : start + BATCH]
            marks = ",".join("?" * len(chunk))
            ids: dict[int, Concept] = {}
            for number, code, display in self._conn.execute(
                f"SELECT id, code, display FROM concept WHERE code IN ({marks})", chunk
            ):
                ids[number] = found[code] = Concept(code, display)
            if not designations:
                continue
            for number, *designation in self._conn.execute(
                "SELECT concept, use_system, use_code, language, value FROM designation "
                f"WHERE concept IN ({','.join('?' * len(ids))})",
                list(ids),
            ):
                ids[number].designations.append(_designation(*designation))
        return [found[c] for c in wanted if c in found]

    def all_codes(self, limit: int) -> list[str]:
        if self.count > limit:
            raise too_costly(f"{self.url} has {self.count} codes: more than {limit}", "url")
        return self._codes("SELECT code FROM concept ORDER BY id", ())

    def select(self, prop: str, op: str, value: str, limit: int) -> list[str]:
        check_filter(prop, op)
        if op in HIERARCHY_OPS:
            return self._hierarchy(op, value, limit)
        if prop in ("concept", "code") and op in ("=", "in"):
            return [c.code for c in self.many(v.strip() for v in value.split(","))]
        if prop in ("parent", "child") and op == "=":
            relative = self.get(value)
            return [] if relative is None else (relative.children if prop == "parent" else relative.parents)
        raise not_supported(f"filter {prop} {op} is not supported on {self.url}, held in a store: use the hierarchy")

    def _hierarchy(self, op: str, value: str, limit: int) -> list[str]:
        number = self._id(value)
        if number is None:
            raise invalid(f"{value} is not a code of {self.url}", "filter")
        if op == "generalizes":
            return sorted({value, *self.ancestors(value)})
        if op == "is-not-a":
            if self.count - self._count_below(number) - 1 > limit:
                raise too_costly(f"is-not-a {value} selects more than {limit} codes of {self.url}", "filter")
            return self._codes(
                "SELECT code FROM concept WHERE id != ? "
                "AND id NOT IN (SELECT descendant FROM closure WHERE ancestor = ?) ORDER BY id",
                (number, number),
            )
        under = list(self.descendants(value, limit))
        return [value, *under] if op == "is-a" else under

    def _count_below(self, number: int) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM closure WHERE ancestor = ?", (number,)).fetchone()[0])

    def descendants(self, code: str, limit: int) -> Iterator[str]:
        """Every code below ``code``, in the store's order; too-costly beyond ``limit`` (checked first)."""
        number = self._id(code)
        if number is None:
            return iter(())
        codes = self._codes(
            "SELECT c.code FROM closure a JOIN concept c ON c.id = a.descendant WHERE a.ancestor = ? "
            "ORDER BY a.descendant LIMIT ?",
            (number, limit + 1),
        )
        if len(codes) > limit:
            raise too_costly(f"more than {limit} codes lie below {code} in {self.url}")
        return iter(codes)

    def ancestors(self, code: str) -> set[str]:
        return set(
            self._codes(
                "SELECT c.code FROM closure a JOIN concept c ON c.id = a.ancestor "
                "WHERE a.descendant = (SELECT id FROM concept WHERE code = ?)",
                (code,),
            )
        )

    def subsumption(self, code_a: str, code_b: str) -> str:
        if code_a == code_b:
            return "equivalent"
        a, b = self._id(code_a), self._id(code_b)
        if self._above(a, b):
            return "subsumes"
        if self._above(b, a):
            return "subsumed-by"
        return "not-subsumed"

    def _above(self, ancestor: int | None, descendant: int | None) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM closure WHERE ancestor = ? AND descendant = ?", (ancestor, descendant)
        ).fetchone()
        return row is not None


def _designation(system: str | None, use: str | None, language: str | None, value: str) -> dict[str, Any]:
    item: dict[str, Any] = {"value": value}
    if language:
        item["language"] = language
    if use:
        item["use"] = {"system": system, "code": use} if system else {"code": use}
    return item


@functools.lru_cache(maxsize=8)
def open_store(path: str) -> ClosureCodeSystem:
    """The store at ``path``, opened once per process (it never changes: a new release is a new file)."""
    return ClosureCodeSystem(Path(path))
