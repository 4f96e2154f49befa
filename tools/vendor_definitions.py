"""Vendor the parts of the official FHIR R4 definitions DermBridge needs at run time.

Reads ``../shared/fhir-r4`` (development time only) and writes compact gzipped JSON into
``fhir_server/definitions/data``. The server never reads ``../shared``.

    python tools/vendor_definitions.py [--source ../shared/fhir-r4]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "fhir_server" / "definitions" / "data"
# R4's abstract bases, which the schema defines for the "_element" primitive extensions and friends.
ABSTRACT_TYPES = ("Element", "BackboneElement", "ResourceList")
SEARCH_KEYS = ("url", "code", "base", "type", "expression", "target", "component", "multipleOr", "modifier")
# The resource types DermBridge profiles (conformance/profiles): their base snapshots, and every complex
# data type's, are what a profile's snapshot is generated from and what $validate walks.
PROFILED_TYPES = ("BodyStructure", "Consent", "Device", "DiagnosticReport", "ImagingStudy", "Media", "Observation",
                  "Provenance", "Task")  # fmt: skip
ELEMENT_KEYS = ("id", "path", "short", "definition", "min", "max", "base", "type", "binding", "constraint",
                "contentReference", "slicing", "sliceName", "isModifier", "isSummary", "mustSupport")  # fmt: skip


def _write(name: str, data: object) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    # mtime=0 keeps the output byte-identical between runs.
    (OUT / name).write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"wrote {name}: {len(raw):,} bytes of JSON")


def _r4_structures(source: Path) -> dict[str, dict]:
    """The R4 (4.0.1) StructureDefinitions of concrete resources and data types, by type name."""
    found: dict[str, dict] = {}
    for name in ("profiles-resources.json", "profiles-types.json"):
        for entry in json.loads((source / name).read_text())["entry"]:
            sd = entry["resource"]
            if (
                sd.get("resourceType") == "StructureDefinition"
                and sd.get("derivation") == "specialization"
                and sd.get("fhirVersion") == "4.0.1"
                and sd["kind"] in ("resource", "complex-type", "primitive-type")
            ):
                found[sd["type"]] = sd
    return found


def _children(sd: dict) -> dict[str, set[str]]:
    """JSON property names allowed under each element path of one StructureDefinition."""
    allowed: dict[str, set[str]] = {}
    for element in sd["snapshot"]["element"]:
        path: str = element["path"]
        if "." not in path:
            continue
        parent, name = path.rsplit(".", 1)
        names = allowed.setdefault(parent, set())
        if name.endswith("[x]"):
            stem = name[:-3]
            names.update(stem + t["code"][0].upper() + t["code"][1:] for t in element.get("type", []))
        else:
            names.add(name)
    return allowed


def _r4b_fields(type_name: str) -> set[str]:
    """JSON names of fhir.resources' R4B model for a type (everything when it has none).

    The shared StructureDefinitions also carry another server's additions (Meta.project,
    Binary.url, ...); R4B's models are generated from HL7's own definitions, so a property
    must be in both to be R4.
    """
    from fhir.resources.R4B import get_fhir_model_class

    try:
        model = get_fhir_model_class(type_name)
    except (KeyError, ValueError, ImportError, AttributeError):
        return {"*"}
    return {info.alias or name for name, info in model.model_fields.items()}


def _summary_elements(sd: dict) -> dict[str, list[str]]:
    """Top-level elements in the summary (isSummary) and the mandatory ones (min > 0), for _summary."""
    summary, mandatory = [], []
    for element in sd["snapshot"]["element"]:
        path: str = element["path"]
        if path.count(".") != 1:
            continue
        name = path.split(".", 1)[1].removesuffix("[x]")
        if element.get("isSummary"):
            summary.append(name)
        if element.get("min", 0) > 0:
            mandatory.append(name)
    return {"summary": summary, "mandatory": mandatory}


def _prune_schema(schema: dict, structures: dict[str, dict]) -> dict:
    """Drop the definitions and properties that R4 does not have.

    The shared schema carries another server's additions (extra resource types, Meta.project,
    Reference.resource...). Validating against it would accept content that R4 rejects.
    """
    definitions: dict = schema["definitions"]
    keep: dict = {}
    for def_name, definition in definitions.items():
        root, _, backbone = def_name.partition("_")
        if root not in structures:
            if root[:1].islower() or root in ABSTRACT_TYPES:
                keep[def_name] = definition  # primitive patterns and the resource union
            continue
        children = _children(structures[root])
        if backbone:
            stem = backbone.rstrip("0123456789").lower()  # the schema numbers repeated names: _Interaction1
            paths = [p for p in children if p.split(".")[-1].lower() == stem]
            if not paths:
                continue
            allowed = set().union(*(children[p] for p in paths))
        else:
            allowed = children.get(root, set())
            r4b = _r4b_fields(root)
            if "*" not in r4b:
                allowed &= r4b
        props = definition.get("properties")
        if props is not None:
            definition = dict(definition)
            definition["properties"] = {
                k: v for k, v in props.items() if k == "resourceType" or k.lstrip("_") in allowed
            }
            definition["additionalProperties"] = False
        keep[def_name] = definition
    names = set(keep)
    keep["ResourceList"] = {
        "oneOf": [r for r in definitions["ResourceList"]["oneOf"] if r["$ref"].split("/")[-1] in names]
    }
    mapping = {k: v for k, v in schema["discriminator"]["mapping"].items() if k in names}
    dangling = set(re.findall(r'"#/definitions/(\w+)"', json.dumps(keep))) - set(keep)
    if dangling:
        raise SystemExit(f"the pruned schema refers to missing definitions: {sorted(dangling)}")
    return {
        **schema,
        "definitions": keep,
        "discriminator": {**schema["discriminator"], "mapping": mapping},
        "oneOf": keep["ResourceList"]["oneOf"],
    }


BOUND_STRENGTHS = ("required", "extensible", "preferred")
BINDING_DEPTH = 3  # data types nested in data types whose bindings are listed under a resource's paths
NOT_DESCENDED = ("Reference", "Extension", "Narrative", "Resource", "CodeableConcept", "Coding", "Quantity")


def _bindings(structures: dict[str, dict], type_name: str, prefix: str, depth: int = 0) -> list[list[str]]:
    """[path, strength, value set] of every required/extensible/preferred binding of a type's elements and of
    the elements of the data types they use (``Patient.identifier.type``), choice types named by their type
    (``Observation.effectiveTiming.code``)."""
    sd = structures[type_name]
    found: list[list[str]] = []
    for element in sd["snapshot"]["element"]:
        path: str = element["path"]
        if "." not in path:
            continue
        here = prefix + path[len(sd["type"]) :]
        binding = element.get("binding") or {}
        if binding.get("strength") in BOUND_STRENGTHS and binding.get("valueSet"):
            found.append([here, binding["strength"], binding["valueSet"].split("|")[0]])
        for kind in (t["code"] for t in element.get("type", [])):
            nested = structures.get(kind)
            if depth < BINDING_DEPTH and nested and nested["kind"] == "complex-type" and kind not in NOT_DESCENDED:
                named = here[:-3] + kind[0].upper() + kind[1:] if here.endswith("[x]") else here
                found.extend(_bindings(structures, kind, named, depth + 1))
    return found


def _element(element: dict) -> dict:
    """A snapshot element without its mappings, comments and XPath (what validation and snapshots need)."""
    kept = {k: v for k, v in element.items() if k in ELEMENT_KEYS or k.startswith(("fixed", "pattern"))}
    if "binding" in kept:
        kept["binding"] = {k: v for k, v in kept["binding"].items() if k in ("strength", "valueSet", "description")}
    if "constraint" in kept:
        keys = ("key", "severity", "human", "expression", "source")
        kept["constraint"] = [{k: v for k, v in c.items() if k in keys} for c in kept["constraint"]]
    return kept


def _base_structures(structures: dict[str, dict]) -> dict[str, dict]:
    """The profiled resource types' and the complex data types' StructureDefinitions, snapshot trimmed."""
    keys = ("url", "name", "type", "kind", "abstract", "baseDefinition", "derivation", "fhirVersion")
    return {
        name: {
            **{k: sd[k] for k in keys if k in sd},
            "snapshot": {"element": [_element(e) for e in sd["snapshot"]["element"]]},
        }
        for name, sd in sorted(structures.items())
        if name in PROFILED_TYPES or sd["kind"] == "complex-type"
    }


def vendor(source: Path) -> None:
    bundle = json.loads((source / "search-parameters.json").read_text())
    params = [{k: v for k, v in entry["resource"].items() if k in SEARCH_KEYS} for entry in bundle["entry"]]
    _write("search-parameters.json.gz", params)

    compartment = json.loads((source / "compartmentdefinition-patient.json").read_text())
    _write(
        "compartment-patient.json.gz",
        {r["code"]: r.get("param", []) for r in compartment["resource"]},
    )

    schema = json.loads((source / "fhir.schema.json").read_text())
    structures = _r4_structures(source)
    _write("fhir.schema.json.gz", _prune_schema(schema, structures))
    # Served types: R4's, less the few R4-only ones that fhir.resources' R4B models lack.
    resource_types = sorted(
        name for name, sd in structures.items() if sd["kind"] == "resource" and "*" not in _r4b_fields(name)
    )
    r4_only = sorted(name for name, sd in structures.items() if sd["kind"] == "resource" and name not in resource_types)
    _write("resource-types.json.gz", {"supported": resource_types, "r4_only_unsupported": r4_only})
    choices = sorted(
        {
            element["path"].rsplit(".", 1)[-1][:-3]
            for sd in structures.values()
            for element in sd["snapshot"]["element"]
            if element["path"].endswith("[x]")
        }
    )
    _write("choice-elements.json.gz", choices)
    _write("summary-elements.json.gz", {name: _summary_elements(structures[name]) for name in resource_types})
    _write("bindings.json.gz", {name: _bindings(structures, name, name) for name in resource_types})
    _write("structure-definitions.json.gz", _base_structures(structures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "fhir-r4"
    parser.add_argument("--source", type=Path, default=default)
    vendor(parser.parse_args().source)


if __name__ == "__main__":
    main()
