"""Evaluation dataset loaders: each fixture mirrors one real format (keys and nesting) with invented
content; the real benchmark data is only used when it is present."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from hybrid_assets.evaluation.datasets import (
    FORMATS,
    DatasetFormatError,
    EvalItem,
    clapnq_passage_id,
    intent_item_id,
    load_eval_dataset,
    split_bucket,
    split_intent_items,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
MTRAG = FIXTURES / "mtrag"
MTRAG_FILE = MTRAG / "mtrag_human_ref_subset_eval.json"
CLAPNQ = FIXTURES / "clapnq"
INTENTS = FIXTURES / "banking77" / "train.csv"
NATIVE = FIXTURES / "native"
# The public development sets, when a person points at them (never needed by the suite; no machine path).
REAL = Path(os.environ.get("HYBRID_SHARED_BENCHMARKS", "/nonexistent-shared-benchmarks"))

C1 = "1f0c0ffee1f0c0ffee1f0c0ffee10001"
C2 = "2e0beef02e0beef02e0beef02e0b0002"
C3 = "3d0cafe03d0cafe03d0cafe03d0c0003"


def by_id(dataset) -> dict[str, EvalItem]:
    return {item.id: item for item in dataset.items}


def passage_ids(dataset) -> set[str]:
    return {p.id for p in dataset.passages}


def copy_fixture(src: Path, tmp_path: Path) -> Path:
    target = tmp_path / src.name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, target)
    return target


# -- mtrag ---------------------------------------------------------------------------------------
def test_mtrag_loads_every_task_and_document():
    ds = load_eval_dataset(MTRAG_FILE, "mtrag")
    assert ds.format == "mtrag"
    assert [i.id for i in ds.items] == [f"{C1}<::>1", f"{C2}<::>3", f"{C2}<::>4", f"{C3}<::>2"]
    assert len(ds.passages) == 4 and ds.categories == ()
    for item in ds.items:
        assert set(item.gold_passage_ids) <= passage_ids(ds)


def test_mtrag_multi_turn_item_splits_last_user_turn_from_history():
    item = by_id(load_eval_dataset(MTRAG_FILE, "mtrag"))[f"{C2}<::>3"]
    assert item.question == "When did the Harbour Point keeper leave, and what did he do next?"
    assert [t["role"] for t in item.history] == ["user", "assistant", "user", "assistant"]
    assert item.history[0] == {"role": "user", "content": "what does a lighthouse keeper do"}
    assert item.gold_passage_ids == ("811112222_640-1180-0-540", "811112222_100-640-0-540")
    assert item.answerable is True  # PARTIAL counts as answerable
    assert item.gold_answer.startswith("The last keeper left Harbour Point in 1989")
    assert item.category is None and item.customer_id is None


def test_mtrag_answerability_labels():
    items = by_id(load_eval_dataset(MTRAG, "mtrag"))
    unanswerable = items[f"{C3}<::>2"]
    assert unanswerable.answerable is False
    assert unanswerable.gold_answer is None and unanswerable.gold_passage_ids == ()
    assert unanswerable.question == "Can I renew it by phone instead?" and len(unanswerable.history) == 2
    conversational = items[f"{C2}<::>4"]
    assert conversational.answerable is True and conversational.gold_passage_ids == ()
    assert conversational.gold_answer.startswith("You're welcome!")
    assert items[f"{C1}<::>1"].answerable is True


def test_mtrag_passages_keep_text_title_and_collection():
    passages = {p.id: p for p in load_eval_dataset(MTRAG, "mtrag").passages}
    titled = passages["acme-backup-guide-0-512"]
    assert titled.title == "Scheduling backups"
    assert titled.source == "mt-rag-ibmcloud-elser-512-100-20240502"
    assert "Add schedule" in titled.text
    assert passages["acme-backup-guide-512-1024"].title == ""  # MTRAG documents may lack a title
    assert passages["811112222_100-640-0-540"].source == "mt-rag-clapnq-elser-512-100-20240503"


def test_mtrag_folder_and_file_load_the_same_items():
    assert load_eval_dataset(MTRAG, "mtrag").items == load_eval_dataset(MTRAG_FILE, "mtrag").items


def test_mtrag_limit_keeps_exactly_the_kept_items_contexts():
    ds = load_eval_dataset(MTRAG, "mtrag", limit=2, seed=3)
    assert len(ds.items) == 2
    assert passage_ids(ds) == {g for item in ds.items for g in item.gold_passage_ids}
    assert ds == load_eval_dataset(MTRAG, "mtrag", limit=2, seed=3)


def _write_mtrag(tmp_path: Path, edit) -> Path:
    data = json.loads(MTRAG_FILE.read_text())
    edit(data)
    path = tmp_path / "mtrag.json"
    path.write_text(json.dumps(data))
    return path


def test_mtrag_context_without_document_is_an_error(tmp_path):
    path = _write_mtrag(tmp_path, lambda d: d["documents"].pop(0))
    with pytest.raises(DatasetFormatError) as err:
        load_eval_dataset(path, "mtrag")
    assert "mtrag.json" in str(err.value) and "tasks[0]" in str(err.value)
    assert "contexts.0.document_id" in str(err.value) and "acme-backup-guide-0-512" in str(err.value)


def test_mtrag_un_spelling_and_its_underspecified_turns_are_read_as_released(tmp_path):
    """MTRAG-UN spells the field ``answerability`` (list or plain string) and adds UNDERSPECIFIED:
    such a turn's gold decision is "clarify", and its reference (the clarifying question) is kept."""
    def to_mtrag_un(data):
        for task in data["tasks"]:
            task["answerability"] = task.pop("Answerability")
        data["tasks"][1]["answerability"] = ["UNDERSPECIFIED"]
        data["tasks"][2]["answerability"] = "underspecified"  # a plain string, any case
    items = by_id(load_eval_dataset(_write_mtrag(tmp_path, to_mtrag_un), "mtrag"))
    assert items[f"{C2}<::>3"].decision == items[f"{C2}<::>4"].decision == "clarify"
    assert items[f"{C2}<::>3"].answerable is False and items[f"{C2}<::>3"].gold_answer
    assert items[f"{C3}<::>2"].decision == "not_answerable" and items[f"{C1}<::>1"].decision == "answer"
    path = _write_mtrag(tmp_path, lambda d: d["tasks"][0].update(answerability="SOMETIMES"))
    with pytest.raises(DatasetFormatError, match=r"tasks\[0\].*field 'answerability'.*SOMETIMES"):
        load_eval_dataset(path, "mtrag")


