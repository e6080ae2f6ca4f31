"""``AnswerNgramGuard``: an n-gram the answer already wrote is penalised, n-grams that occur only in
the prompt (the retrieved context, which the answer should be free to copy) are not, and a token the
grammar already masked (-inf) stays masked."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hybrid_assets.models.repetition import AnswerNgramGuard  # noqa: E402

VOCAB = 10


def _step(guard, sequence: list[int], masked: tuple[int, ...] = ()):
    scores = torch.zeros((1, VOCAB))
    scores[0, list(masked)] = float("-inf")
    return guard(torch.tensor([sequence]), scores)[0]


def test_a_repeated_ngram_of_the_answer_is_penalised_and_prompt_ngrams_are_not():
    prompt = [1, 2, 3, 1, 2]  # "1 2 3" occurs in the prompt: copying it is fine
    guard = AnswerNgramGuard(n=3, penalty=50.0)
    sequence = list(prompt)
    assert _step(guard, sequence).tolist() == [0.0] * VOCAB  # first call: prompt length recorded
    for token in (4, 5, 6, 4):  # the answer so far: 4 5 6 4
        sequence.append(token)
        scores = _step(guard, sequence)
    sequence.append(5)  # answer: 4 5 6 4 5 -> "4 5 6" was written, so 6 would repeat it
    scores = _step(guard, sequence)
    assert scores[6] == -50.0
    assert sum(1 for s in scores.tolist() if s != 0.0) == 1

    fresh = AnswerNgramGuard(n=3)
    seq = list(prompt)
    _step(fresh, seq)
    seq += [1, 2]  # the answer starts with "1 2", which the prompt followed by 3: no penalty
    fresh(torch.tensor([seq[:-1]]), torch.zeros((1, VOCAB)))
    assert _step(fresh, seq).tolist() == [0.0] * VOCAB


def test_a_grammar_masked_token_stays_masked_and_rows_are_independent():
    guard = AnswerNgramGuard(n=2, penalty=50.0)
    batch = [[0, 0], [0, 0]]
    scores = torch.zeros((2, VOCAB))
    guard(torch.tensor(batch), scores)
    for a, b in ((7, 8), (7, 9)):  # row 0 writes 7 then 7; row 1 writes 8 then 9
        batch[0].append(a)
        batch[1].append(b)
        scores = torch.zeros((2, VOCAB))
        scores[0, 3] = float("-inf")
        scores = guard(torch.tensor(batch), scores)
    assert scores[0, 7] == -50.0  # "7 7" was written by row 0: 7 after 7 again is a repeat
    assert scores[0, 3] == float("-inf")
    assert scores[1].tolist() == [0.0] * VOCAB  # row 1 wrote "8 9": nothing after 9 yet


def test_n_must_be_at_least_two():
    with pytest.raises(ValueError):
        AnswerNgramGuard(n=1)
