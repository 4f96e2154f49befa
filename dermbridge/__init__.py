"""DermBridge: the composition root (settings, CLI, wiring). The only package that imports all others."""

__version__ = "0.1.0"