def test_mtrag_bad_records_name_task_and_field(tmp_path):
    path = _write_mtrag(tmp_path, lambda d: d["tasks"][1]["input"].append({"speaker": "agent", "text": "x"}))
    with pytest.raises(DatasetFormatError, match=r"tasks\[1\].*field 'input'.*last turn"):
        load_eval_dataset(path, "mtrag")
    path = _write_mtrag(tmp_path, lambda d: d["tasks"][2].update(Answerability=["MAYBE"]))
    with pytest.raises(DatasetFormatError, match=r"tasks\[2\].*field 'Answerability'.*MAYBE"):
        load_eval_dataset(path, "mtrag")
    path = _write_mtrag(tmp_path, lambda d: d["tasks"][3].pop("input"))
    with pytest.raises(DatasetFormatError, match=r"mtrag.json: tasks\[3\]: field 'input': Field required"):
        load_eval_dataset(path, "mtrag")


# -- clapnq --------------------------------------------------------------------------------------
def test_clapnq_folder_loads_both_files():
    ds = load_eval_dataset(CLAPNQ, "clapnq")
    assert ds.format == "clapnq" and len(ds.items) == 5
    assert sum(i.answerable for i in ds.items) == 3
    # Five records, four distinct passages: the kettle passage is shared by records 1 and 4.
    assert len(ds.passages) == 4 and len(passage_ids(ds)) == 4
    assert all(p.source == "clapnq" for p in ds.passages)


