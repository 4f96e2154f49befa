"""DermBridge's clinical data backbone: the FHIR R4 REST API and its resource store."""

FHIR_VERSION = "4.0.1"
