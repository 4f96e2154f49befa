"""Clinical workflow: case flows (PlanDefinition-driven Task trees) and the clinician review queue."""
