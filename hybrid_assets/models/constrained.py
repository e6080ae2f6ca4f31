"""Schema-constrained decoding with xgrammar: every generated answer parses.

Why xgrammar: lm-format-enforcer 0.11.3 (the other maintained candidate we tried) cannot be imported
with transformers 5 (it imports ``transformers.tokenization_utils.PreTrainedTokenizerBase``);
xgrammar 0.2.8 works with transformers 5 on CPU and CUDA, and its token masks cost ~1% of decoding
speed here (see benchmarks/RESULTS.md). The citation ids are part of the grammar: the model can only
cite ids that were actually retrieved for this request.
"""

from __future__ import annotations

import copy
import json
import threading
from functools import lru_cache

from hybrid_assets.schema import ANSWER, LabelSpace, answer_json_schema


def reply_max_chars(labels: LabelSpace) -> int | None:
    """The reply's character bound in the answer schema (None: unbounded)."""
    return answer_json_schema(labels)["properties"]["reply"].get("maxLength")


def schema_for_request(labels: LabelSpace, citable_ids: tuple[str, ...]) -> dict:
    """The answer schema with ``citations`` restricted to this request's retrieved short ids. With
    nothing retrieved there is nothing to cite, so the decision cannot be "answer" either (an answer
    cites what it relies on): such a request can only ask to clarify or say it is not answerable."""
    schema = copy.deepcopy(answer_json_schema(labels))
    # xgrammar 0.2.8 compiles a string with maxLength without escape sequences: no reply could hold a
    # newline, so the "\n\n— The … Support Team" every training reply ends with could not be written and
    # the model, denied it, wrote on (measured 2026-12-04: 2 of 24 served replies signed). The reply's
    # length is kept by ``models/reply_budget.py`` instead (``reply_max_chars``).
    schema["properties"]["reply"].pop("maxLength", None)
    citations = schema["properties"]["citations"]
    if citable_ids:
        citations["items"] = {"type": "string", "enum": list(citable_ids)}
        citations["maxItems"] = min(len(citable_ids), 4)
    else:
        citations["items"] = {"type": "string"}
        citations["maxItems"] = 0
        decision = schema["properties"]["decision"]
        decision["enum"] = [value for value in decision["enum"] if value != ANSWER]
    return schema


class GrammarCache:
    """Compiles one grammar per (label space, citable ids); compiling costs ~1 s, matching is cheap."""

    def __init__(self, tokenizer, vocab_size: int):
        import xgrammar as xgr

        self._compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size))
        self._lock = threading.Lock()
        self._compiled = lru_cache(maxsize=32)(self._compile)

    def _compile(self, labels: LabelSpace, citable_ids: tuple[str, ...]):
        schema = json.dumps(schema_for_request(labels, citable_ids))
        # any_whitespace=False: the compact layout we train on, and fewer tokens to generate.
        return self._compiler.compile_json_schema(schema, any_whitespace=False, strict_mode=True)

    def logits_processor(self, labels: LabelSpace, citable: list[tuple[str, ...]]):
        """A fresh processor (xgrammar's are single-use) with one grammar per batch row."""
        import xgrammar as xgr

        with self._lock:
            compiled = [self._compiled(labels, tuple(ids)) for ids in citable]
        return xgr.contrib.hf.LogitsProcessor(compiled)
