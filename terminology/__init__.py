"""CodeSystems, ValueSets, ConceptMaps and the operations of the FHIR R4 terminology module
(terminology-service.html): ``$lookup``, ``$subsumes``, ``$expand``, ``$validate-code``, ``$translate``.

The lowest layer: it imports nothing of DermBridge. Shipped base content lives in ``terminology/data``;
a tenant's own resources reach it through the ``Resolver`` protocol (``terminology.service``).
"""
