"""DICOM DIMSE SCP, DICOMweb and the DICOM instance store (not built yet: see the issues)."""
