"""Route templates (``dermbridge.route_template``): bounded, whatever a client puts in the URL."""

from __future__ import annotations

import pytest

from dermbridge.route_template import RouteTemplates


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("", "/fhir/{tenant}"),
        ("metadata", "/fhir/{tenant}/metadata"),
        ("Patient", "/fhir/{tenant}/Patient"),
        ("Patient/123", "/fhir/{tenant}/Patient/{id}"),
        ("Patient/123/_history/4", "/fhir/{tenant}/Patient/{id}/_history/{vid}"),
        ("Patient/123/Observation", "/fhir/{tenant}/Patient/{id}/Observation"),
        ("Patient/123/$everything", "/fhir/{tenant}/Patient/{id}/$everything"),
        ("Patient/123/$erase", "/fhir/{tenant}/Patient/{id}/$erase"),
        ("Patient/123/$nosuch", "/fhir/{tenant}/Patient/{id}/{operation}"),
        ("Smith/Anna", "/fhir/{tenant}/{type}/{id}"),
        ("Patient/_search", "/fhir/{tenant}/Patient/_search"),
        ("a/b/c/d/e/f/g", "/fhir/{tenant}/{type}/{id}/{type}/{id}/{id}/..."),
    ],
)
def test_fhir_paths_become_templates(path: str, template: str) -> None:
    assert RouteTemplates(["erase"]).fhir(path) == template


def test_a_request_no_route_matched_is_unmatched() -> None:
    assert RouteTemplates().of({"type": "http", "path": "/nowhere/123"}) == "(unmatched)"
