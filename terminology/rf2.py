"""Reading a SNOMED CT release in RF2 (SNOMED CT Release File Specifications, 3.2 Concept, 3.3 Description,
3.4 Relationship, 4.2.2 Language reference set): the Snapshot files of a release directory or zip.

Active concepts are kept; each concept's designations are its active descriptions (the Fully Specified Name
and the synonyms, each with its use); its display is the preferred synonym of the en-US language reference
set when the release has one (else en-GB), otherwise the FSN without its semantic tag. The is-a hierarchy
is the active inferred relationships of type 116680003 |Is a|. Rows are streamed, never held as a whole.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from terminology.closure_store import StoredConcept
from terminology.errors import invalid

SNOMED = "http://snomed.info/sct"
IS_A = "116680003"
FSN = "900000000000003001"
SYNONYM = "900000000000013009"
PREFERRED = "900000000000548007"
US_ENGLISH, GB_ENGLISH = "900000000000509007", "900000000000508004"
FILES = {
    "concept": re.compile(r"sct2_Concept_Snapshot[^/]*\.txt$"),
    "description": re.compile(r"sct2_Description_Snapshot[^/]*\.txt$"),
    "relationship": re.compile(r"sct2_Relationship_Snapshot[^/]*\.txt$"),
    "language": re.compile(r"der2_cRefset_Language[^/]*Snapshot[^/]*\.txt$"),
}
HEADERS = {
    "concept": ("id", "effectiveTime", "active", "moduleId", "definitionStatusId"),
    "description": ("id", "effectiveTime", "active", "moduleId", "conceptId", "languageCode", "typeId", "term"),
    "relationship": ("id", "effectiveTime", "active", "moduleId", "sourceId", "destinationId", "relationshipGroup"),
    "language": ("id", "effectiveTime", "active", "moduleId", "refsetId", "referencedComponentId", "acceptabilityId"),
}
SEMANTIC_TAG = re.compile(r"\s+\([^()]+\)$")


@dataclass(frozen=True, slots=True)
class Release:
    """What a release is: its edition module, the newest effectiveTime, and the version URI (SNOMED CT URI
    specification, section 2.2: ``http://snomed.info/sct/{module}/version/{YYYYMMDD}``)."""

    module: str
    effective_time: str

    @property
    def version(self) -> str:
        return f"{SNOMED}/{self.module}/version/{self.effective_time}"


class Rf2Source:
    """The Snapshot files of a release, in a directory (searched recursively) or a zip archive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        names = self._names()
        self.files: dict[str, str] = {}
        for kind, pattern in FILES.items():
            matches = sorted(n for n in names if pattern.search(n) and "Snapshot" in n)
            if kind == "language":
                matches = [m for m in matches if "-en" in m or "_en" in m] or matches
            if matches:
                self.files[kind] = matches[0]
        missing = [k for k in ("concept", "description", "relationship") if k not in self.files]
        if missing:
            raise invalid(f"{path.name} is not an RF2 release: no Snapshot {', '.join(missing)} file")

    def _names(self) -> list[str]:
        if self.path.is_dir():
            return [str(p.relative_to(self.path)) for p in self.path.rglob("*.txt")]
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.namelist()
        except zipfile.BadZipFile as error:
            raise invalid(f"{self.path.name} is neither a directory nor a zip: {error}") from error

    @contextmanager
    def _open(self, name: str) -> Iterator[IO[str]]:
        if self.path.is_dir():
            with open(self.path / name, encoding="utf-8", newline="") as handle:
                yield handle
            return
        with zipfile.ZipFile(self.path) as archive, archive.open(name) as raw:
            yield io.TextIOWrapper(raw, encoding="utf-8", newline="")

    def rows(self, kind: str) -> Iterator[dict[str, str]]:
        """The active rows of one file, checked against the RF2 header."""
        name = self.files.get(kind)
        if name is None:
            return
        with self._open(name) as handle:
            reader = (line.rstrip("\r\n").split("\t") for line in handle)  # RF2: tab-separated, never quoted
            header = next(reader, [])
            if tuple(header[: len(HEADERS[kind])]) != HEADERS[kind]:
                raise invalid(f"{name} does not start with the RF2 {kind} header {'/'.join(HEADERS[kind])}")
            for row in reader:
                if len(row) >= len(header) and row[2] == "1":
                    yield dict(zip(header, row, strict=False))


def read_release(path: Path) -> tuple[Release, list[StoredConcept], Iterator[tuple[str, str]]]:
    """The release's identity, its active concepts with designations and display, and its is-a pairs
    (child, parent), the last lazily."""
    source = Rf2Source(path)
    modules: Counter[str] = Counter()
    newest = ""
    concepts: dict[str, list[tuple[str | None, str | None, str | None, str]]] = {}
    for row in source.rows("concept"):
        concepts[row["id"]] = []
        modules[row["moduleId"]] += 1
        newest = max(newest, row["effectiveTime"])
    preferred = _preferred_terms(source)
    displays: dict[str, str] = {}
    fallback: dict[str, str] = {}
    for row in source.rows("description"):
        designations = concepts.get(row["conceptId"])
        if designations is None or row["typeId"] not in (FSN, SYNONYM):
            continue
        designations.append((SNOMED, row["typeId"], row["languageCode"], row["term"]))
        if row["typeId"] == FSN:
            fallback[row["conceptId"]] = SEMANTIC_TAG.sub("", row["term"])
        elif row["id"] in preferred:
            displays[row["conceptId"]] = row["term"]
    stored = [
        StoredConcept(code, displays.get(code) or fallback.get(code), tuple(terms)) for code, terms in concepts.items()
    ]
    release = Release(modules.most_common(1)[0][0] if modules else "", newest)
    return release, stored, _is_a(source)


def _preferred_terms(source: Rf2Source) -> set[str]:
    """The description ids preferred in the en-US language reference set (else en-GB)."""
    by_refset: dict[str, set[str]] = {US_ENGLISH: set(), GB_ENGLISH: set()}
    for row in source.rows("language"):
        if row["acceptabilityId"] == PREFERRED and row["refsetId"] in by_refset:
            by_refset[row["refsetId"]].add(row["referencedComponentId"])
    return by_refset[US_ENGLISH] or by_refset[GB_ENGLISH]


def _is_a(source: Rf2Source) -> Iterator[tuple[str, str]]:
    for row in source.rows("relationship"):
        if row["typeId"] == IS_A:
            yield row["sourceId"], row["destinationId"]
