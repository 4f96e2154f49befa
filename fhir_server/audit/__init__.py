"""The audit trail: an AuditEvent for every interaction, append-only, hash-chained per tenant,
with checkpoints signed by the server's key (IHE Basic Audit Log Patterns in spirit)."""
