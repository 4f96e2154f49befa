"""The FHIR CapabilityStatement as a page people can read (capabilitystatement.html): the server's
interactions and operations, then one row per resource type with its interactions, search parameters,
_include/_revinclude and operations. Every value is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from fhir_server.declared_profiles import CANONICAL_BASE

_OWN = f"{CANONICAL_BASE}/OperationDefinition/"


def _codes(entries: list[dict[str, Any]], key: str = "code") -> str:
    return escape(", ".join(str(entry[key]) for entry in entries))


def _href(definition: str, base: str) -> str:
    """Where a person reads a definition: this server's copy of DermBridge's own (the IG canonical is a name)."""
    return f"{base}/OperationDefinition/{definition.removeprefix(_OWN)}" if definition.startswith(_OWN) else definition


def _operations(entries: list[dict[str, Any]], base: str) -> str:
    return ", ".join(
        f'<a href="{escape(_href(op["definition"], base), quote=True)}">${escape(op["name"])}</a>' for op in entries
    )


def _resource_row(resource: dict[str, Any], base: str) -> str:
    cells = (
        escape(resource["type"]),
        _codes(resource.get("interaction", [])),
        _codes(resource.get("searchParam", []), "name"),
        escape(", ".join(resource.get("searchRevInclude", []))),
        _operations(resource.get("operation", []), base),
    )
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def capability_html(statement: dict[str, Any]) -> str:
    """The body HTML of a CapabilityStatement."""
    rest = statement["rest"][0]
    base = str(statement["implementation"]["url"])
    software = statement.get("software", {})
    head = (
        f"<h1>FHIR CapabilityStatement: {escape(software.get('name', ''))} {escape(software.get('version', ''))}</h1>"
        f"<p>FHIR {escape(statement['fhirVersion'])}, formats {escape(', '.join(statement['format']))}; base"
        f" <code>{escape(statement['implementation']['url'])}</code>. {escape(rest.get('documentation', ''))}</p>"
        f"<p>Security: {escape(rest.get('security', {}).get('description', 'none declared'))}</p>"
        "<h2>Whole-system interactions and operations</h2>"
        f"<p>Interactions: {_codes(rest.get('interaction', []))}.</p>"
        f"<p>Operations: {_operations(rest.get('operation', []), base) or 'none'}.</p>"
    )
    header = "".join(
        f"<th>{h}</th>" for h in ("Resource type", "Interactions", "Search parameters", "_revinclude", "Operations")
    )
    rows = "".join(_resource_row(resource, base) for resource in rest["resource"])
    return head + f"<h2>Resource types</h2><table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"
