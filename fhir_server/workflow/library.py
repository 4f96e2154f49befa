"""Which workflow definition applies to a case (issue 14, "Flows per organisation and product").

- A case's **product** is the code of its ``DiagnosticReport.meta.tag`` in ``urn:dermbridge:product`` (an EHR
  creating or ordering the case names it), else the tenant's default product (tenant setting
  ``workflow.default-product``), else ``skin-cancer``. DICOM ingest opens cases without a tag: they take the
  tenant's default product.
- The **definition** is the tenant's ``active`` PlanDefinition for that product (at most one: activating a
  version retires the previous), else the product's shipped default (``shipped/``), else none: the case is
  refused (the engine records why, a FHIR-created case gets 422).

Nothing is cached: a definition activated through the API or the CLI applies to the next event, in every process.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fhir_server.repository import Repository
from fhir_server.tenant_settings import read_setting
from fhir_server.workflow import codes
from fhir_server.workflow.definition import Flow, parse_flow

DEFAULT_PRODUCT = "skin-cancer"
PRODUCT_SETTING = "workflow.default-product"
SHIPPED = ("ai-only", "human-only", "ai-then-signoff", "store-only")


@functools.cache
def shipped_definitions() -> dict[str, dict[str, Any]]:
    """The four example definitions shipped with the package, by name (read-only copies)."""
    folder = resources.files("fhir_server.workflow") / "shipped"
    return {name: json.loads((folder / f"{name}.json").read_text()) for name in SHIPPED}


def shipped(name: str) -> dict[str, Any]:
    """A fresh copy of a shipped definition (KeyError for an unknown name)."""
    return json.loads(json.dumps(shipped_definitions()[name]))


def tagged_product(resource: dict[str, Any]) -> str | None:
    for tag in (resource.get("meta") or {}).get("tag") or []:
        if isinstance(tag, dict) and tag.get("system") == codes.PRODUCT_SYSTEM and tag.get("code"):
            return str(tag["code"])
    return None


@dataclass(frozen=True, slots=True)
class Choice:
    """The flow of a case, or why it has none (``flow`` None)."""

    product: str
    flow: Flow | None
    source: str  # "tenant" | "shipped" | "none"

    @property
    def refusal(self) -> str:
        return f"no active workflow definition for product {self.product!r} in this tenant and no shipped default"


class FlowLibrary:
    """The definitions of every tenant. ``defaults``: product -> the shipped definition used when a tenant
    has no active one (``DERMBRIDGE_INFERENCE_HUMAN_REVIEW`` chooses ai-then-signoff or ai-only for skin-cancer)."""

    def __init__(self, defaults: dict[str, str] | None = None) -> None:
        self.defaults = {DEFAULT_PRODUCT: "ai-then-signoff"} if defaults is None else dict(defaults)

    @classmethod
    def with_human_review(cls, human_review: bool) -> FlowLibrary:
        return cls({DEFAULT_PRODUCT: "ai-then-signoff" if human_review else "ai-only"})

    async def product_of(self, repo: Repository, report: dict[str, Any] | None) -> str:
        tagged = tagged_product(report or {})
        if tagged:
            return tagged
        configured = await read_setting(repo.transaction or repo.store, PRODUCT_SETTING)
        return str(configured) if isinstance(configured, str) and configured else DEFAULT_PRODUCT

    async def for_product(self, repo: Repository, product: str) -> Choice:
        criteria = [("context", f"{codes.PRODUCT_SYSTEM}|{product}"), ("status", "active")]
        for stored in await repo.find("PlanDefinition", criteria, 2):
            return Choice(product, parse_flow(stored.resource), "tenant")
        name = self.defaults.get(product)
        if name is not None:
            return Choice(product, parse_flow(shipped_definitions()[name]), "shipped")
        return Choice(product, None, "none")

    async def for_case(self, repo: Repository, report_id: str) -> Choice:
        report = await repo.current("DiagnosticReport", report_id) if report_id else None
        return await self.for_product(repo, await self.product_of(repo, report))
