"""FHIR search: parameter definitions, index extraction at write time, parsing of search requests."""
