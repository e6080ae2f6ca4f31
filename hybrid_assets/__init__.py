"""hybrid_assets: a support assistant fine-tuned for behaviour and grounded by retrieval for knowledge.

Package layout, top layer first (``lint-imports`` enforces it; contracts in pyproject.toml):
- ``cli``, ``demo``, ``definitions`` + ``defs/``  entry points; ``definitions`` loads the ``defs/`` folder
  (the Dagster wiring, one folder per path, and the only Dagster import)
- ``evaluation/``               the four-configuration comparison and external datasets
- ``serving/`` | ``raft/``       retrieval + answer engine + HTTP API | RAFT training data (its own stage)
- ``knowledge/`` | ``behaviour/`` the two paths: documents -> Weaviate | behaviour data -> QLoRA adapter
- ``models/``, ``store/``        base model, the one decoding path, grammar, guards, embeddings; Weaviate
- ``schema``, ``scoring``, ``prompting``, ``settings``   plain contracts
"""

__version__ = "0.1.0"
