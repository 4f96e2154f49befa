"""Validation against StructureDefinitions (profiling.html, validation.html): the snapshot walker behind
``$validate`` (resource-operation-validate.html) and the write-time check of ``meta.profile`` claims.

The engine is here, below every writer; the profiles themselves come from ``conformance.profiles`` and are
registered by the composition root (``register_profiles``), so this package never imports ``conformance``
(DESIGN.md, import direction).
"""
