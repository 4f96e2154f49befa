"""The DICOM node: DIMSE SCP (pynetdicom), DICOMweb, the instance store and its sync into FHIR."""
