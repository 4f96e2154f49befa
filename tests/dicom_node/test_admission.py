"""Admission: a shared pool limited per peer address, and slots reserved for mapped calling AEs."""

from __future__ import annotations

from dicom_node.admission import Admission, AssociationLimits

MAPPED = {"DERMATOSCOPE1"}


def admission(**limits: int) -> Admission:
    return Admission(AssociationLimits(**limits), lambda ae: ae in MAPPED)  # type: ignore[arg-type]


def test_each_address_gets_its_share_of_the_pool() -> None:
    gate = admission(max_associations=3, per_peer=2, reserved=0)
    assert gate.admit("10.0.0.1", "A") and gate.admit("10.0.0.1", "A")
    assert gate.admit("10.0.0.1", "A") is None  # its share is used
    assert gate.admit("10.0.0.2", "A")
    assert gate.admit("10.0.0.3", "A") is None  # the pool is used
    assert gate.open == 3


def test_reserved_slots_are_for_mapped_callers_only() -> None:
    gate = admission(max_associations=1, per_peer=1, reserved=1)
    assert gate.admit("10.0.0.1", "FLOOD")
    assert gate.admit("10.0.0.1", "FLOOD") is None
    slot = gate.admit("10.0.0.1", "DERMATOSCOPE1")  # the flood's own address
    assert slot is not None and slot.reserved
    assert gate.admit("10.0.0.2", "DERMATOSCOPE1") is None  # the reserve is bounded too


def test_released_slots_are_free_again_once() -> None:
    gate = admission(max_associations=1, per_peer=1, reserved=0)
    slot = gate.admit("10.0.0.1", "A")
    assert slot is not None
    gate.release(slot)
    gate.release(slot)  # idempotent: an association ends once however many paths report it
    assert gate.open == 0
    assert gate.admit("10.0.0.2", "A") and gate.admit("10.0.0.2", "A") is None
