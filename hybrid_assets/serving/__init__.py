"""Serving: tenant-scoped hybrid retrieval + base model + promoted adapter -> one schema-valid answer."""
