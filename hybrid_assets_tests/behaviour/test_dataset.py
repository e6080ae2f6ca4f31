"""Contract of ``hybrid_assets.behaviour.dataset``:

- every bad record is reported with its file, line and reason, all of them (not just the first),
  and the good records around it are still loaded;
- duplicates (same normalised ticket + customer) are dropped, the first copy kept - except that an
  agent's review of a ticket supersedes the authored example, and the latest review wins;
- the train/eval split is a pure function of each ticket's text: deterministic, and unchanged for
  existing records when unrelated records are added;
- ``dataset_version`` changes if and only if the content of the behaviour files changes;
- intent CSV rows become schema-valid, not-answerable answers with the row's category.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from hybrid_assets.behaviour.dataset import (
    find_behaviour_files,
    unsourced_figures,
    load_behaviour_data,
    dataset_version,
    split_records,
)
from hybrid_assets.schema import parse_answer

FIXTURE_RECORDS = 12 + 6  # tickets.jsonl + intents.csv


def _first_ticket(behaviour_dir) -> dict:
    return json.loads((behaviour_dir / "tickets.jsonl").read_text(encoding="utf-8").splitlines()[0])


def _append(path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


def test_fixture_data_is_valid(behaviour_dir, labels):
    data = load_behaviour_data(behaviour_dir, labels)
    assert data.problems == ()
    assert data.duplicates == ()
    assert len(data.records) == FIXTURE_RECORDS


def test_bad_records_are_reported_with_file_line_and_reason(behaviour_dir, labels):
    good = _first_ticket(behaviour_dir)
    bad_category = {**good, "id": "bad-1", "ticket": "other ticket 1",
                    "answer": {**good["answer"], "category": "weather"}}
    unknown_citation = {**good, "id": "bad-2", "ticket": "other ticket 2",
                        "answer": {**good["answer"], "citations": ["S9"]}}
    missing_answer = {k: v for k, v in good.items() if k != "answer"}
    cited_but_unanswerable = {**good, "id": "bad-3", "ticket": "other ticket 3",
                              "answer": {**good["answer"], "decision": "not_answerable"}}
    _append(behaviour_dir / "tickets.jsonl", [
        json.dumps(bad_category),        # line 13
        "{not json",                     # line 14
        json.dumps(unknown_citation),    # line 15
        json.dumps(missing_answer),      # line 16
        json.dumps(cited_but_unanswerable),  # line 17
    ])
    _append(behaviour_dir / "intents.csv", ["What is the weather?,weather", ",billing"])  # lines 8, 9

    data = load_behaviour_data(behaviour_dir, labels)

    problems = {(p.file, p.line): p.reason for p in data.problems}
    assert set(problems) == {("tickets.jsonl", n) for n in (13, 14, 15, 16, 17)} | {("intents.csv", 8), ("intents.csv", 9)}
    assert "answer.category" in problems[("tickets.jsonl", 13)]
    assert "invalid JSON" in problems[("tickets.jsonl", 14)]
    assert "S9" in problems[("tickets.jsonl", 15)]
    assert "answer" in problems[("tickets.jsonl", 16)] and "missing" in problems[("tickets.jsonl", 16)]
    assert "citations" in problems[("tickets.jsonl", 17)]
    assert "category" in problems[("intents.csv", 8)]
    assert "text" in problems[("intents.csv", 9)]
    assert str(data.problems[0]).startswith(f"{data.problems[0].file}:{data.problems[0].line}: ")
    assert len(data.records) == FIXTURE_RECORDS  # the good records are all still there


def test_csv_without_the_expected_header_is_one_problem(behaviour_dir, labels):
    (behaviour_dir / "more.csv").write_text("question,label\nhello,billing\n", encoding="utf-8")
    data = load_behaviour_data(behaviour_dir, labels)
    assert [(p.file, p.line) for p in data.problems] == [("more.csv", 1)]


def test_duplicates_are_removed_keeping_the_first(behaviour_dir, labels):
    good = _first_ticket(behaviour_dir)
    same_ticket_noisy = {**good, "id": "copy-1", "ticket": "  " + good["ticket"].upper().replace(" ", "   ") + " "}
    other_customer = {**good, "id": "copy-2", "customer_id": "C9999"}
    _append(behaviour_dir / "tickets.jsonl", [json.dumps(same_ticket_noisy), json.dumps(other_customer)])

    data = load_behaviour_data(behaviour_dir, labels)

    ids = [r.id for r in data.records]
    assert good["id"] in ids and "copy-1" not in ids
    assert "copy-2" in ids  # same text, different customer: a different example
    assert data.duplicates == ("tickets.jsonl:13",)
    assert data.problems == ()


def test_the_latest_review_of_a_ticket_supersedes_the_authored_example(behaviour_dir, labels):
    """The console appends corrections to reviewed_feedback.jsonl; "r" sorts after "t", so a plain
    first-copy rule would keep tickets.jsonl's example and drop what a person corrected."""
    good = _first_ticket(behaviour_dir)
    corrected = {**good["answer"], "category": next(c for c in labels.categories if c != good["answer"]["category"])}

    def review(record_id, when, answer):
        return json.dumps({**good, "id": record_id, "answer": answer,
                           "review": {"action": "correct", "reviewer": "ana", "reviewed_at": when}})

    # Two reviews, the later one written first: the time decides, not the line order.
    _append(behaviour_dir / "reviewed_feedback.jsonl", [
        review("review-late", "2026-12-03T10:00:00+00:00", corrected),
        review("review-early", "2026-12-03T09:00:00Z", good["answer"]),
    ])

    data = load_behaviour_data(behaviour_dir, labels)

    by_id = {r.id: r for r in data.records}
    assert "review-late" in by_id and good["id"] not in by_id and "review-early" not in by_id
    assert by_id["review-late"].answer["category"] == corrected["category"]
    assert set(data.duplicates) == {"tickets.jsonl:1", "reviewed_feedback.jsonl:2"}
    assert len(data.records) == FIXTURE_RECORDS


