"""The calibrated decision: answer only when the model is confident enough that the context answers.

Greedy decoding takes the likeliest decision token, and a small fine-tuned model is over-confident in
"answer" (measured: the hybrid abstained on 2 of 26 unanswerable public questions). Under the grammar,
at the point where the answer's ``"decision": "`` has been written, only tokens that start one of the
three values are allowed; their probabilities, summed per value, are the model's own distribution
over the decision. ``DecisionGate`` records that distribution for every row and, given a threshold,
chooses "answer" only when P(answer) >= threshold (else the likelier of clarify / not_answerable),
by masking the other values' tokens. The threshold is chosen on a dev split held out from training
(``behaviour/calibration.py``) and stored in the adapter's lineage; without one the gate only records
(plain greedy).

A model's token probabilities are not the only reading of its state. ``DecisionProbe`` is a linear
classifier over the model's last hidden state at that same point (the state the decision token's
logits come from), fitted on the train split's examples and kept only when it decides the dev split
better than the tokens do (``behaviour/calibration.py``). Hidden states carry answerability that the
next-token distribution of a small, over-confident model does not show (probing work: Kadavath et al.
2022, "Language Models (Mostly) Know What They Know"; Slobodkin et al. 2023 on unanswerability in
hidden states). With a probe the gate takes its distribution, restricted to the values the grammar
allows, in place of the tokens'; the threshold then applies to the probe's P(answer).

The same gate reads the escalation level where ``"level":`` has been written, and a second probe
(``LEVEL_PROBE_FILE``) may choose it: the level is the decision the escalation policy's tree makes,
and the model's hidden state there has read the ticket and the account facts.

Neither reading may know what the retrieval knows. ``RetrievalEvidence`` is a two-feature logistic
model fitted on the dev split, P(answer | s, p) = sigmoid(w_s * s + w_p * p + b), over the cosine
similarity s of the ticket and its best passage (what the relevance floor already reads) and the
reading's own P(answer) p; when an adapter's lineage has one, the gate answers when it is >= 0.5.
Measured on the release adapter's 54 dev records (2026-12-04, RESULTS.md): the tokens' P(answer)
alone separates answerable from not barely better than chance (cross-validated macro F1 0.42), the
top similarity alone 0.59.

Which value a token begins is read from its text: a token is consistent with every value it is a
prefix of (``consistent``), so no assumption is made about the label names (another company's levels
may share prefixes); a chosen value is then enforced token by token until it is written whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hybrid_assets.schema import ANSWER, DECISIONS

PROBE_FILE = "decision_probe.safetensors"  # beside the adapter's weights, in its version folder
LEVEL_PROBE_FILE = "level_probe.safetensors"
DECISION, LEVEL = "decision", "escalation_level"  # the gated fields, named as ``read_decided`` names them
_KEYS = {DECISION: '"decision":', LEVEL: '"level":'}


def consistent(piece: str, values: tuple[str, ...]) -> list[str]:
    """The values a token can begin: its text (a leading quote / space dropped) is a prefix of the
    value, or the whole value followed by the closing quote. Empty: the token writes only the quote."""
    text = piece.lstrip(' "')
    if not text:
        return []
    return [v for v in values if v.startswith(text) or text == v or text.startswith(v + '"')]


def continues(piece: str, remaining: str) -> bool:
    """True when a token continues a value of which ``remaining`` is still to be written."""
    return remaining.startswith(piece) or piece == remaining or piece.startswith(remaining + '"')


def choose(probabilities: dict[str, float], answer_threshold: float | None) -> str:
    """The decision the gate takes for one row's distribution (pure: the calibration replays it)."""
    allowed = {value: p for value, p in probabilities.items() if p > 0.0}
    if not allowed:
        return ANSWER
    if answer_threshold is None:
        return max(allowed, key=allowed.get)
    if ANSWER in allowed and (allowed[ANSWER] >= answer_threshold or len(allowed) == 1):
        return ANSWER
    others = {value: p for value, p in allowed.items() if value != ANSWER}
    return max(others, key=others.get)


