"""Greedy decoding of a batch with ragged prefill and a preallocated KV cache.

``transformers``' ``generate`` pads a batch's prompts to the longest and prefills them together, then
grows a ``DynamicCache`` by concatenation at every step. On a CPU both cost more than batching saves
(``benchmarks/RESULTS.md``, serving under load): the padded prefill of 8 sample prompts took 1.65x the
time of prefilling them one by one, and copying the whole cache each step made a decoding step of 8
rows 2.6x one row's. Here each prompt is prefilled alone (exactly the computation it gets when served
alone), its keys and values are copied once, left-aligned to the batch's longest prompt, into a
``StaticCache`` sized for the whole generation, and the rows then decode together, each step writing
in place. Padding positions are masked, so every row reads only its own prompt.

The loop is ``generate``'s greedy search, step for step: the logits processors see the same
``input_ids`` (prompt with its left padding, then the tokens so far) and scores, finished rows are fed
padding, and the stopping criteria are asked after every step. ``supported`` says when a model can use
it (every layer a plain ``StaticLayer``: no sliding windows or linear attention, and a generation
config that changes no greedy score: ``generate`` would add its own processors for those); others keep
``generate``.
"""

from __future__ import annotations


# Generation-config settings that make ``generate`` add a logits processor of its own to greedy search.
_SCORE_SETTINGS = ("repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size", "bad_words_ids",
                   "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id",
                   "forced_decoder_ids", "min_length", "min_new_tokens", "sequence_bias",
                   "exponential_decay_length_penalty", "renormalize_logits")


def supported(model) -> bool:
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    config = getattr(model, "generation_config", None)
    if config is not None and any(getattr(config, name, None) not in (None, 0, 1.0, False, [], {})
                                  for name in _SCORE_SETTINGS):
        return False
    try:
        cache = StaticCache(config=model.config, max_cache_len=1)
    except Exception:  # noqa: BLE001 - an architecture StaticCache cannot describe keeps generate()
        return False
    return all(type(layer) is StaticLayer for layer in cache.layers)


def greedy(model, input_ids, attention_mask, max_new_tokens: int, logits_processor: list, stopping_criteria: list,
           pad_token_id: int, eos_token_id: int, hidden=None):
    """Prompt ids (left-padded, as ``generate`` takes them) -> prompt + generated ids, ``generate``'s shape.
    ``hidden``: a ``models/decision.LastHiddenState`` attached to the model; the rows' prefills run one
    by one, so it is handed all rows' last prompt positions together before the first step."""
    import torch
    from transformers import DynamicCache, StaticCache

    rows, width = input_ids.shape
    lengths = attention_mask.sum(dim=1).tolist()
    cache = StaticCache(config=model.config, max_cache_len=width + max_new_tokens)
    first_logits, first_hidden = [], []
    for row, length in enumerate(lengths):
        ids = input_ids[row:row + 1, width - length:]
        alone = DynamicCache(config=model.config)
        out = model(input_ids=ids, past_key_values=alone, use_cache=True, logits_to_keep=1)
        first_logits.append(out.logits[:, -1, :].float())
        for layer, filled in zip(cache.layers, alone.layers):
            if not layer.is_initialized:
                template = filled.keys.new_empty((rows, *filled.keys.shape[1:2], 1, filled.keys.shape[-1]))
                values = filled.values.new_empty((rows, *filled.values.shape[1:2], 1, filled.values.shape[-1]))
                layer.lazy_initialization(template, values)
            layer.keys[row, :, width - length:width] = filled.keys[0]
            layer.values[row, :, width - length:width] = filled.values[0]
        if hidden is not None:
            first_hidden.append(hidden.value)
    if hidden is not None:
        hidden.value = torch.cat(first_hidden, dim=0)
    for layer in cache.layers:
        layer.cumulative_length.fill_(width)

    sequences = input_ids
    mask = attention_mask
    positions = torch.tensor(lengths, device=input_ids.device).unsqueeze(1)  # each row's next position
    unfinished = torch.ones(rows, dtype=torch.bool, device=input_ids.device)
    scores = torch.cat(first_logits, dim=0)
    for step in range(max_new_tokens):
        for processor in logits_processor:
            scores = processor(sequences, scores)
        next_tokens = torch.argmax(scores, dim=-1)
        next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad_token_id))
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=-1)
        mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=-1)
        unfinished &= next_tokens != eos_token_id
        for criterion in stopping_criteria:
            unfinished &= ~criterion(sequences, scores)
        if not bool(unfinished.any()) or step == max_new_tokens - 1:
            break
        out = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=positions,
                    cache_position=torch.tensor([width + step], device=input_ids.device),
                    past_key_values=cache, use_cache=True, logits_to_keep=1)
        scores = out.logits[:, -1, :].float()
        positions = positions + 1
    return sequences
