"""Model registry, MONAI pre-processing and the worker that writes findings as Observations (not built yet)."""