class DecisionProbe:
    """Multinomial logistic regression on the standardised hidden state: P(value | h) =
    softmax(W (h - mean) / scale + b). Plain arrays, so serving needs neither scikit-learn nor the
    training code; saved as one safetensors file with the value order in its metadata."""

    def __init__(self, values, mean, scale, weight, bias):
        import numpy as np

        self.values = tuple(values)
        self.mean, self.scale = np.asarray(mean, np.float32), np.asarray(scale, np.float32)
        self.weight, self.bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
        if self.weight.shape != (len(self.values), self.mean.shape[0]) or self.bias.shape != (len(self.values),):
            raise ValueError(f"decision probe: weight {self.weight.shape} / bias {self.bias.shape} do not fit "
                             f"{len(self.values)} values x {self.mean.shape[0]} features")

    @property
    def features(self) -> int:
        return int(self.mean.shape[0])

    def probabilities(self, hidden) -> dict[str, float]:
        """The distribution over the probe's values for one hidden state (a torch or numpy vector)."""
        import numpy as np

        h = hidden.detach().float().cpu().numpy() if hasattr(hidden, "detach") else np.asarray(hidden, np.float32)
        logits = self.weight @ ((h - self.mean) / self.scale) + self.bias
        logits = np.exp(logits - logits.max())
        probs = logits / logits.sum()
        return {value: float(p) for value, p in zip(self.values, probs)}

    def save(self, path) -> None:
        from safetensors.numpy import save_file

        save_file({"mean": self.mean, "scale": self.scale, "weight": self.weight, "bias": self.bias}, str(path),
                  metadata={"values": ",".join(self.values)})

    @classmethod
    def load(cls, path) -> "DecisionProbe":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            values = (f.metadata() or {}).get("values", "")
            arrays = {name: f.get_tensor(name) for name in ("mean", "scale", "weight", "bias")}
        return cls(values.split(","), **arrays)


@dataclass(frozen=True)
class RetrievalEvidence:
    """P(answer) from the best passage's similarity and the reading's own P(answer) (see above)."""

    w_similarity: float
    w_answer: float
    bias: float

    def p_answer(self, similarity: float, token_answer: float) -> float:
        z = self.w_similarity * similarity + self.w_answer * token_answer + self.bias
        return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))

    def reweigh(self, mass: dict[str, float], similarity: float) -> dict[str, float]:
        """``mass`` with P(answer) replaced by the evidence's, the other values sharing the rest in the
        reading's own proportions; unchanged when the grammar rules "answer" out (nothing to cite)."""
        if mass.get(ANSWER, 0.0) <= 0.0:
            return mass
        p = self.p_answer(similarity, mass[ANSWER])
        others = {value: m for value, m in mass.items() if value != ANSWER and m > 0.0}
        total = sum(others.values())
        shares = {value: m / total for value, m in others.items()} if total > 0 else \
            {value: 1.0 / max(len(mass) - 1, 1) for value in mass if value != ANSWER}
        return {value: (p if value == ANSWER else (1.0 - p) * shares.get(value, 0.0)) for value in mass}

    def to_dict(self) -> dict:
        return {"w_similarity": self.w_similarity, "w_answer": self.w_answer, "bias": self.bias}

    @classmethod
    def from_dict(cls, raw: dict) -> "RetrievalEvidence":
        return cls(float(raw["w_similarity"]), float(raw["w_answer"]), float(raw["bias"]))


EVIDENCE_THRESHOLD = 0.5  # the evidence model is fitted class-balanced: its own decision boundary


def restrict(mass: dict[str, float], allowed: dict[str, float]) -> dict[str, float]:
    """``mass`` over only the values the grammar allows at this point (those with token mass > 0),
    renormalised; the allowed values' own mass when the probe puts nothing on any of them."""
    kept = {value: (mass.get(value, 0.0) if p > 0 else 0.0) for value, p in allowed.items()}
    total = sum(kept.values())
    return {value: p / total for value, p in kept.items()} if total > 0 else dict(allowed)


class LastHiddenState:
    """Keeps the hidden state that the output layer turns into this step's logits, per row: a forward
    pre-hook on the output embedding, so it works for any causal LM, merged or wrapped in PEFT."""

    def __init__(self):
        self.value = None

    def attach(self, model):
        output_layer = model.get_output_embeddings()

        def hook(_module, args):
            self.value = args[0][:, -1, :].detach()

        return output_layer.register_forward_pre_hook(hook)


