"""Dagster wiring. ``hybrid_assets.defs.definitions:defs`` is the code location (see workspace.yaml)."""
