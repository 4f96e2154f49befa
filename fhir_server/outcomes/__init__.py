"""Outcomes and monitoring of the AI: histopathology linked to lesions as ground truth, the patient's
Fitzpatrick skin type, ``$ai-performance`` (AI vs clinician vs histology, sensitivity and specificity with
Wilson 95% intervals, by subgroup) and drift alerts against the model card's figures.

``fhir_server.outcomes.registration.register_outcomes`` wires the operation and the managed-content rules;
``fhir_server.outcomes.histology.HistologyLinker`` is the outbox consumer that writes the ground truth.
"""
