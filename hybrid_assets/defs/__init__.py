"""Dagster wiring. ``hybrid_assets.definitions:defs`` is the code location (see workspace.yaml)."""
