"""The one decoding path: prompt conversations -> greedy generation under the answer schema's grammar
(+ the optional answer n-gram guard) -> parsed answers, with cut answers handled the same way for
every caller. Serving (``serving/engine.py``), the promotion gate (``behaviour/evaluate.py``),
evaluation (through the engine) and the benchmarks all decode here, so "decoded as served" is true
by construction, not by keeping several loops in step.

A cut answer (the token budget ran out) does not parse, but under the grammar its prefix is valid
JSON up to the cut and in ``FIELD_ORDER``: the labels it already decided (sentiment, category,
decision, escalation level) are read from that prefix (``read_decided``), so a scorer can count
them while reporting the answer itself as invalid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from hybrid_assets.models import batched_greedy
from hybrid_assets.models.citing import AnswerCites
from hybrid_assets.models.constrained import GrammarCache, reply_max_chars
from hybrid_assets.models.decision import LEVEL, DecisionGate, DecisionRule, LastHiddenState
from hybrid_assets.models.repetition import AnswerNgramGuard
from hybrid_assets.models.reply_budget import (DEFAULT_MAX_SENTENCES, LENGTH, SENTENCES, TOKENS, ReplyBudget,
                                               finished_reply)
from hybrid_assets.prompting import sign_off
from hybrid_assets.schema import DECISIONS, LabelSpace, escalation_follows_decision, parse_answer, policy_level
from hybrid_assets.scoring import decisions_of

# The decision fields, in generation order, as the compact grammar layout writes them.
_DECIDED = {
    "sentiment": re.compile(r'^\{"sentiment": ?"([^"]*)"'),
    "category": re.compile(r'"category": ?"([^"]*)"'),
    "decision": re.compile(r'"decision": ?"([^"]*)"'),
    "escalation_level": re.compile(r'"escalation": ?\{"level": ?"([^"]*)"'),
}


def read_decided(text: str, labels: LabelSpace) -> dict:
    """The decision fields present in a (possibly cut) answer's text: only complete values, and only
    values of the label space (a cut inside a string decides nothing)."""
    decided: dict = {}
    text = text.strip()
    for name, pattern in _DECIDED.items():
        match = pattern.search(text)
        if not match:
            break  # fields come in order: nothing after a missing one was decided either
        value = match.group(1)
        vocabulary = {"sentiment": labels.sentiments, "category": labels.categories, "decision": DECISIONS,
                      "escalation_level": labels.escalation_levels}[name]
        if value not in vocabulary:
            break
        decided[name] = value
    return decided


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: int  # generated tokens (up to and including end-of-sequence)
    answer: dict | None  # the parsed answer; None when the budget cut it (or, unconstrained, it is invalid)
    decided: dict = field(default_factory=dict)  # ``read_decided`` of the text: also set for cut answers
    error: str | None = None
    prompt_tokens: int = 0  # tokens of the prompt (padding excluded)
    # The model's distribution over the decision values where it decided (``models/decision.py``);
    # None when generation stopped before the decision (or decoding was unconstrained).
    decision_probabilities: dict | None = None
    # Policy rules applied to what the model wrote (``escalation_follows_decision``): serving reports
    # them with its guards, the gate and the evaluation score the answer after them, as served.
    adjustments: tuple[str, ...] = ()
    # The same for the escalation level (where ``"level":`` was written).
    level_probabilities: dict | None = None
    # The hidden states where the decision and the level were taken (numpy vectors, keyed "decision" /
    # "escalation_level"), only when asked (calibration fits its probes on them).
    features: dict | None = None

    @property
    def complete(self) -> bool:
        return self.answer is not None


ESCALATION_ADJUSTED = "escalation_follows_decision"
CITATION_REQUIRED = "answer_made_to_cite"  # ``models/citing.py`` kept an answer's citations from closing empty
REPLY_CLOSED = {SENTENCES: "reply_closed_at_sentence_budget",  # ``models/reply_budget.py`` finished the reply
                TOKENS: "reply_closed_before_token_limit", LENGTH: "reply_closed_before_length_limit"}


def parse_generation(text: str, tokens: int, labels: LabelSpace, prompt_tokens: int = 0) -> Generation:
    try:
        answer = parse_answer(text.strip(), labels).model_dump()
    except ValueError as exc:  # pydantic.ValidationError is a ValueError; under the grammar: a cut answer
        decided = read_decided(text, labels)
        level = decided.get("escalation_level")
        adjusted = policy_level(decided.get("decision"), level, labels) != level
        if adjusted:
            decided["escalation_level"] = policy_level(decided["decision"], level, labels)
        return Generation(text, tokens, None, decided, str(exc).splitlines()[0][:200], prompt_tokens,
                          adjustments=(ESCALATION_ADJUSTED,) if adjusted else ())
    answer, adjusted = escalation_follows_decision(answer, labels)
    return Generation(text, tokens, answer, decisions_of(answer), None, prompt_tokens,
                      adjustments=(ESCALATION_ADJUSTED,) if adjusted else ())


class Decoder:
    """Greedy, batched (left-padded) generation; one grammar per row (its own citable ids)."""
    def __init__(self, tokenizer, vocab_size: int, labels: LabelSpace, max_new_tokens: int,
                 no_repeat_ngram: int = 0, constrained: bool = True,
                 reply_max_sentences: int | None = DEFAULT_MAX_SENTENCES, ragged_prefill: bool = True):

        self.tokenizer = tokenizer
        self.labels = labels
        self.max_new_tokens = max_new_tokens
        self.no_repeat_ngram = no_repeat_ngram
        self.constrained = constrained
        self.reply_max_sentences = reply_max_sentences  # None: no reply budget (benchmarks of the raw model)
        self._signature = sign_off(labels.company)
        self._reply_max_chars = reply_max_chars(labels)  # builds the schema: once, not per batch
        self.grammars = GrammarCache(tokenizer, vocab_size) if constrained else None
        # False: transformers' own generate() (padded prefill, growing cache), e.g. to compare the two.
        self.ragged_prefill = ragged_prefill

    def processors(self, citable: list[tuple[str, ...]], gate: DecisionGate | None = None,
                   cites: AnswerCites | None = None, budget: ReplyBudget | None = None) -> list:
        processors = [self.grammars.logits_processor(self.labels, citable)] if self.constrained else []
        if gate is not None:  # reads the grammar-masked scores (see models/decision.py)
            processors.append(gate)
        if cites is not None:  # after the grammar mask too (see models/citing.py)
            processors.append(cites)
        if self.no_repeat_ngram:  # after the grammar mask (see models/repetition.py)
            processors.append(AnswerNgramGuard(self.no_repeat_ngram))
        if budget is not None:  # last: it reads what every other processor left (see models/reply_budget.py)
            processors.append(budget)
        return processors

    def _ragged(self, model) -> bool:
        return self.ragged_prefill and batched_greedy.supported(model)  # cheap: builds an empty cache

    def prepare(self, citable: list[tuple[str, ...]]) -> None:
        """Compile the grammars these rows need (cached), e.g. before timing a generation."""
        if self.grammars is not None:
            self.grammars.logits_processor(self.labels, citable)

    def generate(self, model, conversations: list[list[dict]], citable: list[tuple[str, ...]],
                 base_only: bool = False, rule: DecisionRule | None = None,
                 stop: Callable[[], bool] | None = None, step_times: list[float] | None = None,
                 keep_features: bool = False, similarities: list[float | None] | None = None,
                 decisions: list[str | None] | None = None) -> list[Generation]:
        """One batch. ``base_only`` decodes a PEFT model with its adapters disabled (the base model);
        ``rule``: the adapter's calibrated decisions (``models/decision.DecisionRule``: the answer
        threshold and the probes; None = greedy's own);
        ``stop``: asked after every step, True ends the whole batch there (every row then reads as cut:
        the API's scheduler uses it when every client of a batch has gone); ``step_times``: when a list
        is given, the ``perf_counter`` time at which each step finished is appended (the first one
        includes the prompt's prefill): for benchmarks of the per-token cost. ``keep_features``: return
        each row's hidden states at the decision and the level (to fit probes on). ``similarities``: per
        row, the best passage's cosine similarity to the ticket, which the rule's retrieval evidence
        reads (``models/decision.RetrievalEvidence``). ``decisions``: per row, a decision already taken
        (None: the gate's own), which the row then writes (``DecisionGate``'s ``forced``)."""
        import torch

        if len(conversations) != len(citable):
            raise ValueError("one citable-id tuple per conversation is needed")
        tokenizer = self.tokenizer
        tokenizer.padding_side = "left"  # decoder-only batching: pad before the prompt
        inputs = tokenizer.apply_chat_template(
            conversations, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True
        ).to(model.device)
        disable = base_only and hasattr(model, "disable_adapter")
        rule = rule or DecisionRule()
        probed = rule.probe is not None or rule.level_probe is not None
        hidden = LastHiddenState() if self.constrained and (probed or keep_features) else None
        gate = DecisionGate(tokenizer, rule, self.labels.escalation_levels, hidden, keep_features, similarities,
                            decisions) if self.constrained else None
        cites = AnswerCites(tokenizer) if self.constrained else None
        budget = ReplyBudget(tokenizer, self.max_new_tokens, self.reply_max_sentences,
                             signature=self._signature, max_chars=self._reply_max_chars) \
            if self.constrained and self.reply_max_sentences else None
        handle = hidden.attach(model) if hidden is not None else None
        with torch.inference_mode(), (model.disable_adapter() if disable else contextlib.nullcontext()), \
                _removed_after(handle):
            processors = self.processors(citable, gate, cites, budget)
            stopping = [_step_hook(stop, step_times)] if stop is not None or step_times is not None else []
            if self._ragged(model):  # see models/batched_greedy.py: the same greedy search, cheaper batches
                output = batched_greedy.greedy(model, inputs["input_ids"], inputs["attention_mask"],
                                               self.max_new_tokens, processors, stopping, tokenizer.pad_token_id,
                                               tokenizer.eos_token_id, hidden)
            else:
                output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                        logits_processor=processors, pad_token_id=tokenizer.pad_token_id,
                                        eos_token_id=tokenizer.eos_token_id, stopping_criteria=stopping or None)
        results = []
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        rows = output[:, inputs["input_ids"].shape[1]:].tolist()
        for index, (row, prompt_tokens) in enumerate(zip(rows, prompt_lengths)):
            if tokenizer.eos_token_id in row:  # what follows the end of sequence is batch padding
                row = row[: row.index(tokenizer.eos_token_id) + 1]
            text = tokenizer.decode(row, skip_special_tokens=True)
            generation = parse_generation(text, len(row), self.labels, int(prompt_tokens))
            if cites is not None and index < len(cites.forced) and cites.forced[index]:
                generation = dataclasses.replace(generation, adjustments=(*generation.adjustments, CITATION_REQUIRED))
            if budget is not None and index < len(budget.closed) and budget.closed[index]:
                generation = _finished(generation, budget.closed[index], budget.signature)
            if gate is not None and index < len(gate.probabilities):
                generation = dataclasses.replace(
                    generation, decision_probabilities=gate.probabilities[index],
                    level_probabilities=gate.distributions[LEVEL][index],
                    features={name: kept[index] for name, kept in gate.kept.items()} if keep_features else None)
            results.append(generation)
        return results


def _finished(generation: Generation, reason: str, signature: str | None) -> Generation:
    """A reply the budget finished: reported, and without the sentence it was finishing mid-way."""
    answer = generation.answer
    if answer is not None and reason in (TOKENS, LENGTH):
        answer = {**answer, "reply": finished_reply(answer["reply"], signature)}
    return dataclasses.replace(generation, answer=answer,
                               adjustments=(*generation.adjustments, REPLY_CLOSED[reason]))


@contextlib.contextmanager
def _removed_after(handle):
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def _step_hook(stop: Callable[[], bool] | None, step_times: list[float] | None):
    """A stopping criterion, called once per step after the new token: records the step's time (when
    asked) and ends every row at once when ``stop()`` says so. All rows, never some: a row stopped alone
    is fed padding, which its grammar matcher would refuse, and it saves nothing (the batch's forward
    pass keeps its shape)."""
    import time

    import torch
    from transformers import StoppingCriteria

    class StepHook(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if step_times is not None:
                step_times.append(time.perf_counter())
            done = bool(stop()) if stop is not None else False
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    return StepHook()
