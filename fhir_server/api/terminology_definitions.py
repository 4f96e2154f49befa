"""The ``OperationDefinition``s of the terminology operations DermBridge serves: the parameters of the
R4 definitions it reads and answers (terminology-service.html), each derived from the official one
(``base``), invoked at type and instance level."""

from __future__ import annotations

from typing import Any

from fhir_server.operation_definitions import operation_definition, parameter

OFFICIAL = "http://hl7.org/fhir/OperationDefinition"
CODING_IN = "code:code system:uri version:string coding:Coding"
VALUE_SET_IN = "url:uri valueSet:ValueSet valueSetVersion:string"
# name -> (resource, description, in-parameters, out-parameters); "name:Type", "!" required, "*" repeating
SPECS: dict[str, tuple[str, str, str, str]] = {
    "lookup": (
        "CodeSystem",
        "Details of a code: name, version, display, designations, parent/child and other properties.",
        CODING_IN,
        "name:string! version:string display:string! designation* property*",
    ),
    "subsumes": (
        "CodeSystem",
        "How code A relates to code B in a hierarchical code system: equivalent, subsumes, subsumed-by, not-subsumed.",
        "codeA:code codeB:code system:uri version:string codingA:Coding codingB:Coding",
        "outcome:code!",
    ),
    "expand": (
        "ValueSet",
        "The expansion of a value set (is-a, descendent-of, is-not-a, generalizes, in, not-in, =, exists filters), "
        "filtered by text and paged with offset/count; at most 10,000 codes before filtering.",
        f"{VALUE_SET_IN} filter:string offset:integer count:integer",
        "return:ValueSet!",
    ),
    "validate-code": (
        "ValueSet",
        "Whether a code (with its display) is in a value set, or in a code system (CodeSystem/$validate-code).",
        f"{VALUE_SET_IN} {CODING_IN} display:string codeableConcept:CodeableConcept",
        "result:boolean! message:string display:string",
    ),
    "translate": (
        "ConceptMap",
        "The mappings of a code in a concept map (source to target; reverse is not supported).",
        f"url:uri conceptMap:ConceptMap {CODING_IN} codeableConcept:CodeableConcept targetsystem:uri",
        "result:boolean! message:string match*",
    ),
}


def _parameters(spec: str, use: str) -> list[dict[str, Any]]:
    found = []
    for item in spec.split():
        name, _, kind = item.rstrip("!*").partition(":")
        found.append(
            parameter(
                name,
                "in" if use == "in" else "out",
                kind or None,
                min=int(item.endswith("!")),
                max="*" if item.endswith("*") else "1",
            )
        )
    return found


def _definition(code: str) -> dict[str, Any]:
    resource, description, inputs, outputs = SPECS[code]
    definition = operation_definition(
        code,
        level="type",
        description=description,
        parameters=_parameters(inputs, "in") + _parameters(outputs, "out"),
        resource=[resource],
        affects_state=False,
    )
    definition["instance"] = True
    definition["base"] = f"{OFFICIAL}/{resource}-{code}"
    return definition


DEFINITIONS: dict[str, dict[str, Any]] = {code: _definition(code) for code in SPECS}
DEFINITIONS["validate-code"]["resource"] = ["ValueSet", "CodeSystem"]
