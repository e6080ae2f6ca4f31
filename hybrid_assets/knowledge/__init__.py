"""The knowledge path: documents -> parsed elements -> chunks -> embeddings -> Weaviate.

Runs when documents change (sensor + daily schedule). Never touches the behaviour path.
"""
