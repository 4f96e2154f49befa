"""Synthetic SNOMED CT releases in the real RF2 layout (SNOMED CT Release File Specifications): Snapshot
folders of tab-separated files with their headers, ``effectiveTime``, ``active`` flags, FSN and synonym
descriptions, an en-US language reference set and inferred is-a relationships (116680003). Written by the
tests and the terminology bench; nothing here is SNOMED CT content."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MODULE = "900000000000207008"  # SNOMED CT core module
FSN, SYNONYM, IS_A = "900000000000003001", "900000000000013009", "116680003"
US_ENGLISH, PREFERRED, ACCEPTABLE = "900000000000509007", "900000000000548007", "900000000000549004"
INFERRED, DEFINING = "900000000000011006", "900000000000006009"
HEADERS = {
    "Concept": "id effectiveTime active moduleId definitionStatusId",
    "Description": "id effectiveTime active moduleId conceptId languageCode typeId term caseSignificanceId",
    "Relationship": "id effectiveTime active moduleId sourceId destinationId relationshipGroup typeId "
    "characteristicTypeId modifierId",
    "StatedRelationship": "id effectiveTime active moduleId sourceId destinationId relationshipGroup typeId "
    "characteristicTypeId modifierId",
    "Language": "id effectiveTime active moduleId refsetId referencedComponentId acceptabilityId",
}


@dataclass
class Rf2Release:
    """Rows of a release; ``write`` lays them out as an RF2 Snapshot (a directory, or a zip)."""

    effective_time: str = "20250101"
    files: dict[str, list[list[str]]] = field(default_factory=lambda: {k: [] for k in HEADERS})
    _next: int = 1

    def _id(self, partition: str) -> str:
        """A component id with the right partition (01 description, 02 relationship; no check digit needed
        by the reader)."""
        self._next += 1
        return f"{self._next}1{partition}0"

    def concept(
        self, code: str, fsn: str, synonym: str | None = None, *, active: bool = True, preferred: bool = True
    ) -> None:
        """A concept, its FSN and a synonym (the en-US preferred term when ``preferred``)."""
        flag = "1" if active else "0"
        self.files["Concept"].append([code, self.effective_time, flag, MODULE, "900000000000074008"])
        self._description(code, FSN, fsn, PREFERRED)
        if synonym is not None:
            self._description(code, SYNONYM, synonym, PREFERRED if preferred else ACCEPTABLE)

    def _description(self, code: str, kind: str, term: str, acceptability: str, active: bool = True) -> str:
        id = self._id("1")
        row = [id, self.effective_time, "1" if active else "0", MODULE, code, "en", kind, term, "900000000000448009"]
        self.files["Description"].append(row)
        self.files["Language"].append([f"lang-{id}", self.effective_time, "1", MODULE, US_ENGLISH, id, acceptability])
        return id

    def inactive_synonym(self, code: str, term: str) -> None:
        self._description(code, SYNONYM, term, ACCEPTABLE, active=False)

    def is_a(self, child: str, parent: str, *, active: bool = True, type_id: str = IS_A) -> None:
        row = [self._id("2"), self.effective_time, "1" if active else "0", MODULE, child, parent, "0", type_id]
        self.files["Relationship"].append([*row, INFERRED, "900000000000451002"])

    def stated(self, child: str, parent: str) -> None:
        row = [self._id("2"), self.effective_time, "1", MODULE, child, parent, "0", IS_A]
        self.files["StatedRelationship"].append([*row, "900000000000010007", "900000000000451002"])

    def _contents(self) -> Iterable[tuple[str, str]]:
        names = {
            "Concept": "Terminology/sct2_Concept_Snapshot_INT",
            "Description": "Terminology/sct2_Description_Snapshot-en_INT",
            "Relationship": "Terminology/sct2_Relationship_Snapshot_INT",
            "StatedRelationship": "Terminology/sct2_StatedRelationship_Snapshot_INT",
            "Language": "Refset/Language/der2_cRefset_LanguageSnapshot-en_INT",
        }
        for kind, rows in self.files.items():
            lines = [HEADERS[kind].replace(" ", "\t"), *("\t".join(r) for r in rows)]
            yield f"SnomedCT_Test/Snapshot/{names[kind]}_{self.effective_time}.txt", "\r\n".join(lines) + "\r\n"

    def write(self, path: Path) -> Path:
        """A directory, or a zip when ``path`` ends in .zip."""
        if path.suffix == ".zip":
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                for name, text in self._contents():
                    archive.writestr(name, text)
            return path
        for name, text in self._contents():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text, encoding="utf-8", newline="")
        return path
