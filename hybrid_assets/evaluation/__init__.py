"""Evaluation: the same held-out set through base, RAG-only, fine-tune-only and the hybrid."""