def test_a_review_time_that_is_not_iso_8601_is_a_problem(behaviour_dir, labels):
    good = _first_ticket(behaviour_dir)
    _append(behaviour_dir / "reviewed_feedback.jsonl", [json.dumps(
        {**good, "id": "review-x", "review": {"action": "approve", "reviewer": "ana", "reviewed_at": "yesterday"}})])
    data = load_behaviour_data(behaviour_dir, labels)
    assert [(p.file, p.line) for p in data.problems] == [("reviewed_feedback.jsonl", 1)]
    assert "review.reviewed_at" in data.problems[0].reason
    assert good["id"] in {r.id for r in data.records}  # the authored example stays


def test_reused_id_with_different_content_is_a_problem(behaviour_dir, labels):
    good = _first_ticket(behaviour_dir)
    _append(behaviour_dir / "tickets.jsonl", [json.dumps({**good, "ticket": "a different question"})])
    data = load_behaviour_data(behaviour_dir, labels)
    assert [(p.file, p.line) for p in data.problems] == [("tickets.jsonl", 13)]
    assert "already used" in data.problems[0].reason


def test_split_is_deterministic_and_stable_when_records_are_added(behaviour_dir, labels):
    before = load_behaviour_data(behaviour_dir, labels).records
    split_a, split_b = split_records(before, 0.3), split_records(before, 0.3)
    assert split_a == split_b
    assert split_a.train and split_a.eval

    good = _first_ticket(behaviour_dir)
    extra = [json.dumps({**good, "id": f"new-{i}", "ticket": f"Unrelated question number {i}?"}) for i in range(40)]
    (behaviour_dir / "more.jsonl").write_text("\n".join(extra) + "\n", encoding="utf-8")
    after = split_records(load_behaviour_data(behaviour_dir, labels).records, 0.3)

    eval_ids_after = {r.id for r in after.eval}
    assert {r.id for r in split_a.eval} <= eval_ids_after
    assert {r.id for r in split_a.train}.isdisjoint(eval_ids_after)
    assert len(after.train) + len(after.eval) == len(before) + 40


