"""The ``OperationDefinition``s of the terminology operations DermBridge serves: the parameters of the
R4 definitions it reads and answers (terminology-service.html), each derived from the official one
(``base``), invoked at type and instance level."""

from __future__ import annotations

from typing import Any

from fhir_server.operation_definitions import operation_definition, parameter

OFFICIAL = "http://hl7.org/fhir/OperationDefinition"


def _definition(resource: str, code: str, description: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    definition = operation_definition(
        code, level="type", description=description, parameters=parameters, resource=[resource], affects_state=False
    )
    definition["instance"] = True
    definition["base"] = f"{OFFICIAL}/{resource}-{code}"
    return definition


_CODING_IN = [
    parameter("code", "in", "code"),
    parameter("system", "in", "uri"),
    parameter("version", "in", "string"),
    parameter("coding", "in", "Coding"),
]

DEFINITIONS: dict[str, dict[str, Any]] = {
    "lookup": _definition(
        "CodeSystem",
        "lookup",
        "Details of a code: name, version, display, designations, parent/child and other properties.",
        [
            *_CODING_IN,
            parameter("name", "out", "string", min=1),
            parameter("version", "out", "string"),
            parameter("display", "out", "string", min=1),
            parameter("designation", "out", max="*"),
            parameter("property", "out", max="*"),
        ],
    ),
    "subsumes": _definition(
        "CodeSystem",
        "subsumes",
        "How code A relates to code B in a hierarchical code system: equivalent, subsumes, subsumed-by, not-subsumed.",
        [
            parameter("codeA", "in", "code"),
            parameter("codeB", "in", "code"),
            parameter("system", "in", "uri"),
            parameter("version", "in", "string"),
            parameter("codingA", "in", "Coding"),
            parameter("codingB", "in", "Coding"),
            parameter("outcome", "out", "code", min=1),
        ],
    ),
    "expand": _definition(
        "ValueSet",
        "expand",
        "The expansion of a value set (is-a, descendent-of, is-not-a, generalizes, in, not-in, =, exists filters), "
        "filtered by text and paged with offset/count; at most 10,000 codes before filtering.",
        [
            parameter("url", "in", "uri"),
            parameter("valueSet", "in", "ValueSet"),
            parameter("valueSetVersion", "in", "string"),
            parameter("filter", "in", "string"),
            parameter("offset", "in", "integer"),
            parameter("count", "in", "integer"),
            parameter("return", "out", "ValueSet", min=1),
        ],
    ),
    "validate-code": _definition(
        "ValueSet",
        "validate-code",
        "Whether a code (with its display) is in a value set, or in a code system (CodeSystem/$validate-code).",
        [
            parameter("url", "in", "uri"),
            parameter("valueSet", "in", "ValueSet"),
            parameter("valueSetVersion", "in", "string"),
            *_CODING_IN,
            parameter("display", "in", "string"),
            parameter("codeableConcept", "in", "CodeableConcept"),
            parameter("result", "out", "boolean", min=1),
            parameter("message", "out", "string"),
            parameter("display", "out", "string"),
        ],
    ),
    "translate": _definition(
        "ConceptMap",
        "translate",
        "The mappings of a code in a concept map (source to target; reverse is not supported).",
        [
            parameter("url", "in", "uri"),
            parameter("conceptMap", "in", "ConceptMap"),
            *_CODING_IN,
            parameter("codeableConcept", "in", "CodeableConcept"),
            parameter("targetsystem", "in", "uri"),
            parameter("result", "out", "boolean", min=1),
            parameter("message", "out", "string"),
            parameter("match", "out", max="*"),
        ],
    ),
}
DEFINITIONS["validate-code"]["resource"] = ["ValueSet", "CodeSystem"]
