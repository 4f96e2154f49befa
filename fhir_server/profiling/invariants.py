"""FHIRPath invariants of the elements (conformance-rules.html#constraints), evaluated with fhirpathpy.

``ele-1``/``ext-1`` are left to the R4 schema and model (``fhir_server.validation``), ``dom-3`` and the
best-practice ``dom-6`` are not evaluated: the first needs the whole resource's references resolved, the
second is advice. An expression fhirpathpy cannot evaluate is reported as a warning, never as a failure.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

logger = logging.getLogger(__name__)
SKIPPED = frozenset({"ele-1", "ext-1", "dom-3", "dom-6"})


@functools.lru_cache(maxsize=512)
def _compiled(expression: str) -> Callable[..., list[Any]]:
    return fhirpathpy.compile(expression, models["r4"])


def holds(constraint: dict[str, Any], value: Any, resource: dict[str, Any]) -> bool | None:
    """True or False as the invariant holds on ``value``; None when it could not be evaluated."""
    try:
        result = _compiled(str(constraint["expression"]))(value, {"resource": resource, "rootResource": resource})
    except Exception as error:  # fhirpathpy raises many kinds; an expression it cannot run is no verdict
        logger.debug("invariant %s not evaluated: %s", constraint.get("key"), error)
        return None
    return result != [False]  # only a false verdict fails; an empty one is no finding (fhirpath.html#boolean)