def test_clapnq_answerable_item():
    ds = load_eval_dataset(CLAPNQ, "clapnq")
    item = by_id(ds)["9000000000000000001"]
    kettle = next(p for p in ds.passages if p.title == "Electric kettle")
    assert item.question == "how does an electric kettle know when to switch off"
    assert item.answerable is True and item.history == ()
    assert item.gold_passage_ids == (clapnq_passage_id("Electric kettle", kettle.text),) == (kettle.id,)
    assert item.gold_answer.startswith("A thermostat or a bimetallic strip")  # the first of two answers
    assert by_id(ds)["9000000000000000002"].gold_answer == "Ada Lindqvist painted the Blue Harbour mural in 1974."


def test_clapnq_unanswerable_items_have_no_gold_but_their_passages_are_in_the_corpus():
    ds = load_eval_dataset(CLAPNQ, "clapnq")
    ferry = by_id(ds)["9000000000000000005"]
    assert ferry.answerable is False and ferry.gold_answer is None and ferry.gold_passage_ids == ()
    assert "Ferry terminal" in {p.title for p in ds.passages}


def test_clapnq_single_file():
    ds = load_eval_dataset(CLAPNQ / "dev_unanswerable.jsonl", "clapnq")
    assert [i.id for i in ds.items] == ["9000000000000000004", "9000000000000000005"]
    assert not any(i.answerable for i in ds.items) and len(ds.passages) == 2


@pytest.mark.parametrize("seed", range(6))
def test_clapnq_limit_keeps_the_balance_and_the_kept_records_passages(seed):
    ds = load_eval_dataset(CLAPNQ, "clapnq", limit=2, seed=seed)
    assert sorted(i.answerable for i in ds.items) == [False, True]
    four = load_eval_dataset(CLAPNQ, "clapnq", limit=4, seed=seed)
    assert sum(i.answerable for i in four.items) == 2  # 4 * 3/5 = 2.4 -> 2 answerable, 2 unanswerable
    # every kept record's passage is in the corpus, the unanswerable ones' too
    full = load_eval_dataset(CLAPNQ, "clapnq")
    record_passages = {"9000000000000000004": "Electric kettle", "9000000000000000005": "Ferry terminal"}
    titles = {p.title for p in ds.passages}
    for item in ds.items:
        assert set(item.gold_passage_ids) <= passage_ids(ds)
        if item.id in record_passages:
            assert record_passages[item.id] in titles
    assert len(ds.passages) <= len(full.passages)
    assert ds == load_eval_dataset(CLAPNQ, "clapnq", limit=2, seed=seed)


def test_clapnq_repeated_record_id_is_an_error(tmp_path):
    folder = copy_fixture(CLAPNQ, tmp_path)
    answerable = (folder / "dev_answerable.jsonl").read_text()
    unanswerable = (folder / "dev_unanswerable.jsonl").read_text()
    (folder / "dev_unanswerable.jsonl").write_text(unanswerable.replace("9000000000000000004", "9000000000000000001"))
    repeated = r"record id '9000000000000000001' at dev_unanswerable.jsonl:1 already used at dev_answerable.jsonl:1"
    with pytest.raises(DatasetFormatError, match=repeated):
        load_eval_dataset(folder, "clapnq")
    (folder / "dev_unanswerable.jsonl").write_text(unanswerable)
    (folder / "dev_answerable.jsonl").write_text(answerable.replace('"input": "who painted', '"inptu": "who painted'))
    with pytest.raises(DatasetFormatError, match=r"dev_answerable.jsonl:2: field 'input': Field required"):
        load_eval_dataset(folder, "clapnq")