@dataclass(frozen=True)
class DecisionRule:
    """How an adapter takes its decisions when served: a threshold on P(answer) (None: the likeliest
    value), read from the decision probe when there is one, else from the tokens; and the escalation
    level from the level probe when there is one, else the tokens' own."""

    answer_threshold: float | None = None
    probe: DecisionProbe | None = None
    level_probe: DecisionProbe | None = None
    evidence: RetrievalEvidence | None = None  # with a row's top similarity, replaces the threshold


@dataclass
class _Field:
    name: str
    values: tuple[str, ...]
    probe: DecisionProbe | None
    threshold: float | None
    evidence: RetrievalEvidence | None = None

    @property
    def enforced(self) -> bool:
        return self.probe is not None or self.threshold is not None or self.evidence is not None

    def choose(self, mass: dict[str, float], evidenced: bool = False) -> str:
        if self.name == DECISION:
            return choose(mass, EVIDENCE_THRESHOLD if evidenced else self.threshold)
        allowed = {value: p for value, p in mass.items() if p > 0.0}
        return max(allowed, key=allowed.get) if allowed else self.values[0]


class TokenPieces:
    """Token id -> its text, decoded once per id (the logits processors read pieces every step)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._pieces: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self.tokenizer.decode([token_id])
        return piece


class DecisionGate:
    """A transformers logits processor, placed after the grammar mask (it reads the masked scores).

    Per row, for each gated field in answer order (the decision, then the escalation level): after its
    key is written, each allowed token either begins one or more values (``consistent``) or only
    writes the quote / space; at the first step that allows value tokens, the tokens' distribution
    over the values is recorded (and the hidden state, with ``keep_features``), a probe's replaces it
    when there is one, and the value is chosen. When the field is enforced (a probe, or the decision's
    threshold), tokens that do not continue the chosen value are masked until it is written whole."""

    def __init__(self, tokenizer, rule: DecisionRule | None = None, levels: tuple[str, ...] = (),
                 hidden: LastHiddenState | None = None, keep_features: bool = False,
                 similarities: Sequence[float | None] | None = None, forced: Sequence[str | None] | None = None):
        rule = rule or DecisionRule()
        # per row: a decision serving already took for it (e.g. "clarify", ``serving/clarity.py``), written
        # whatever the distribution says, when the grammar allows it; None: the gate decides
        self.forced = list(forced) if forced is not None else []
        # per row: the best passage's similarity to the ticket (None: unknown, the evidence is not used)
        self.similarities = list(similarities) if similarities is not None else None
        if (rule.probe is not None or rule.level_probe is not None or keep_features) and hidden is None:
            raise ValueError("a probe or kept features need the hidden state (LastHiddenState)")
        evidence = rule.evidence if similarities is not None else None
        self.fields = [_Field(DECISION, DECISIONS, rule.probe, rule.answer_threshold, evidence)]
        if levels:
            self.fields.append(_Field(LEVEL, tuple(levels), rule.level_probe, None))
        elif rule.level_probe is not None:
            raise ValueError("a level probe needs the label space's escalation levels")
        for f in self.fields:
            unknown = set(f.probe.values) - set(f.values) if f.probe is not None else set()
            if unknown:
                raise ValueError(f"{f.name} probe: values {sorted(unknown)} are not among {list(f.values)}")
        self.hidden, self.keep_features = hidden, keep_features
        # per field name, per row: set once the field's value is reached (None before / never)
        self.distributions: dict[str, list] = {f.name: [] for f in self.fields}  # what chose the value
        self.token_distributions: dict[str, list] = {f.name: [] for f in self.fields}  # the tokens' own
        self.kept: dict[str, list] = {f.name: [] for f in self.fields}  # hidden states (keep_features)
        self._piece = TokenPieces(tokenizer)
        self._prompt_length: int | None = None

    @property
    def probabilities(self) -> list:
        """The decision's distributions per row (what ``Generation.decision_probabilities`` carries)."""
        return self.distributions[DECISION]

    def _start(self, rows: int) -> None:
        self._field = [0] * rows  # index of the field each row is on (len(fields): all done)
        self._state = ["before"] * rows  # "before" its key | "open" (key written) | "writing" the value
        self._tail, self._written = [""] * rows, [""] * rows
        self._chosen: list[str | None] = [None] * rows
        for name in self.distributions:
            self.distributions[name] = [None] * rows
            self.token_distributions[name] = [None] * rows
            self.kept[name] = [None] * rows

    def _next_field(self, row: int) -> None:
        self._field[row] += 1
        self._state[row], self._tail[row], self._written[row], self._chosen[row] = "before", "", "", None

    def _advance(self, row: int, piece: str) -> None:
        """Follow what the row just wrote (one token may close a field and begin the next one's key)."""
        while self._field[row] < len(self.fields):
            f = self.fields[self._field[row]]
            if self._state[row] == "before":
                self._tail[row] = (self._tail[row] + piece)[-48:]
                if _KEYS[f.name] not in self._tail[row]:
                    return
                self._state[row] = "open"
                piece = self._tail[row].split(_KEYS[f.name], 1)[1]  # what the key's token wrote after it
            if self._state[row] == "open":
                begun = piece.lstrip(' "')
                if not begun:
                    return
                self._written[row], self._state[row] = begun, "writing"
            else:
                self._written[row] += piece
            chosen = self._chosen[row]
            if f.enforced and chosen is not None and len(self._written[row]) < len(chosen):
                return  # still writing the chosen value
            piece = self._written[row]  # the value and whatever followed it: the next key may be in there
            self._next_field(row)

    def _decide(self, row: int, f: _Field, scores_row, allowed: list[int]) -> None:
        import torch

        starting = [(token_id, consistent(self._piece(token_id), f.values)) for token_id in allowed]
        starting = [(token_id, values) for token_id, values in starting if values]
        if not starting:
            return  # only the quote / space can be written now
        probs = torch.softmax(scores_row[[token_id for token_id, _ in starting]].float(), dim=0).tolist()
        mass = dict.fromkeys(f.values, 0.0)
        for (_, values), p in zip(starting, probs):
            for value in values:  # a token shared by several values (a common prefix) splits its mass
                mass[value] += p / len(values)
        self.token_distributions[f.name][row] = mass
        state = self.hidden.value[row] if self.hidden is not None else None
        if self.keep_features:
            self.kept[f.name][row] = state.float().cpu().numpy()
        if f.probe is not None:
            mass = restrict(f.probe.probabilities(state), mass)
        similarity = self.similarities[row] if f.evidence is not None and row < len(self.similarities) else None
        if similarity is not None:
            mass = f.evidence.reweigh(mass, similarity)
        self.distributions[f.name][row] = mass
        self._chosen[row] = f.choose(mass, evidenced=similarity is not None)
        if self._forces(row, f) and self.token_distributions[f.name][row].get(self.forced[row], 0.0) > 0.0:
            self._chosen[row] = self.forced[row]

    def _forces(self, row: int, f: _Field) -> bool:
        return f.name == DECISION and row < len(self.forced) and self.forced[row] is not None

    def __call__(self, input_ids, scores):
        rows = input_ids.shape[0]
        if self._prompt_length is None:  # first step: everything so far is the prompt
            self._prompt_length = input_ids.shape[1]
            self._start(rows)
        elif input_ids.shape[1] > self._prompt_length:
            for row, token_id in enumerate(input_ids[:, -1].tolist()):
                self._advance(row, self._piece(token_id))
        for row in range(rows):
            if self._field[row] >= len(self.fields) or self._state[row] == "before":
                continue
            f = self.fields[self._field[row]]
            allowed = torch_allowed(scores[row])
            if self._state[row] == "open" and self._chosen[row] is None:
                self._decide(row, f, scores[row], allowed)
            chosen = self._chosen[row]
            if not (f.enforced or self._forces(row, f)) or chosen is None:
                continue
            if self._state[row] == "open":
                banned = [t for t in allowed if (values := consistent(self._piece(t), f.values)) and chosen not in values]
            else:
                remaining = chosen[len(self._written[row]):]
                banned = [t for t in allowed if not continues(self._piece(t), remaining)]
            if banned and len(banned) < len(allowed):  # never mask every token (a tokenisation not foreseen)
                scores[row, banned] = -math.inf
        return scores


def torch_allowed(scores_row) -> list[int]:
    """The token ids the grammar (and earlier processors) left allowed in this row."""
    import torch

    return torch.isfinite(scores_row).nonzero().flatten().tolist()
