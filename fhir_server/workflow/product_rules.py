"""A tenant's product rules: which product a case that DICOM ingest opens is for (issue 14, "Flows per
organisation and product"), from the calling AE title and/or a DICOM attribute of its first image.

Kept as the tenant setting ``workflow.product-rules`` (``fhir_server.tenant_settings``), read at every case
opened, so a change applies to the next image in every process, with no restart::

    {"rules": [
      {"product": "skin-cancer", "attribute": "SOPClassUID", "value": "1.2.840.10008.5.1.4.1.1.77.1.7"},
      {"product": "non-cancer", "callingAE": "WARD-CAM", "attribute": "StudyDescription", "value": "Rash"},
      {"product": "non-cancer", "callingAE": "GP-CAMERA"}]}

The first rule whose conditions all hold names the product (a rule has a calling AE title, an attribute
and its value, or both). ``attribute`` is a DICOM keyword (PS3.6): a plain attribute matches when one of
its values equals ``value`` (case and surrounding spaces ignored), a code sequence (``...CodeSequence``)
when one of its items has the code ``value`` (``CodeValue``, or ``CodingSchemeDesignator|CodeValue``).
No rule holds: the case has no product tag and takes the tenant's default product (``library``).
This module knows no DICOM: ingest hands it the attribute values it asks for (``attributes``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import OperationOutcomeError, unprocessable
from fhir_server.storage.port import TenantReader, TenantStore
from fhir_server.tenant_settings import read_setting, write_setting
from fhir_server.workflow.definition import PRODUCT_PATTERN

log = logging.getLogger(__name__)
SETTING = "workflow.product-rules"
MAX_RULES = 50
MAX_VALUE = 64  # a DICOM LO/UI value's length (PS3.5 6.2); a code value is at most 16
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 6.2 AE: 16 characters, no backslash
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # no control character in a value compared with DICOM text
KEYWORD = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
FIELDS = ("product", "callingAE", "attribute", "value")
KeywordCheck = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class ProductRule:
    product: str
    calling_ae: str | None = None
    attribute: str | None = None  # a DICOM keyword
    value: str | None = None

    def holds(self, calling_ae: str | None, attributes: Mapping[str, Sequence[str]]) -> bool:
        if self.calling_ae is not None and (calling_ae or "").strip() != self.calling_ae:
            return False
        if self.attribute is None:
            return True
        wanted = _folded(self.value or "")
        return any(_folded(found) == wanted for found in attributes.get(self.attribute, ()))

    def describe(self) -> str:
        conditions = [f"calling AE {self.calling_ae}"] if self.calling_ae else []
        if self.attribute:
            conditions.append(f"{self.attribute} = {self.value}")
        return f"{' and '.join(conditions)} -> {self.product}"


def _folded(text: str) -> str:
    return text.strip().casefold()


def _rule(spec: Any, n: int, is_keyword: KeywordCheck) -> ProductRule:
    where = f"rules[{n}]"
    if not isinstance(spec, dict) or not set(spec) <= set(FIELDS):
        raise unprocessable(f"{where}: a rule is an object of {list(FIELDS)}", [where])
    product, ae, attribute, value = (spec.get(name) for name in FIELDS)
    if not isinstance(product, str) or not PRODUCT_PATTERN.match(product):
        raise unprocessable(f"{where}.product: lower-case letters, digits and '-', at most 64", [f"{where}.product"])
    if ae is not None and (not isinstance(ae, str) or not AE_TITLE.match(ae) or not ae.strip()):
        raise unprocessable(f"{where}.callingAE: an AE title of 1 to 16 characters (PS3.5)", [f"{where}.callingAE"])
    if attribute is None and value is not None:
        raise unprocessable(f"{where}: a value needs the attribute it is a value of", [f"{where}.attribute"])
    if attribute is not None and (not isinstance(attribute, str) or not KEYWORD.match(attribute)
                                  or not is_keyword(attribute)):  # fmt: skip
        raise unprocessable(f"{where}.attribute: {str(attribute)[:70]!r} is not a DICOM keyword (PS3.6) of text: "
                            "no bulk data, no sequence but a code sequence",
                            [f"{where}.attribute"])  # fmt: skip
    if attribute is not None and (not isinstance(value, str) or not value.strip() or len(value) > MAX_VALUE
                                  or CONTROL.search(value)):  # fmt: skip
        raise unprocessable(f"{where}.value: the attribute's value, 1 to {MAX_VALUE} characters, no control characters",
                            [f"{where}.value"])  # fmt: skip
    if ae is None and attribute is None:
        raise unprocessable(f"{where}: a rule names a callingAE, an attribute and its value, or both", [where])
    return ProductRule(product, ae.strip() if ae else None, attribute, value.strip() if value else None)


def parse_rules(value: Any, is_keyword: KeywordCheck = lambda _: True) -> tuple[ProductRule, ...]:
    """The rules a setting holds (none when unset); a 422 OperationOutcome naming the rule that is wrong.
    ``is_keyword``: the DICOM dictionary's check of a keyword, from a package that knows DICOM."""
    if value is None:
        return ()
    rules = value.get("rules") if isinstance(value, dict) and set(value) <= {"rules"} else None
    if not isinstance(rules, list):
        raise unprocessable('the product rules are {"rules": [...]}', ["rules"])
    if len(rules) > MAX_RULES:
        raise unprocessable(f"at most {MAX_RULES} product rules", ["rules"])
    return tuple(_rule(spec, n, is_keyword) for n, spec in enumerate(rules))


def wanted_attributes(rules: Sequence[ProductRule]) -> frozenset[str]:
    """The DICOM keywords the rules look at (ingest reads only these)."""
    return frozenset(r.attribute for r in rules if r.attribute)


def product_for(
    rules: Sequence[ProductRule], calling_ae: str | None, attributes: Mapping[str, Sequence[str]]
) -> str | None:
    """The product of the first rule that holds; None: no rule holds."""
    return next((r.product for r in rules if r.holds(calling_ae, attributes)), None)


async def read_rules(reader: TenantReader) -> tuple[ProductRule, ...]:
    """The tenant's rules. A stored value that does not parse (it is checked when set) names no product: ingest
    goes on, the case takes the tenant's default product, and the log says why."""
    try:
        return parse_rules(await read_setting(reader, SETTING))
    except OperationOutcomeError as error:
        log.error("the tenant's product rules are not usable, none applied: %s", error)
        return ()


async def set_rules(
    store: TenantStore, value: Any, is_keyword: KeywordCheck = lambda _: True
) -> tuple[ProductRule, ...]:
    """Keep the tenant's rules (None: none) once they parse; returns them."""
    rules = parse_rules(value, is_keyword)
    await write_setting(store, SETTING, value)
    return rules


def describe_rules(rules: Sequence[ProductRule]) -> list[str]:
    return [f"{n + 1}. {rule.describe()}" for n, rule in enumerate(rules)]
