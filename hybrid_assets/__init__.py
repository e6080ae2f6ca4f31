"""hybrid_assets: a support assistant fine-tuned for behaviour and grounded by retrieval for knowledge.

Package layout (the architecture is the folder tree):
- ``knowledge/``  documents -> parsed elements -> chunks -> embeddings (no Dagster imports)
- ``store/``      the Weaviate server lifecycle, client and collections (no Dagster imports)
- ``behaviour/``  behaviour data -> SFT examples -> QLoRA adapter -> registry (no Dagster imports)
- ``serving/``    retrieval + adapter + schema-constrained generation (no Dagster imports)
- ``evaluation/`` metrics and the four-configuration comparison (no Dagster imports)
- ``defs/``       the Dagster wiring: one folder per path; the only place that imports dagster
"""

__version__ = "0.1.0"
