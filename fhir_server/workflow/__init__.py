"""Clinical workflow (DESIGN data flow 2, issue 14): case flows (PlanDefinition-driven Task trees) and the
clinician review queue (``review``).

- ``definition``: what a PlanDefinition may say, parsed into a ``Flow`` (pure).
- ``library``: which definition applies to a case (the tenant's active one, else the product's shipped default).
- ``lifecycle``: ``draft -> active -> retired``, immutability of published versions, ``$activate``/``$retire``.
- ``routing``: the inference worker's question "does this case's flow run AI, with which models?".
- ``escalation``: the pure decision after the AI's findings (review, discharge or sign-off).
- ``engine``: the outbox consumer that runs the steps; ``interventions``: halt, resume, retry, cancel, supersede.
"""
