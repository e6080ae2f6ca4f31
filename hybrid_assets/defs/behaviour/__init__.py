"""Dagster wiring of the behaviour path (behaviour data -> QLoRA adapter). Nothing here imports the knowledge path."""
