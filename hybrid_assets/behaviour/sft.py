"""Chat-formatted SFT examples: the prompt from ``prompting.build_messages`` (exactly what serving
sends) and the canonical answer JSON as the assistant turn, tokenised with the base model's own chat
template. Loss is on the assistant tokens only (answer + end-of-turn token): the model should learn
to answer, not to reproduce prompts. Each example also records how many of its first answer tokens
are the decisions (``decision_tokens``), which training may weight up (``TrainConfig.decision_weight``).

When an example is longer than ``max_length`` the *context passages* are shortened (longest first),
never the ticket or the answer: a truncated target would teach the model to stop mid-JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from hybrid_assets.behaviour.dataset import BehaviourRecord
from hybrid_assets.prompting import ContextPassage, build_messages
from hybrid_assets.schema import LabelSpace

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the label value torch's cross-entropy skips
ELLIPSIS = " …"
_MAX_TRUNCATION_ROUNDS = 6


def prompt_messages(record: BehaviourRecord, labels: LabelSpace, passages=None) -> list[dict]:
    if passages is None:
        passages = [ContextPassage(c.id, c.source, c.text) for c in record.context]
    history = [{"role": role, "content": content} for role, content in record.history]
    return build_messages(record.ticket, passages, labels, record.customer_id, history)


def _template_ids(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
    )
    return list(ids)


def encode_example(tokenizer, messages: list[dict], target: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one conversation; labels are IGNORE_INDEX outside the assistant turn."""
    prompt = _template_ids(tokenizer, messages, generation_prompt=True)
    full = _template_ids(tokenizer, messages + [{"role": "assistant", "content": target}], generation_prompt=False)
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template does not render the prompt as a prefix of the full conversation")
    # Keep the end-of-turn token (the model must learn to stop) but drop what the template writes
    # after it (a newline), which generation never produces.
    reply = full[len(prompt):]
    eos = tokenizer.eos_token_id
    if eos is not None and eos in reply:
        reply = reply[: len(reply) - reply[::-1].index(eos)]
    return prompt + reply, [IGNORE_INDEX] * len(prompt) + reply


def decision_token_count(tokenizer, target: str) -> int:
    """How many leading answer tokens hold the decisions (sentiment, category, decision and the
    escalation level): the schema writes them first, so they are the prefix up to ``"reason"``."""
    end = target.find('"reason"')
    if end <= 0:
        return 0
    return len(tokenizer(target[:end], add_special_tokens=False)["input_ids"])


def _caps_to_remove(lengths: list[int], remove: int) -> list[int]:
    """New token budgets that remove at least ``remove`` tokens, cutting the longest passages first
    (water filling), so a short but relevant passage survives a long irrelevant one."""
    cap = max(lengths, default=0)
    while cap > 0 and sum(max(0, n - cap) for n in lengths) < remove:
        cap -= 1
    return [min(n, cap) for n in lengths]


def tokenize_record(record: BehaviourRecord, tokenizer, labels: LabelSpace, max_length: int) -> dict | None:
    """One example as ``{input_ids, labels, length, record_id, context_truncated}``; None when even
    with empty context passages it does not fit (the caller reports it)."""
    passages = [ContextPassage(c.id, c.source, c.text) for c in record.context]
    input_ids, label_ids = encode_example(tokenizer, prompt_messages(record, labels, passages), record.target)
    truncated = False
    margin = 4  # re-tokenising a cut text can cost a few tokens more than counted
    for _ in range(_MAX_TRUNCATION_ROUNDS):
        overflow = len(input_ids) - max_length
        if overflow <= 0:
            break
        texts = [tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in passages]
        if not any(texts):
            break
        caps = _caps_to_remove([len(t) for t in texts], overflow + margin)
        passages = [
            ContextPassage(p.short_id, p.source, p.text if cap == len(t) else tokenizer.decode(t[:cap]).rstrip() + ELLIPSIS)
            for p, t, cap in zip(passages, texts, caps)
        ]
        input_ids, label_ids = encode_example(tokenizer, prompt_messages(record, labels, passages), record.target)
        truncated, margin = True, margin * 2
    if len(input_ids) > max_length:
        return None
    return {
        "input_ids": input_ids,
        "labels": label_ids,
        "length": len(input_ids),
        "record_id": record.id,
        "context_truncated": truncated,
        "decision_tokens": decision_token_count(tokenizer, record.target),
    }


def build_sft_dataset(records: Iterable[BehaviourRecord], tokenizer, labels: LabelSpace, max_length: int):
    """A ``datasets.Dataset`` of tokenised examples; records that cannot fit are logged and skipped."""
    from datasets import Dataset

    rows, skipped = [], []
    for record in records:
        row = tokenize_record(record, tokenizer, labels, max_length)
        if row is None:
            skipped.append(record.origin)
        else:
            rows.append(row)
    if skipped:
        log.warning("%d record(s) do not fit in %d tokens even without context: %s", len(skipped), max_length, skipped)
    columns = ("input_ids", "labels", "length", "record_id", "context_truncated", "decision_tokens")
    return Dataset.from_dict({name: [row[name] for row in rows] for name in columns})
