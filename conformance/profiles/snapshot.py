"""A profile's snapshot generated from its differential and the R4 base snapshot (profiling.html#snapshot,
elementdefinition.html#interpretation).

The differential is a list of ElementDefinitions, each with an ``id`` (elementdefinition.html#id):
``Observation.code.coding:risk.system`` names the ``system`` of the ``risk`` slice of ``code.coding``.
Each differential element either constrains an element of the snapshot (its fields replace the base's;
its ``constraint``s are added), or adds a slice (a copy of the sliced element), or reaches into a data
type, whose children are then copied from the data type's StructureDefinition. What the differential
does not name stays as the base has it.
"""

from __future__ import annotations

import copy
from typing import Any

from fhir_server.definitions import base_structures

Element = dict[str, Any]
_REPLACED = ("short", "definition", "min", "max", "type", "binding", "slicing", "mustSupport")


def _last(element_id: str) -> str:
    return element_id.rsplit(".", 1)[-1]


def _parent(element_id: str) -> str:
    return element_id.rsplit(".", 1)[0]


def _in_subtree(element_id: str, root: str) -> bool:
    return element_id == root or element_id.startswith((root + ".", root + ":"))


class _Snapshot:
    def __init__(self, base: list[Element], profile_url: str) -> None:
        self.elements = [copy.deepcopy(e) for e in base]
        self.url = profile_url

    def _index(self, element_id: str) -> int | None:
        return next((i for i, e in enumerate(self.elements) if e["id"] == element_id), None)

    def _subtree_end(self, element_id: str) -> int:
        start = self._index(element_id)
        assert start is not None
        end = start + 1
        while end < len(self.elements) and _in_subtree(self.elements[end]["id"], element_id):
            end += 1
        return end

    def ensure(self, element_id: str) -> int:
        """The position of ``element_id``, adding it (a slice, or a data type's child) when missing."""
        found = self._index(element_id)
        if found is not None:
            return found
        last = _last(element_id)
        if ":" in last:  # a new slice of the element without the slice name
            sliced_id = element_id[: len(element_id) - len(last)] + last.split(":", 1)[0]
            sliced = self.elements[self.ensure(sliced_id)]
            slice_element = {k: copy.deepcopy(v) for k, v in sliced.items() if k != "slicing"}
            slice_element.update(id=element_id, sliceName=last.split(":", 1)[1])
            at = self._subtree_end(sliced_id)
            self.elements.insert(at, slice_element)
            return at
        self._expand(_parent(element_id))
        found = self._index(element_id)
        if found is None:
            raise ValueError(f"{self.url}: no element {element_id} in the base")
        return found

    def _expand(self, parent_id: str) -> None:
        """Adds the children of ``parent_id``: a slice's from its sliced element, else its data type's."""
        at = self.ensure(parent_id)
        parent = self.elements[at]
        if any(e["id"].startswith(parent_id + ".") for e in self.elements):
            return
        last = _last(parent_id)
        if ":" in last:
            sliced_id = parent_id[: len(parent_id) - len(last)] + last.split(":", 1)[0]
            self._expand(sliced_id)
            children = [
                {**copy.deepcopy(e), "id": parent_id + e["id"][len(sliced_id) :]}
                for e in self.elements
                if e["id"].startswith(sliced_id + ".")
            ]
        else:
            types = {t["code"] for t in parent.get("type", [])}
            if len(types) != 1:
                raise ValueError(f"{self.url}: {parent_id} has no single type to expand ({sorted(types)})")
            datatype = base_structures()[types.pop()]["snapshot"]["element"]
            root = datatype[0]["path"]
            children = [
                {
                    **copy.deepcopy(e),
                    "id": parent_id + e["id"][len(root) :],
                    "path": parent["path"] + e["path"][len(root) :],
                }
                for e in datatype[1:]
            ]
        at = self.elements.index(parent)  # expanding the sliced element above may have moved it
        self.elements[at + 1 : at + 1] = children

    def constrain(self, differential: Element) -> None:
        element = self.elements[self.ensure(differential["id"])]
        for key in [k for k in element if k.startswith(("fixed", "pattern"))] if _sets_value(differential) else ():
            del element[key]
        for key, value in differential.items():
            if key in _REPLACED or key.startswith(("fixed", "pattern")):
                element[key] = copy.deepcopy(value)
        if differential.get("constraint"):
            added = [{**c, "source": self.url} for c in differential["constraint"]]
            element["constraint"] = [*element.get("constraint", []), *added]


def _sets_value(element: Element) -> bool:
    return any(k.startswith(("fixed", "pattern")) for k in element)


def snapshot(resource_type: str, profile_url: str, differential: list[Element]) -> list[Element]:
    """The snapshot of a profile on the R4 ``resource_type`` with this ``differential``."""
    built = _Snapshot(base_structures()[resource_type]["snapshot"]["element"], profile_url)
    for element in differential:
        built.constrain(element)
    return built.elements
