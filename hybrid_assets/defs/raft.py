"""RAFT in Dagster: its own asset group between the pinned corpus snapshot and the behaviour data.

On demand only (`raft_job`, the UI): a person re-pins the snapshot and regenerates the examples when
they mean to. The output is a behaviour data file, so the behaviour automation - not this group - decides
whether an adapter is retrained. The live documents are never read here (the snapshot is), so a
document change still never touches the behaviour path.
"""

import dagster as dg
from pydantic import Field

from hybrid_assets.defs.resources import WeaviateResource
from hybrid_assets.raft.pipeline import default_paths, generate_raft_file
from hybrid_assets.raft.records import RaftConfig

GROUP = "raft"


class RaftGenerateConfig(dg.Config):
    distractors: int = Field(default=RaftConfig.distractors, description="Hard negatives next to the oracle")
    p_no_oracle: float = Field(default=RaftConfig.p_no_oracle, description="Fraction without the oracle chunk")
    seed: int = Field(default=RaftConfig.seed)
    alpha: float = Field(default=RaftConfig.alpha, description="Hybrid search weight (0 = BM25, 1 = vectors)")
    max_quote_similarity: float = Field(default=RaftConfig.max_quote_similarity,
                                        description="A chunk restating the quote this closely is never a distractor")


@dg.asset(
    group_name=GROUP,
    kinds={"python", "weaviate"},
    tags={"runs_when": "on_demand"},
    description="RAFT behaviour examples (data/behaviour/raft_examples.jsonl) from the hand-written triples and "
    "the pinned corpus snapshot (data/raft/), with hard negatives mined by hybrid search in Weaviate.",
)
def raft_examples(context: dg.AssetExecutionContext, config: RaftGenerateConfig,
                  weaviate: WeaviateResource) -> dg.MaterializeResult:

    settings = weaviate.settings()
    paths = default_paths(settings)
    raft_config = RaftConfig(config.distractors, config.p_no_oracle, config.seed, config.alpha,
                             config.max_quote_similarity)
    with weaviate.client() as client:
        stats = generate_raft_file(paths["triples"], paths["snapshot"], paths["out"], client, raft_config)
    context.log.info(f"{stats['examples']} RAFT examples written to {paths['out']}")
    return dg.MaterializeResult(
        metadata={key: value for key, value in stats.items() if isinstance(value, (int, float, str))}
    )


raft_job = dg.define_asset_job(
    "raft_job",
    selection=dg.AssetSelection.groups(GROUP),
    description="Regenerate the RAFT behaviour examples from the pinned snapshot (on demand).",
)