# -- intent-csv ----------------------------------------------------------------------------------
def test_intent_csv_items_and_categories():
    ds = load_eval_dataset(INTENTS, "intent-csv")
    assert ds.format == "intent-csv" and ds.passages == ()
    # 13 rows; "i lost my card  yesterday" repeats "I lost my card yesterday" once normalised.
    assert len(ds.items) == 12
    assert ds.categories == ("card_arrival", "exchange_rate", "lost_or_stolen_card")
    assert ds.categories == tuple(sorted(json.loads((INTENTS.parent / "categories.json").read_text())))
    first = ds.items[0]
    assert first.question == "I am still waiting on my card?" and first.category == "card_arrival"
    assert first.answerable is True and first.gold_passage_ids == () and first.history == ()
    assert first.id == intent_item_id("I am still waiting on my card?", "card_arrival")
    questions = [i.question for i in ds.items]
    assert "Is the rate for dollars\nthe same as for euros?" in questions  # quoted multi-line row
    assert "Please block my card, it was stolen" in questions  # quoted comma


def test_intent_csv_limit_keeps_the_full_label_vocabulary():
    ds = load_eval_dataset(INTENTS, "intent-csv", limit=2, seed=1)
    assert len(ds.items) == 2
    assert ds.categories == ("card_arrival", "exchange_rate", "lost_or_stolen_card")


def test_intent_csv_accepts_a_label_column(tmp_path):
    path = tmp_path / "intents.csv"
    path.write_text("label,text\nrefund,Where is my refund?\n")
    (item,) = load_eval_dataset(path, "intent-csv").items
    assert (item.question, item.category) == ("Where is my refund?", "refund")


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("text,category\nok,a\n,card_arrival\n", r"intents.csv:3: field 'text' is empty"),
        ('text,category\nok,a\n"two\nlines",a\nno category,\n', r"intents.csv:5: field 'category' is empty"),
        ("question,intent\nhi,a\n", r"intents.csv:1: header must be 'text,category'"),
        ("text,category\nhi,a,extra\n", r"intents.csv:2: expected 2 columns, got 3"),
    ],
)
def test_intent_csv_bad_rows_name_file_and_line(tmp_path, body, pattern):
    path = tmp_path / "intents.csv"
    path.write_text(body)
    with pytest.raises(DatasetFormatError, match=pattern):
        load_eval_dataset(path, "intent-csv")


# -- native --------------------------------------------------------------------------------------
def test_native_folder_loads_items_and_passages():
    ds = load_eval_dataset(NATIVE, "native")
    assert ds.format == "native" and [i.id for i in ds.items] == ["n-001", "n-002", "n-003", "n-004"]
    assert passage_ids(ds) == {"kb-returns-1", "kb-returns-2", "kb-shipping-1", "kb-warranty-1"}
    assert ds.categories == ("billing", "returns", "shipping")
    items = by_id(ds)
    assert items["n-002"].history[1] == {
        "role": "assistant",
        "content": "A prepaid return label is on its way to your email.",
    }
    assert items["n-002"].gold_passage_ids == ("kb-returns-2",) and items["n-002"].customer_id == "C-1002"
    assert items["n-004"].answerable is False and items["n-004"].gold_answer is None
    assert items["n-003"].customer_id is None and items["n-003"].answerable is True
    warranty = next(p for p in ds.passages if p.id == "kb-warranty-1")
    assert warranty.source == "" and warranty.title == "Warranty"


def test_native_items_file_path_finds_sibling_passages():
    from_file, from_folder = load_eval_dataset(NATIVE / "items.jsonl", "native"), load_eval_dataset(NATIVE, "native")
    assert from_file.name == "native-items" and from_folder.name == "native"
    assert replace(from_file, name="native") == from_folder


def test_native_limit_keeps_the_whole_corpus():
    ds = load_eval_dataset(NATIVE, "native", limit=1, seed=2)
    assert len(ds.items) == 1 and len(ds.passages) == 4


