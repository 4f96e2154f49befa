"""Consent: the decision service that says whether a use of a patient's data is permitted."""
