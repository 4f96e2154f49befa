"""The DermBridge implementation guide, installable as a FHIR NPM package (packages.html; the NPM Package
Specification on confluence.hl7.org): the profiles, terminology, operation definitions and CapabilityStatement
the code registers, with examples built by the server's own builders."""