def test_split_fraction_is_respected_and_validated(behaviour_dir, labels):
    good = _first_ticket(behaviour_dir)
    lines = [json.dumps({**good, "id": f"n-{i}", "ticket": f"Question {i}"}) for i in range(1000)]
    (behaviour_dir / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = load_behaviour_data(behaviour_dir, labels).records
    assert 0.11 < len(split_records(records).eval) / 1000 < 0.19  # default 0.15
    assert split_records(records, 0.0).eval == ()
    with pytest.raises(ValueError):
        split_records(records, 1.0)


def test_dataset_version_changes_iff_content_changes(behaviour_dir, tmp_path):
    files = find_behaviour_files(behaviour_dir)
    assert [p.name for p in files] == ["intents.csv", "labels.json", "tickets.jsonl"]
    original = dataset_version(files)

    assert dataset_version(list(reversed(files))) == original  # order of the argument
    os.utime(files[0], (1, 1))
    assert dataset_version(find_behaviour_files(behaviour_dir)) == original  # mtime only
    copy = tmp_path / "elsewhere"
    shutil.copytree(behaviour_dir, copy)
    assert dataset_version(find_behaviour_files(copy)) == original  # location
    (behaviour_dir / "notes.md").write_text("not behaviour data", encoding="utf-8")
    assert dataset_version(find_behaviour_files(behaviour_dir)) == original  # other file types

    tickets = behaviour_dir / "tickets.jsonl"
    content = tickets.read_bytes()
    tickets.write_bytes(content.replace(b"Unused labels", b"Unused label", 1))
    changed = dataset_version(find_behaviour_files(behaviour_dir))
    assert changed != original
    tickets.write_bytes(content)
    assert dataset_version(find_behaviour_files(behaviour_dir)) == original

    (behaviour_dir / "extra.csv").write_text("text,category\nHi,other\n", encoding="utf-8")
    assert dataset_version(find_behaviour_files(behaviour_dir)) not in (original, changed)
    (behaviour_dir / "extra.csv").unlink()
    labels_file = behaviour_dir / "labels.json"
    labels_file.write_text(labels_file.read_text(encoding="utf-8").replace("Parcelwise", "Shipco"), encoding="utf-8")
    assert dataset_version(find_behaviour_files(behaviour_dir)) != original  # labels are part of it


def test_intent_rows_become_not_answerable_answers(behaviour_dir, labels):
    data = load_behaviour_data(behaviour_dir, labels)
    intents = [r for r in data.records if r.origin.startswith("intents.csv")]
    assert len(intents) == 6
    for record in intents:
        answer = parse_answer(record.target, labels)  # the canonical target is schema-valid
        assert answer.decision == "not_answerable" and answer.citations == []
        assert answer.sentiment == "neutral"
        assert answer.escalation.level == "tier_2"
        assert record.context == () and record.customer_id is None
        assert record.id.startswith("intent-")  # content-derived, not positional
    assert {r.answer["category"] for r in intents} == {"billing", "labels", "tracking", "returns", "integrations", "api"}


def test_earlier_turns_of_a_reviewed_example_are_part_of_its_training_prompt(behaviour_dir, labels):
    """A console review records the conversation the model answered; training must see the same prompt."""
    from hybrid_assets.behaviour.sft import prompt_messages

    good = _first_ticket(behaviour_dir)
    turns = [{"role": "customer", "content": "My label for order 88 failed."},
             {"role": "agent", "content": "Which carrier did you pick?"}]
    _append(behaviour_dir / "reviewed_feedback.jsonl", [
        json.dumps({**good, "id": "review-h", "ticket": "It was UPS, still failing.", "history": turns}),
        json.dumps({**good, "id": "review-bad", "ticket": "another one", "history": [{"role": "agent"}]}),
    ])
    data = load_behaviour_data(behaviour_dir, labels)

    record = next(r for r in data.records if r.id == "review-h")
    prompt = prompt_messages(record, labels)[-1]["content"]
    assert "EARLIER IN THIS CONVERSATION" in prompt
    assert "customer: My label for order 88 failed." in prompt and "agent: Which carrier did you pick?" in prompt
    assert [(p.file, p.line, "history[0]" in p.reason) for p in data.problems] == [("reviewed_feedback.jsonl", 2, True)]


def test_a_reply_with_a_figure_its_context_does_not_hold_is_reported(behaviour_dir, labels):
    first = _first_ticket(behaviour_dir)
    assert unsourced_figures(load_behaviour_data(behaviour_dir, labels).records, labels) == []
    invented = {**first, "id": "invented-1", "ticket": first["ticket"] + " (second copy)",
                "answer": {**first["answer"], "reply": "We refund within 45 days. " + first["answer"]["reply"]}}
    _append(behaviour_dir / "tickets.jsonl", [json.dumps(invented)])
    found = unsourced_figures(load_behaviour_data(behaviour_dir, labels).records, labels)
    assert [(origin.rsplit(":", 1)[0].endswith("tickets.jsonl"), figures) for origin, figures in found] == [(True, ("45",))]


def test_the_shipped_behaviour_data_states_only_sourced_figures():
    """What the release adapter is trained on: a reply that states a figure its context does not hold
    teaches the model to invent one (10 shipped records did, until they were fixed)."""
    from hybrid_assets.schema import LabelSpace
    from hybrid_assets.settings import PROJECT_ROOT

    shipped = PROJECT_ROOT / "data" / "behaviour"
    labels = LabelSpace.from_file(shipped / "labels.json")
    data = load_behaviour_data(shipped, labels)
    assert len(data.records) > 700 and not data.problems
    assert unsourced_figures(data.records, labels) == []
