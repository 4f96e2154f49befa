"""A C-STORE with pynetdicom as the SCU, as the tests' and benches' devices send images."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE


def c_store(port: int, ds: Dataset, calling_ae: str = "DERMATOSCOPE") -> None:
    """One image over a fresh association to 127.0.0.1:``port``; asserts Success (0x0000), which the
    node answers only once the instance is durable."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == 0x0000, status
