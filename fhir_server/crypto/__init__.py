"""Encryption at rest: the key hierarchy (master -> tenant -> data keys), envelope encryption of
stored resources, and crypto-shredding erasure."""
