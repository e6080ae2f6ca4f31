"""RAFT (retrieval-augmented fine-tuning): its own stage, between the knowledge snapshot and the
behaviour data. It produces ordinary *behaviour* data (``data/behaviour/raft_examples.jsonl``).

Each hand-written triple (a customer question, the document that answers it, one sentence quoted
verbatim from that document, and the target answer) becomes one ticket record in the behaviour
format (``behaviour/dataset.py``):

- the context is the *oracle* chunk (the snapshot chunk that contains the quote) plus ``k`` hard
  negatives, shuffled and numbered S1..S(k+1) exactly as serving numbers retrieved passages;
- the target cites the oracle's short id, and its ``resolution`` starts with the quoted sentence
  (``Per S2: "<quote>" — <next step>``): in our schema that is where the reasoning quotes its source;
- for a ``p_no_oracle`` fraction of the triples the oracle is left out (k+1 distractors instead, so
  the context size stays the same) and the target is the honest not-answerable answer.

Hard negatives are mined with the same hybrid search (BM25 + vector) serving uses, in a real Weaviate,
over a throw-away collection that holds the *pinned corpus snapshot* (``data/raft/corpus_snapshot.jsonl``),
never the live documents: editing a document changes the knowledge index, not the behaviour data, so
the two update paths stay independent. A distractor is never the oracle, never from the gold
document (another chunk of it could also answer the question) and never a chunk of another document
that restates the quote (``restating_chunks``): sample corpora repeat facts across documents, and a
"no-oracle" example whose distractor still holds the answer would teach the model to refuse.

The not-answerable target follows the escalation policy's first-match rule: rules 1-4 (security,
outage, account manager, billing) are triggered by the ticket itself and still apply when the
documentation is missing, so such a triple keeps its level and reason; a triple resolved by the
documentation (rule 5, level ``none``) becomes rule 6, ``tier_2`` - the same as the unanswerable
tickets in ``tickets.jsonl``.

Layering: this stage sits above both paths (it reads the knowledge path's parser to pin a snapshot and
writes behaviour data) and below the entry points; the knowledge and behaviour packages never import
it. Modules: ``records`` (snapshot, triples, checks, atomic files), ``mining`` (hard negatives in
Weaviate), ``examples`` (behaviour examples), ``pipeline`` (the steps), ``synthesis`` (optional drafts
from an OpenAI-compatible endpoint). The commands are ``hybrid-assets raft ...``.
"""

