"""Retention and legal hold: what the store must keep (a hold) and what it may let go (retention).

A legal hold is a ``Flag`` (flag.html) coded ``urn:dermbridge:record-flag|legal-hold`` on the patient,
placed and released by ``$legal-hold`` / ``$release-legal-hold``; the repository refuses, with 409,
every deletion it covers. Retention policies per tenant and resource type are enforced by a job
that claims a lease in the tenant's database, so several processes never run it twice at once.
"""
