"""Contract of ``hybrid_assets.behaviour.sft`` (uses the default base model's real tokenizer):

- the prompt is exactly what ``prompting.build_messages`` produces, rendered by the model's chat
  template, with our system message (not the template's default one);
- the loss mask keeps only the assistant turn: decoding the unmasked tokens gives the canonical
  answer JSON followed by the end-of-turn token, and nothing else;
- an over-long example loses context-passage text, never the ticket or the answer; an example that
  cannot fit even without context is dropped from the dataset.
"""

from __future__ import annotations

from hybrid_assets.behaviour.dataset import load_behaviour_data
from hybrid_assets.behaviour.sft import IGNORE_INDEX, build_sft_dataset, prompt_messages, tokenize_record


def _records(behaviour_dir, labels):
    return load_behaviour_data(behaviour_dir, labels).records


def _unmasked(example) -> list[int]:
    return [token for token, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]


def test_loss_mask_covers_exactly_the_assistant_answer(behaviour_dir, labels, tokenizer):
    for record in _records(behaviour_dir, labels):
        example = tokenize_record(record, tokenizer, labels, max_length=2048)

        assert tokenizer.decode(_unmasked(example)) == record.target + tokenizer.eos_token
        first = example["labels"].index(next(t for t in example["labels"] if t != IGNORE_INDEX))
        assert all(label == IGNORE_INDEX for label in example["labels"][:first])
        assert example["labels"][first:] == example["input_ids"][first:]  # one contiguous span, to the end
        prompt = tokenizer.decode(example["input_ids"][:first])
        assert prompt.endswith("<|im_start|>assistant\n")
        assert record.ticket.strip() in prompt
        assert "SmolLM" not in prompt  # our system message, not the template's default
        assert prompt_messages(record, labels)[0]["content"] in prompt
        assert example["context_truncated"] is False


def test_long_examples_lose_context_not_answer(behaviour_dir, labels, tokenizer):
    record = next(r for r in _records(behaviour_dir, labels) if r.context)
    full = tokenize_record(record, tokenizer, labels, max_length=4096)
    limit = full["length"] - 12

    example = tokenize_record(record, tokenizer, labels, max_length=limit)

    assert example["length"] <= limit
    assert example["context_truncated"] is True
    assert tokenizer.decode(_unmasked(example)) == record.target + tokenizer.eos_token
    prompt = tokenizer.decode(example["input_ids"])
    assert record.ticket.strip() in prompt
    assert "…" in prompt
    for passage in record.context:
        assert f"[{passage.id}]" in prompt  # every citable id survives truncation


def test_dataset_drops_examples_that_cannot_fit(behaviour_dir, labels, tokenizer):
    records = _records(behaviour_dir, labels)
    lengths = {r.id: tokenize_record(r, tokenizer, labels, 4096)["length"] for r in records}
    shortest = min(lengths.values())

    dataset = build_sft_dataset(records, tokenizer, labels, max_length=shortest)

    assert 1 <= len(dataset) < len(records)
    assert set(dataset.column_names) == {"input_ids", "labels", "length", "record_id", "context_truncated",
                                        "decision_tokens"}
    assert all(length <= shortest for length in dataset["length"])


def test_decision_tokens_cover_the_decisions_and_stop_before_the_reason(behaviour_dir, labels, tokenizer):
    for record in _records(behaviour_dir, labels):
        example = tokenize_record(record, tokenizer, labels, max_length=2048)
        answer = _unmasked(example)
        decisions = tokenizer.decode(answer[: example["decision_tokens"]])
        level = record.answer["escalation"]["level"]

        assert decisions.startswith('{"sentiment"')
        assert f'"level": "{level}"' in decisions
        assert '"reason"' not in decisions
        assert record.answer["escalation"]["reason"] not in decisions
