"""The character set of C-FIND responses (PS3.5 §6.1, PS3.4 C.4.1.1.3.1).

A response is encoded in the Specific Character Set the query named, when every text value of the
response can be; otherwise, or when the query named none, in ISO_IR 192 (UTF-8), which holds any
name. The response always carries (0008,0005), so that no receiver has to guess.
"""

from __future__ import annotations

from pydicom import charset
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

UTF8 = "ISO_IR 192"
TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})


def requested(identifier: Dataset) -> list[str]:
    """The Specific Character Set terms of a query (empty: the default repertoire)."""
    value = identifier.get("SpecificCharacterSet")
    if value is None:
        return []
    terms = [str(term).strip() for term in (value if isinstance(value, MultiValue | list) else [value])]
    return terms if any(terms) else []


def _texts(response: Dataset) -> list[str]:
    found = []
    for element in response:
        if element.VR in TEXT_VRS and element.value is not None:
            values = element.value if isinstance(element.value, MultiValue | list) else [element.value]
            found += [str(v) for v in values]
    return found


def _encodable(text: str, terms: list[str]) -> bool:
    codecs = charset.convert_encodings(terms)
    for codec in codecs:
        try:
            text.encode(codec)
            return True
        except (UnicodeError, LookupError):
            continue
    if len(codecs) > 1:  # ISO 2022 code extensions: parts in different repertoires
        try:
            charset._encode_string_parts(text, codecs)
            return True
        except (ValueError, UnicodeError):
            return False
    return False


def with_character_set(response: Dataset, query_terms: list[str]) -> Dataset:
    """``response`` with (0008,0005): the query's character set if it can hold every value, else UTF-8."""
    terms = query_terms if query_terms and all(_encodable(t, query_terms) for t in _texts(response)) else [UTF8]
    response.SpecificCharacterSet = terms if len(terms) > 1 else terms[0]
    return response
