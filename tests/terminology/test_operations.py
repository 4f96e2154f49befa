"""The terminology operations over a small hand-built hierarchy, expected outputs worked out by hand
(terminology-service.html), and over the shipped base content."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from terminology import operations
from terminology.content import BaseContent, base_content
from terminology.errors import TerminologyError
from terminology.expansion import Expander

T = TypeVar("T")
SYSTEM = "urn:example:shapes"
SNOMED = "http://snomed.info/sct"
# shape > polygon > (triangle, square); shape > round > circle; square also child of "regular" (two parents)
SHAPES: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "id": "shapes",
    "url": SYSTEM,
    "version": "1",
    "name": "Shapes",
    "status": "active",
    "content": "complete",
    "concept": [
        {
            "code": "shape",
            "display": "Shape",
            "concept": [
                {
                    "code": "polygon",
                    "display": "Polygon",
                    "concept": [{"code": "triangle", "display": "Triangle"}, {"code": "square", "display": "Square"}],
                },
                {"code": "round", "display": "Round", "concept": [{"code": "circle", "display": "Circle"}]},
            ],
        },
        {"code": "regular", "display": "Regular", "property": [{"code": "child", "valueCode": "square"}]},
    ],
}


def value_set(*includes: dict[str, Any], excludes: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    compose: dict[str, Any] = {"include": list(includes)}
    if excludes:
        compose["exclude"] = list(excludes)
    return {"resourceType": "ValueSet", "url": "urn:example:vs", "status": "active", "compose": compose}


def is_a(code: str, op: str = "is-a") -> dict[str, Any]:
    return {"system": SYSTEM, "filter": [{"property": "concept", "op": op, "value": code}]}


def run(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(work)


@pytest.fixture
def shapes() -> BaseContent:
    return BaseContent([SHAPES])


def codes(expanded: dict[str, Any]) -> list[str]:
    return [c["code"] for c in expanded["expansion"].get("contains", [])]


def named(parameters: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in parameters["parameter"] if p["name"] == name]


def test_is_a_includes_the_code_and_every_descendant_in_code_system_order(shapes: BaseContent) -> None:
    assert codes(run(operations.expand(shapes, value_set(is_a("polygon"))))) == ["polygon", "triangle", "square"]
    assert codes(run(operations.expand(shapes, value_set(is_a("polygon", "descendent-of"))))) == ["triangle", "square"]
    assert codes(run(operations.expand(shapes, value_set(is_a("square", "generalizes"))))) == [
        "shape",
        "polygon",
        "square",
        "regular",
    ]
    assert codes(run(operations.expand(shapes, value_set(is_a("polygon", "is-not-a"))))) == [
        "shape",
        "round",
        "circle",
        "regular",
    ]


def test_a_child_property_makes_a_second_parent(shapes: BaseContent) -> None:
    assert codes(run(operations.expand(shapes, value_set(is_a("regular"))))) == ["square", "regular"]
    lookup = run(operations.lookup(shapes, SYSTEM, "square"))
    parents = [p["part"][1]["valueCode"] for p in named(lookup, "property") if p["part"][0]["valueCode"] == "parent"]
    assert parents == ["polygon", "regular"]


def test_in_and_equals_filters_exclude_text_filter_and_paging(shapes: BaseContent) -> None:
    chosen = {"system": SYSTEM, "filter": [{"property": "concept", "op": "in", "value": "circle,square,nope"}]}
    assert codes(run(operations.expand(shapes, value_set(chosen)))) == ["square", "circle"]
    equal = {"system": SYSTEM, "filter": [{"property": "concept", "op": "=", "value": "round"}]}
    assert codes(run(operations.expand(shapes, value_set(equal)))) == ["round"]
    everything_but_round = value_set({"system": SYSTEM}, excludes=(is_a("round"),))
    assert codes(run(operations.expand(shapes, everything_but_round))) == [
        "shape",
        "polygon",
        "triangle",
        "square",
        "regular",
    ]
    page = run(operations.expand(shapes, value_set({"system": SYSTEM}), text="R", offset=1, count=2))
    # shapes whose display or code contains "r" (case-insensitive): triangle, square, round, circle, regular
    assert page["expansion"]["total"] == 5
    assert codes(page) == ["square", "round"]
    assert page["expansion"]["offset"] == 1


def test_an_expansion_larger_than_the_bound_is_refused_not_built(shapes: BaseContent) -> None:
    with pytest.raises(TerminologyError) as caught:
        run(Expander(shapes, limit=3).expand(value_set({"system": SYSTEM})))
    assert (caught.value.status, caught.value.code) == (400, "too-costly")


def test_unknown_system_version_and_code_are_errors_with_their_expression(shapes: BaseContent) -> None:
    with pytest.raises(TerminologyError) as caught:
        run(operations.lookup(shapes, "urn:example:nope", "x"))
    assert (caught.value.status, caught.value.expression) == (404, ["system"])
    with pytest.raises(TerminologyError) as caught:
        run(operations.lookup(shapes, SYSTEM, "square", version="2"))
    assert caught.value.status == 404 and "version 2" in caught.value.message
    with pytest.raises(TerminologyError) as caught:
        run(operations.lookup(shapes, SYSTEM, "hexagon"))
    assert (caught.value.status, caught.value.expression) == (404, ["code"])
    with pytest.raises(TerminologyError) as caught:
        run(operations.subsumes(shapes, SYSTEM, "square", "hexagon"))
    assert (caught.value.status, caught.value.expression) == (400, ["codeB"])
    with pytest.raises(TerminologyError) as caught:
        run(
            operations.expand(
                shapes, value_set({"system": SYSTEM, "filter": [{"property": "concept", "op": "regex", "value": "."}]})
            )
        )
    assert (caught.value.status, caught.value.code) == (400, "not-supported")


def test_subsumes_answers_the_four_outcomes(shapes: BaseContent) -> None:
    def outcome(a: str, b: str) -> str:
        return str(run(operations.subsumes(shapes, SYSTEM, a, b))["parameter"][0]["valueCode"])

    assert outcome("polygon", "square") == "subsumes"
    assert outcome("square", "shape") == "subsumed-by"
    assert outcome("circle", "circle") == "equivalent"
    assert outcome("circle", "square") == "not-subsumed"


def test_validate_code_answers_false_with_a_message_for_a_code_not_in_the_set(shapes: BaseContent) -> None:
    polygons = value_set(is_a("polygon"))
    assert named(run(operations.validate_code(shapes, polygons, SYSTEM, "square")), "result")[0]["valueBoolean"]
    wrong = run(operations.validate_code(shapes, polygons, SYSTEM, "circle"))
    assert named(wrong, "result")[0]["valueBoolean"] is False
    assert "circle" in named(wrong, "message")[0]["valueString"]
    wrong_display = run(operations.validate_code(shapes, polygons, SYSTEM, "square", "Circle"))
    assert named(wrong_display, "result")[0]["valueBoolean"] is False
    assert named(run(operations.validate_code(shapes, polygons, SYSTEM, "square", "SQUARE")), "result")[0][
        "valueBoolean"
    ]


def test_shipped_snomed_fragment_lookup_and_hierarchy() -> None:
    shipped = base_content()
    lookup = run(operations.lookup(shipped, SNOMED, "254818000"))
    assert named(lookup, "display")[0]["valueString"] == "Dysplastic nevus of skin"
    assert run(operations.subsumes(shipped, SNOMED, "400096001", "254818000"))["parameter"][0]["valueCode"] == (
        "subsumes"
    )
    diagnoses = run(shipped.value_set("https://dermbridge.org/fhir/ValueSet/skin-lesion-diagnoses"))
    assert diagnoses is not None
    melanoma = run(operations.expand(shipped, diagnoses, text="melanoma"))
    assert codes(melanoma) == ["93655004", "1197294001", "109266006"]


def test_shipped_concept_map_translates_snomed_to_icd10() -> None:
    shipped = base_content()
    maps = run(shipped.concept_maps(SNOMED))
    answer = run(operations.translate(shipped, maps, SNOMED, "254701007"))
    assert named(answer, "result")[0]["valueBoolean"] is True
    match = named(answer, "match")[0]["part"]
    assert match[0] == {"name": "equivalence", "valueCode": "wider"}
    assert match[1]["valueCoding"]["code"] == "C44.9"
    nothing = run(operations.translate(shipped, maps, SNOMED, "439401001"))
    assert named(nothing, "result")[0]["valueBoolean"] is False
    assert named(nothing, "match") == []
