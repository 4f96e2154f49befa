"""Value set membership (terminology.membership) against the compose rules of valueset.html#compose:
a nested value set keeps its own exclusions, several value sets in one include are intersected, an exclude
of a value set removes its codes, and what the server cannot decide stays ``unknown``."""

from __future__ import annotations

import asyncio
from typing import Any

from terminology.content import BaseContent
from terminology.membership import Membership

CS = "urn:test:colours"


def code_system() -> dict[str, Any]:
    concepts = [{"code": code} for code in ("red", "green", "blue", "black")]
    return {"resourceType": "CodeSystem", "url": CS, "status": "active", "content": "complete", "concept": concepts}


def value_set(url: str, include: list[dict[str, Any]], exclude: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    compose: dict[str, Any] = {"include": include}
    if exclude:
        compose["exclude"] = exclude
    return {"resourceType": "ValueSet", "url": url, "status": "active", "compose": compose}


def verdict(resources: list[dict[str, Any]], url: str, code: str, system: str | None = CS) -> str:
    return asyncio.run(Membership(BaseContent([code_system(), *resources])).verdict(url, system, code))


NOT_BLUE = value_set("urn:vs:not-blue", [{"system": CS}], [{"system": CS, "concept": [{"code": "blue"}]}])
BRIGHT = value_set("urn:vs:bright", [{"system": CS, "concept": [{"code": "red"}, {"code": "blue"}]}])


def test_a_nested_value_set_keeps_its_own_exclusions() -> None:
    outer = value_set("urn:vs:outer", [{"valueSet": ["urn:vs:not-blue"]}])
    assert verdict([NOT_BLUE, outer], "urn:vs:outer", "red") == "member"
    assert verdict([NOT_BLUE, outer], "urn:vs:outer", "blue") == "not-member"
    assert verdict([NOT_BLUE, outer], "urn:vs:outer", "blue", system=None) == "not-member"


def test_a_code_excluded_by_one_include_is_still_a_member_through_another() -> None:
    outer = value_set("urn:vs:outer", [{"valueSet": ["urn:vs:not-blue"]}, {"valueSet": ["urn:vs:bright"]}])
    assert verdict([NOT_BLUE, BRIGHT, outer], "urn:vs:outer", "blue") == "member"


def test_value_sets_in_one_include_are_intersected() -> None:
    both = value_set("urn:vs:both", [{"valueSet": ["urn:vs:not-blue", "urn:vs:bright"]}])
    assert verdict([NOT_BLUE, BRIGHT, both], "urn:vs:both", "red") == "member"
    assert verdict([NOT_BLUE, BRIGHT, both], "urn:vs:both", "blue") == "not-member"  # excluded by one side
    assert verdict([NOT_BLUE, BRIGHT, both], "urn:vs:both", "green") == "not-member"  # outside the other side


def test_an_excluded_value_set_removes_its_codes() -> None:
    outer = value_set("urn:vs:dark", [{"system": CS}], [{"valueSet": ["urn:vs:bright"]}])
    assert verdict([BRIGHT, outer], "urn:vs:dark", "black") == "member"
    assert verdict([BRIGHT, outer], "urn:vs:dark", "red") == "not-member"


def test_an_unknown_nested_value_set_leaves_the_rest_undecided() -> None:
    outer = value_set("urn:vs:outer", [{"valueSet": ["urn:vs:nowhere"]}, {"system": CS, "concept": [{"code": "red"}]}])
    assert verdict([outer], "urn:vs:outer", "red") == "member"
    assert verdict([outer], "urn:vs:outer", "green") == "unknown"


def test_a_system_not_held_is_unknown_never_refused() -> None:
    outer = value_set("urn:vs:elsewhere", [{"system": "urn:not:held"}])
    assert verdict([outer], "urn:vs:elsewhere", "x", system="urn:not:held") == "unknown"
    assert verdict([outer], "urn:vs:elsewhere", "red") == "not-member"
