"""Dagster wiring of the knowledge path (documents -> Weaviate). Nothing here imports the behaviour path."""
