"""The product of a case that ingest opens (``fhir_server.workflow.product_rules``): the tenant's rules are
matched against the calling AE title and the attributes of the image that opens the case.

A rule's attribute is read as text: each value of a multi-valued attribute (PS3.5 6.4), and for a code
sequence each item's ``CodeValue`` and ``CodingSchemeDesignator|CodeValue`` (PS3.3 8.8), so a rule can name
a procedure code with or without its scheme.
"""

from __future__ import annotations

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from fhir_server.storage.port import TenantReader
from fhir_server.workflow.product_rules import product_for, read_rules, wanted_attributes

MAX_ITEMS = 20  # items of a code sequence looked at
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})  # PS3.5 6.2: binary data, never a rule's text


def is_keyword(keyword: str) -> bool:
    """Whether ``keyword`` names an attribute of the DICOM dictionary (PS3.6) a rule can compare as text,
    for checking rules when set: not bulk data (``PixelData``...) nor a sequence other than a code sequence."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return False
    vrs = set(dictionary_VR(tag).replace(" or ", "/").split("/"))
    if vrs & BULK_VRS:
        return False
    return "SQ" not in vrs or keyword.endswith("CodeSequence")


def attribute_texts(ds: Dataset, keyword: str) -> list[str]:
    """An attribute's values as text; a code sequence's codes."""
    value = ds.get(keyword)
    if value is None:
        return []
    if isinstance(value, Sequence):
        codes = []
        for item in list(value)[:MAX_ITEMS]:
            code, scheme = str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", ""))
            codes += [code, f"{scheme}|{code}"] if code else []
        return codes
    values = list(value) if isinstance(value, MultiValue) else [value]
    return [str(v) for v in values if str(v).strip()]


async def case_product(reader: TenantReader, ds: Dataset, calling_ae: str | None) -> str | None:
    """The product the tenant's rules give a case opened by ``ds`` (None: no rule holds, or no rules)."""
    rules = await read_rules(reader)
    if not rules:
        return None
    attributes = {keyword: attribute_texts(ds, keyword) for keyword in wanted_attributes(rules)}
    return product_for(rules, calling_ae, attributes)
