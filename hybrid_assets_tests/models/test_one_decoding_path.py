"""Serving and the promotion gate decode through the one path (``models/generation.Decoder``), with
the same guards: the same ticket gives the same generated text in both, with the real model."""

from __future__ import annotations

import pytest

from hybrid_assets.behaviour.dataset import BehaviourRecord
from hybrid_assets.behaviour.evaluate import generate_answers
from hybrid_assets.models.generation import Decoder
from hybrid_assets.serving.engine import AnswerEngine
from hybrid_assets.schema import LabelSpace, dump_answer
from hybrid_assets.settings import PROJECT_ROOT, load_settings

pytestmark = pytest.mark.integration

LABELS = LabelSpace.from_file(PROJECT_ROOT / "data/behaviour/labels.json")
TICKET = "Hi, how do I void a shipping label I bought by mistake?"


def test_serving_and_the_gate_share_the_decoder_and_its_guard(monkeypatch):
    monkeypatch.setenv("HYBRID_NO_REPEAT_NGRAM", "4")  # the gate must decode as served, guard included
    calls = []
    original = Decoder.generate

    def spy(self, model, conversations, citable, base_only=False, **options):
        generations = original(self, model, conversations, citable, base_only, **options)
        calls.append((self.no_repeat_ngram, self.constrained, conversations, [g.text for g in generations]))
        return generations

    monkeypatch.setattr(Decoder, "generate", spy)
    engine = AnswerEngine(load_settings(), LABELS, max_new_tokens=40, use_adapter=False)
    served = engine.answer_many(None, [{"ticket": TICKET}], retrieval=False)[0]
    model, _ = engine.loaded()
    _, decoder = engine.loaded()
    record = BehaviourRecord(id="t1", ticket=TICKET, customer_id=None, context=(), target=dump_answer(served.answer, LABELS),
                             origin="test:1")
    predictions, _ = generate_answers(model, decoder.tokenizer, [record], LABELS, max_new_tokens=40, batch_size=1)

    (served_call, gate_call) = calls
    assert served_call[0] == gate_call[0] == 4 and served_call[1] is gate_call[1] is True
    assert served_call[2] == gate_call[2]  # the same prompt
    assert served_call[3] == gate_call[3] == [predictions[0].text]  # greedy: the same text
