"""``/conformance``: the FHIR CapabilityStatement and the DICOM conformance statement as pages for people
(and the DICOM statement as markdown). Like ``metadata``, no token is needed: the statements hold the
configuration only, never patient data, and each page is built from bounded registries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from conformance.capability_html import capability_html
from conformance.markdown_html import to_html

router = APIRouter(prefix="/conformance", include_in_schema=False)
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:80rem;margin:2rem auto;padding:0 1rem;line-height:1.4}"
    "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #bbb;padding:.25rem .5rem;"
    "vertical-align:top;text-align:left}th{background:#eee}code{background:#f4f4f4}"
)
_NO_DIMSE = "DIMSE is disabled on this server\n"


@dataclass(frozen=True, slots=True)
class ConformanceSources:
    """What the pages are generated from, handed over by the composition root."""

    capability: Callable[[], dict[str, Any]]  # the CapabilityStatement of the default tenant's base
    dicom: Callable[[], str] | None  # the DICOM statement's markdown; None: DIMSE is disabled


def page(title: str, body: str) -> HTMLResponse:
    """A whole HTML document around ``body`` (already escaped)."""
    return HTMLResponse(
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _sources(request: Request) -> ConformanceSources:
    sources: ConformanceSources = request.app.state.conformance
    return sources


@router.get("")
async def index(request: Request) -> HTMLResponse:
    dicom = _sources(request).dicom is not None
    links = '<li><a href="/conformance/fhir">FHIR CapabilityStatement</a></li>' + (
        '<li><a href="/conformance/dicom.html">DICOM conformance statement</a>'
        ' (<a href="/conformance/dicom">markdown</a>)</li>'
        if dicom
        else "<li>DICOM: DIMSE is disabled on this server</li>"
    )
    return page("DermBridge conformance", f"<h1>DermBridge conformance statements</h1><ul>{links}</ul>")


@router.get("/fhir")
async def fhir_statement(request: Request) -> HTMLResponse:
    return page("DermBridge FHIR CapabilityStatement", capability_html(_sources(request).capability()))


@router.get("/dicom")
async def dicom_markdown(request: Request) -> Response:
    dicom = _sources(request).dicom
    if dicom is None:
        return Response(_NO_DIMSE, 404, media_type="text/plain")
    return Response(dicom(), media_type="text/markdown; charset=utf-8")


@router.get("/dicom.html")
async def dicom_statement(request: Request) -> Response:
    dicom = _sources(request).dicom
    if dicom is None:
        return Response(_NO_DIMSE, 404, media_type="text/plain")
    return page("DermBridge DICOM Conformance Statement", to_html(dicom()))
