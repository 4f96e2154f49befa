"""Required bindings (terminologies.html#required) checked through the terminology service: the value
set is found by the resolver (a tenant's own, the shipped base content, the profiles' own value sets)
and expanded by ``terminology.expansion``; a code, Coding or CodeableConcept must have a code in it.
A value set the service cannot find or expand is a warning: the binding is then not checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from terminology.errors import TerminologyError
from terminology.expansion import Expander
from terminology.resolver import Resolver, split_canonical

MAX_CHECKS = 200  # bound codes one validation checks


@dataclass(frozen=True, slots=True)
class BindingCheck:
    value_set: str
    value: Any
    expression: str


def codes_of(value: Any) -> list[tuple[str | None, str]]:
    """``(system, code)`` pairs of a code, Coding or CodeableConcept value."""
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    codings = value.get("coding") if "coding" in value or "text" in value else [value]
    return [
        (c.get("system"), str(c["code"]))
        for c in codings or []
        if isinstance(c, dict) and isinstance(c.get("code"), str)
    ]


class Bindings:
    """Checks the pending required bindings of one validation, each value set expanded once."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._expanded: dict[str, set[tuple[str, str]] | str] = {}

    async def _codes(self, url: str) -> set[tuple[str, str]] | str:
        """The value set's (system, code) pairs, or why it cannot be checked."""
        if url not in self._expanded:
            base, version = split_canonical(url, None)
            value_set = await self.resolver.value_set(base, version)
            if value_set is None:
                self._expanded[url] = f"the value set {url} is not known here: the binding was not checked"
            else:
                try:
                    self._expanded[url] = {(e.system, e.code) for e in await Expander(self.resolver).expand(value_set)}
                except TerminologyError as error:
                    self._expanded[url] = f"the value set {url} could not be expanded ({error.message})"
        return self._expanded[url]

    async def issues(self, checks: list[BindingCheck]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if len(checks) > MAX_CHECKS:
            message = f"the bindings of coded values after the first {MAX_CHECKS} were not checked"
            found.append(_issue("information", "too-costly", message, checks[MAX_CHECKS].expression))
        for check in checks[:MAX_CHECKS]:
            codes = await self._codes(check.value_set)
            if isinstance(codes, str):
                found.append(_issue("warning", "not-supported", codes, check.expression))
                continue
            given = codes_of(check.value)
            if not any((s, c) in codes if s is not None else any(c == k for _, k in codes) for s, c in given):
                shown = ", ".join(f"{s}#{c}" if s else c for s, c in given) or "no code"
                found.append(
                    _issue("error", "code-invalid", f"{shown} is not in the required value set {check.value_set}",
                           check.expression)
                )  # fmt: skip
        return found


def _issue(severity: str, code: str, diagnostics: str, expression: str) -> dict[str, Any]:
    return {"severity": severity, "code": code, "diagnostics": diagnostics, "expression": [expression]}
