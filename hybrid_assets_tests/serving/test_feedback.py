"""The feedback loop's records (``serving/feedback.py``), without a server or a model: every review
becomes one line that the behaviour data's own loader reads as a valid record; a refused review names
the field and writes nothing; concurrent appends never interleave; and the count of reviewed examples
the promoted adapter has not seen follows the adapter's lineage (the trained data's content hash)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from hybrid_assets.behaviour.dataset import dataset_version, find_behaviour_files, load_behaviour_data
from hybrid_assets.behaviour.registry import AdapterVersion
from hybrid_assets.schema import LabelSpace, not_answerable_answer
from hybrid_assets.serving.feedback import (
    FEEDBACK_FILE,
    AnswerLog,
    FeedbackFile,
    ReviewRefused,
    build_record,
    decision_of,
    loop_status,
    trained_prefix,
)
from hybrid_assets.settings import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "data/behaviour"


@pytest.fixture
def behaviour_dir(tmp_path) -> Path:
    target = tmp_path / "behaviour"
    shutil.copytree(SAMPLE, target)
    return target


@pytest.fixture
def labels(behaviour_dir) -> LabelSpace:
    return LabelSpace.from_file(behaviour_dir / "labels.json")


def cited_sample() -> dict:
    """A sample ticket whose ideal answer cites its context (an answer that answers)."""
    for line in (SAMPLE / "tickets.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["answer"]["citations"]:
            return record
    raise AssertionError("no cited sample ticket")


def pending(log: AnswerLog, ticket: str | None = None):
    sample = cited_sample()
    return log.add(ticket=ticket or sample["ticket"] + " (console)", customer_id=sample["customer_id"],
                   history=[{"role": "customer", "content": "Hello <b>there</b>"}], context=sample["context"],
                   answer=sample["answer"], adapter_version=None, knowledge_version="abc123")


def test_an_approved_answer_becomes_a_valid_behaviour_record(behaviour_dir, labels):
    log, feedback = AnswerLog(), FeedbackFile(behaviour_dir)
    answer = pending(log)
    record = build_record(log.claim(answer.answer_id), "approve", "Ana", labels)
    appended = feedback.append(record, labels)

    lines = feedback.path.read_text(encoding="utf-8").splitlines()
    assert appended.line == len(lines) == 1
    written = json.loads(lines[0])
    assert written["answer"] == answer.answer and written["context"] == answer.context
    assert written["history"] == answer.history and written["ticket"] == answer.ticket
    assert written["review"]["reviewer"] == "Ana" and written["review"]["action"] == "approve"
    assert written["review"]["reviewed_at"] and written["review"]["changed_fields"] == []
    data = load_behaviour_data(behaviour_dir, labels)  # the loader the training reads with
    assert not [p for p in data.problems if p.file == FEEDBACK_FILE]
    assert written["id"] in {r.id for r in data.records}


def test_a_refused_correction_names_the_field_and_writes_nothing(behaviour_dir, labels):
    log, feedback = AnswerLog(), FeedbackFile(behaviour_dir)
    answer = pending(log)
    bad = dict(answer.answer, category="hacked", reply="x" * 5000)
    with pytest.raises(ReviewRefused) as refused:
        build_record(log.claim(answer.answer_id), "correct", "Ana", labels, corrected=bad)
    assert {p["field"] for p in refused.value.problems} == {"category", "reply"}
    assert refused.value.status == 422

    # A correction the schema accepts but the behaviour data's grounding rules refuse: it answers, yet
    # cites nothing. Refused by the dataset's own validator on the exact line, with the field named.
    ungrounded = dict(answer.answer, citations=[])
    record = build_record(answer, "correct", "Ana", labels, corrected=ungrounded)
    with pytest.raises(ReviewRefused) as refused:
        feedback.append(record, labels)
    assert refused.value.problems[0]["field"] in {"answerable", "decision", "citations"}
    unknown = dict(answer.answer, citations=["S9"])
    with pytest.raises(ReviewRefused) as refused:
        feedback.append(build_record(answer, "correct", "Ana", labels, corrected=unknown), labels)
    assert refused.value.problems[0]["field"] == "citations"
    with pytest.raises(ReviewRefused) as refused:
        build_record(answer, "approve", "   ", labels)
    assert refused.value.problems[0]["field"] == "reviewer"
    assert not feedback.path.exists()


def test_should_not_have_answered_is_the_honest_not_answerable_answer(behaviour_dir, labels):
    log, feedback = AnswerLog(), FeedbackFile(behaviour_dir)
    answer = pending(log)
    assert decision_of(answer.answer)["answers"] is True
    record = build_record(log.claim(answer.answer_id), "should_not_answer", "Ana", labels)
    feedback.append(record, labels)
    written = json.loads(feedback.path.read_text(encoding="utf-8"))
    assert decision_of(written["answer"])["answers"] is False
    assert written["answer"]["citations"] == []
    assert written["answer"]["category"] == answer.answer["category"]
    assert written["review"]["action"] == "should_not_answer" and "citations" in written["review"]["changed_fields"]
    assert written["answer"] == not_answerable_answer(labels, sentiment=answer.answer["sentiment"],
                                                      category=answer.answer["category"],
                                                      escalation=answer.answer["escalation"])


def test_each_answer_is_reviewed_once_and_unknown_answers_are_refused():
    log = AnswerLog()
    answer = pending(log)
    log.release(log.claim(answer.answer_id), "review-1")
    with pytest.raises(ReviewRefused) as again:
        log.claim(answer.answer_id)
    assert again.value.status == 409
    with pytest.raises(ReviewRefused) as unknown:
        log.claim("0" * 16)
    assert unknown.value.status == 404
    failed = pending(log, "another ticket")
    log.release(log.claim(failed.answer_id), None)  # a refused review can be retried
    assert log.claim(failed.answer_id) is failed


def test_decision_is_read_from_whichever_field_the_schema_has():
    assert decision_of({"answerable": True})["value"] == "answer"
    assert decision_of({"answerable": False}) == {"field": "answerable", "value": "not_answerable", "answers": False}
    assert decision_of({"decision": "clarify"}) == {"field": "decision", "value": "clarify", "answers": False}
    assert decision_of({"decision": "answer"})["answers"] is True


def test_concurrent_appends_never_interleave_and_a_missing_newline_is_repaired(behaviour_dir, labels):
    log, feedback = AnswerLog(), FeedbackFile(behaviour_dir)
    feedback.path.write_text('{"id": "hand-edited"}', encoding="utf-8")  # no final newline, and invalid
    answers = [pending(log, f"ticket number {i}") for i in range(12)]
    errors = []

    def review(answer):
        try:
            feedback.append(build_record(log.claim(answer.answer_id), "approve", "Ana", labels), labels)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=review, args=(a,)) for a in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = feedback.records(labels)
    assert len(rows) == 13 and rows[0]["valid"] is False
    assert sorted(row["record"]["ticket"] for row in rows[1:]) == sorted(a.ticket for a in answers)
    assert all(row["valid"] for row in rows[1:])


def _adapter(version: str, created_at: str = "2000-01-01T00:00:00+00:00") -> AdapterVersion:
    return AdapterVersion("v1", Path("unused"), {"dataset_version": version, "created_at": created_at})


def test_reviews_not_yet_in_the_promoted_adapter_follow_its_trained_data_hash(behaviour_dir, labels):
    log, feedback = AnswerLog(), FeedbackFile(behaviour_dir)

    def review(n):
        for i in range(n):
            answer = pending(log, f"pending ticket {len(feedback.raw_lines())}-{i}")
            feedback.append(build_record(log.claim(answer.answer_id), "approve", "Ana", labels), labels)

    trained_without_file = dataset_version(find_behaviour_files(behaviour_dir))
    assert loop_status(behaviour_dir, labels, None)["pending"] == 0
    review(2)
    assert loop_status(behaviour_dir, labels, None)["pending"] == 2  # nothing promoted: all pending
    trained_on_two = dataset_version(find_behaviour_files(behaviour_dir))
    review(3)

    assert trained_prefix(behaviour_dir, trained_without_file)[0] == 0
    assert loop_status(behaviour_dir, labels, _adapter(trained_without_file))["pending"] == 5
    assert trained_prefix(behaviour_dir, trained_on_two)[0] == 2
    status = loop_status(behaviour_dir, labels, _adapter(trained_on_two))
    assert status["pending"] == 3 and status["pending_method"].startswith("exact")
    current = dataset_version(find_behaviour_files(behaviour_dir))
    assert loop_status(behaviour_dir, labels, _adapter(current))["pending"] == 0
    assert loop_status(behaviour_dir, labels, _adapter(current[:16]))["pending"] == 0  # a short hash works too

    # Other behaviour data changed after training: no prefix matches, the count falls back on time.
    with open(behaviour_dir / "tickets.jsonl", "a", encoding="utf-8") as handle:
        handle.write("\n")
    fallback = loop_status(behaviour_dir, labels, _adapter(trained_on_two, created_at="2000-01-01T00:00:00+00:00"))
    assert fallback["pending"] == 5 and fallback["pending_method"].startswith("approximate")
    later = loop_status(behaviour_dir, labels, _adapter(trained_on_two, created_at="9999-01-01T00:00:00+00:00"))
    assert later["pending"] == 0