def test_native_without_passages_file(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a", "question": "Hello?"}\n')
    ds = load_eval_dataset(path, "native")
    assert ds.passages == () and ds.items == (EvalItem(id="a", question="Hello?"),)


def _native_with(tmp_path: Path, line3: str) -> Path:
    folder = copy_fixture(NATIVE, tmp_path)
    lines = (folder / "items.jsonl").read_text().splitlines()
    lines[2] = line3
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    ("line3", "pattern"),
    [
        ('{"id": "n-003", "question": "x",', r"items.jsonl:3: invalid JSON"),
        ('["n-003"]', r"items.jsonl:3: a line must be a JSON object"),
        ('{"id": "n-003"}', r"items.jsonl:3: field 'question': Field required"),
        ('{"id": "n-003", "question": "  "}', r"items.jsonl:3: field 'question': Value error, must not be blank"),
        ('{"id": "n-003", "question": "x", "answerable": "yes"}', r"items.jsonl:3: field 'answerable'"),
        ('{"id": "n-003", "question": "x", "gold_answr": "y"}', r"items.jsonl:3: field 'gold_answr': Extra inputs"),
        (
            '{"id": "n-003", "question": "x", "history": [{"role": "bot", "content": "y"}]}',
            r"items.jsonl:3: field 'history.0.role'",
        ),
        (
            '{"id": "n-003", "question": "x", "gold_passage_ids": ["kb-nope"]}',
            r"items.jsonl:3: field 'gold_passage_ids': \['kb-nope'\] not in passages.jsonl",
        ),
        ('{"id": "n-001", "question": "x"}', r"items.jsonl: item id 'n-001' at line 3 already used at line 1"),
    ],
)
def test_native_bad_lines_name_file_line_and_field(tmp_path, line3, pattern):
    with pytest.raises(DatasetFormatError, match=pattern):
        load_eval_dataset(_native_with(tmp_path, line3), "native")


def test_native_bad_passage_line(tmp_path):
    folder = copy_fixture(NATIVE, tmp_path)
    with (folder / "passages.jsonl").open("a") as handle:
        handle.write('{"id": "kb-x", "title": "no text"}\n')
    with pytest.raises(DatasetFormatError, match=r"passages.jsonl:5: field 'text': Field required"):
        load_eval_dataset(folder, "native")


# -- shared behaviour ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "fmt"), [(MTRAG, "mtrag"), (CLAPNQ, "clapnq"), (INTENTS, "intent-csv"), (NATIVE, "native")]
)
def test_missing_path_is_named(tmp_path, path, fmt):
    missing = tmp_path / "nowhere" / path.name
    with pytest.raises(DatasetFormatError, match=re.escape(str(missing))):
        load_eval_dataset(missing, fmt)


def test_folder_without_the_expected_file_is_named(tmp_path):
    with pytest.raises(DatasetFormatError, match=re.escape(f"{tmp_path}: no items.jsonl")):
        load_eval_dataset(tmp_path, "native")
    with pytest.raises(DatasetFormatError, match=re.escape(f"{tmp_path}: no dev_answerable.jsonl")):
        load_eval_dataset(tmp_path, "clapnq")


def test_unknown_format_lists_the_formats():
    with pytest.raises(DatasetFormatError) as err:
        load_eval_dataset(NATIVE, "squad")
    assert "'squad'" in str(err.value)
    assert all(name in str(err.value) for name in FORMATS)


def test_negative_limit_is_rejected():
    with pytest.raises(ValueError, match="limit"):
        load_eval_dataset(NATIVE, "native", limit=-1)


