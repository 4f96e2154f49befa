"""A SNOMED CT RF2 release (a small synthetic one in the real file layout) read into a closure store
(terminology.rf2, terminology.closure_store): only active concepts and active inferred is-a relationships,
the en-US preferred synonym as display (else the FSN without its semantic tag), every hierarchy question
answered from the closure."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from terminology.closure_store import ClosureCodeSystem, write_store
from terminology.content import BaseContent
from terminology.errors import TerminologyError
from terminology.expansion import Expander
from terminology.membership import Membership
from terminology.resolver import Layered
from terminology.rf2 import SNOMED, read_release
from tests.rf2_factories import Rf2Release

FINDING_SITE = "363698007"


def skin_release() -> Rf2Release:
    """Nine active concepts; an inactive one; inactive, stated and non-is-a relationships to be ignored."""
    release = Rf2Release()
    release.concept("138875005", "SNOMED CT Concept (SNOMED RT+CTV3)", "SNOMED CT Concept")
    release.concept("404684003", "Clinical finding (finding)", "Clinical finding")
    release.concept("95320005", "Disorder of skin (disorder)", "Disorder of skin")
    release.concept("93655004", "Malignant melanoma of skin (disorder)", "Malignant melanoma of skin")
    release.concept("400010006", "Melanocytic nevus of skin (disorder)", "Melanocytic naevus of skin", preferred=False)
    release.concept("254818000", "Dysplastic nevus of skin (disorder)", "Dysplastic nevus of skin")
    release.concept(
        "1197294001", "Malignant melanoma arising in melanocytic nevus (disorder)", "Melanoma arising in nevus"
    )
    release.concept("123037004", "Body structure (body structure)", "Body structure")
    release.concept("39937001", "Skin structure (body structure)", "Skin structure")
    release.concept("111111000", "Retired concept (disorder)", "Retired concept", active=False)
    release.inactive_synonym("93655004", "Old melanoma name")
    for child, parent in (
        ("404684003", "138875005"),
        ("95320005", "404684003"),
        ("93655004", "95320005"),
        ("400010006", "95320005"),
        ("254818000", "400010006"),
        ("1197294001", "93655004"),
        ("1197294001", "400010006"),
        ("123037004", "138875005"),
        ("39937001", "123037004"),
        ("111111000", "95320005"),
    ):
        release.is_a(child, parent)
    release.is_a("93655004", "123037004", active=False)
    release.is_a("93655004", "39937001", type_id=FINDING_SITE)
    release.stated("39937001", "404684003")
    return release


@pytest.fixture(params=["directory", "zip"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ClosureCodeSystem:
    source = tmp_path / ("release.zip" if request.param == "zip" else "release")
    release, concepts, is_a = read_release(skin_release().write(source))
    assert release.version == f"{SNOMED}/900000000000207008/version/20250101"
    meta = {"url": SNOMED, "version": release.version, "name": "SNOMED CT"}
    assert write_store(tmp_path / "snomed.sqlite", meta, concepts, is_a) == 9
    return ClosureCodeSystem(tmp_path / "snomed.sqlite")


def test_only_active_concepts_with_the_preferred_term_as_display(store: ClosureCodeSystem) -> None:
    assert store.get("111111000") is None
    melanoma = store.get("93655004")
    assert melanoma is not None and melanoma.display == "Malignant melanoma of skin"
    terms = {d["value"]: d["use"]["code"] for d in melanoma.designations}
    assert terms == {
        "Malignant melanoma of skin (disorder)": "900000000000003001",
        "Malignant melanoma of skin": "900000000000013009",
    }
    nevus = store.get("400010006")
    assert nevus is not None and nevus.display == "Melanocytic nevus of skin"  # no preferred synonym: the FSN
    assert nevus.parents == ["95320005"] and sorted(nevus.children) == ["1197294001", "254818000"]


def test_the_hierarchy_is_the_active_inferred_is_a_closure(store: ClosureCodeSystem) -> None:
    assert store.subsumption("404684003", "254818000") == "subsumes"
    assert store.subsumption("1197294001", "93655004") == "subsumed-by"
    assert store.subsumption("1197294001", "400010006") == "subsumed-by"  # both parents
    assert store.subsumption("93655004", "39937001") == "not-subsumed"  # inactive is-a, finding site, stated
    assert store.subsumption("404684003", "39937001") == "not-subsumed"
    assert set(store.descendants("95320005", 100)) == {"93655004", "400010006", "254818000", "1197294001"}
    assert store.ancestors("1197294001") == {"93655004", "400010006", "95320005", "404684003", "138875005"}
    with pytest.raises(TerminologyError):
        list(store.descendants("138875005", 3))


def test_expand_and_membership_over_the_store(store: ClosureCodeSystem) -> None:
    layers = Layered([_Holding(store), BaseContent([])])
    value_set = {
        "compose": {
            "include": [{"system": SNOMED, "filter": [{"property": "concept", "op": "is-a", "value": "400010006"}]}]
        }
    }
    entries = asyncio.run(Expander(layers).expand(value_set))
    assert [e.code for e in entries] == ["400010006", "254818000", "1197294001"]
    assert entries[0].display == "Melanocytic nevus of skin" and "Melanocytic naevus of skin" in entries[0].other_terms
    bound = {**value_set, "url": "urn:test:nevi"}
    membership = Membership(Layered([_Holding(store, bound), BaseContent([])]))
    assert asyncio.run(membership.verdict("urn:test:nevi", SNOMED, "254818000")) == "member"
    assert asyncio.run(membership.verdict("urn:test:nevi", SNOMED, "93655004")) == "not-member"


def test_a_directory_that_is_not_a_release_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TerminologyError, match="not an RF2 release"):
        read_release(tmp_path)
    broken = skin_release().write(tmp_path / "broken")
    concept_file = next(broken.rglob("sct2_Concept_Snapshot*"))
    concept_file.write_text("code\tdisplay\n1\tx\n")
    with pytest.raises(TerminologyError, match="header"):
        read_release(broken)


class _Holding:
    """A resolver holding one store (and, optionally, one value set)."""

    def __init__(self, store: ClosureCodeSystem, value_set: dict[str, object] | None = None) -> None:
        self.store = store
        self.value_set_resource = value_set

    async def code_system(self, url: str, version: str | None = None) -> ClosureCodeSystem | None:
        return self.store if url == SNOMED else None

    async def value_set(self, url: str, version: str | None = None) -> dict[str, object] | None:
        vs = self.value_set_resource
        return vs if vs is not None and vs.get("url") == url else None

    async def concept_maps(self, source_system: str | None) -> list[dict[str, object]]:
        return []
