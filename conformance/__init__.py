"""Conformance statements generated from what the code registers (CapabilityStatement, DICOM)."""