def test_limit_is_a_seeded_subset_in_source_order():
    full = [i.id for i in load_eval_dataset(INTENTS, "intent-csv").items]

    def sample(seed: int) -> list[str]:
        return [i.id for i in load_eval_dataset(INTENTS, "intent-csv", limit=5, seed=seed).items]

    samples = {seed: sample(seed) for seed in range(5)}
    for seed, ids in samples.items():
        assert len(ids) == 5 and ids == [i for i in full if i in ids]  # a subset, in file order
        assert ids == sample(seed)
    assert len({tuple(ids) for ids in samples.values()}) > 1  # the seed matters
    assert load_eval_dataset(INTENTS, "intent-csv", limit=0).items == ()
    assert [i.id for i in load_eval_dataset(INTENTS, "intent-csv", limit=100).items] == full


# -- split ---------------------------------------------------------------------------------------
def _items(n: int) -> list[EvalItem]:
    return [EvalItem(id=f"i{k}", question=f"question number {k}", category="c") for k in range(n)]


def test_split_is_disjoint_complete_and_about_the_asked_fraction():
    items = _items(1000)
    train, held_out = split_intent_items(items, eval_fraction=0.2)
    assert {i.id for i in train}.isdisjoint({i.id for i in held_out})
    assert len(train) + len(held_out) == 1000
    assert 150 <= len(held_out) <= 250


def test_split_depends_only_on_the_text():
    items = _items(200)
    _, held_out = split_intent_items(items, 0.2)
    # order, other items, and a changed id or case/whitespace do not move an item
    _, reversed_out = split_intent_items(list(reversed(items)), 0.2)
    _, half_out = split_intent_items(items[:100], 0.2)
    renamed = [EvalItem(id="x" + i.id, question="  " + i.question.upper()) for i in items]
    _, renamed_out = split_intent_items(renamed, 0.2)
    assert {i.id for i in reversed_out} == {i.id for i in held_out}
    assert {i.id for i in half_out} == {i.id for i in held_out if int(i.id[1:]) < 100}
    assert {i.id[1:] for i in renamed_out} == {i.id for i in held_out}


def test_split_seed_and_fraction():
    items = _items(300)
    ids = lambda part: {i.id for i in part}  # noqa: E731
    assert ids(split_intent_items(items, 0.2, seed=0)[1]) != ids(split_intent_items(items, 0.2, seed=1)[1])
    assert ids(split_intent_items(items, 0.1)[1]) <= ids(split_intent_items(items, 0.2)[1])  # nested
    assert split_intent_items(items, 0.0)[1] == [] and split_intent_items(items, 1.0)[0] == []
    with pytest.raises(ValueError):
        split_intent_items(items, 1.5)


def test_split_bucket_matches_the_behaviour_split():
    """Seed 0 must agree with behaviour training's split, or held-out intents leak into training."""
    from hybrid_assets.behaviour.dataset import split_bucket as behaviour_bucket

    for item in load_eval_dataset(INTENTS, "intent-csv").items:
        assert split_bucket(item.question) == behaviour_bucket(SimpleNamespace(ticket=item.question))


# -- the real data, when it is there ---------------------------------------------------------------
@pytest.mark.skipif(not REAL.is_dir(), reason="set HYBRID_SHARED_BENCHMARKS to the public datasets folder")
@pytest.mark.parametrize(
    ("relative", "fmt"),
    [("mtrag", "mtrag"), ("clapnq", "clapnq"), ("banking77/train.csv", "intent-csv")],
)
def test_real_benchmarks_load(relative, fmt):
    ds = load_eval_dataset(REAL / relative, fmt, limit=20)
    assert len(ds.items) == 20 and len({i.id for i in ds.items}) == 20
    assert all(i.question.strip() for i in ds.items)
    for item in ds.items:
        assert set(item.gold_passage_ids) <= passage_ids(ds)
        assert (item.gold_answer is None) or item.gold_answer.strip()
    if fmt == "mtrag":
        assert ds.passages and any(i.history for i in ds.items)
    if fmt == "clapnq":
        assert sum(i.answerable for i in ds.items) == 10  # 150/150 in the source
        assert all(i.gold_passage_ids for i in ds.items if i.answerable)
    if fmt == "intent-csv":
        assert len(ds.categories) == 77 and ds.passages == ()
