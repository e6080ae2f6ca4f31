"""One settings object for every entry point: the environment over the project's .env file, and
.env.example lists exactly the variables the code reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybrid_assets.settings import PROJECT_ROOT, SettingsError, env_value, load_settings, read_env_file

VARIABLE = re.compile(r'"((?:HYBRID|WEAVIATE)_[A-Z0-9_]+)"')
ENV_ONLY = {"HYBRID_ENV_FILE"}  # names the .env file itself, so it cannot live in it


def code_variables() -> set[str]:
    found = set()
    for path in (PROJECT_ROOT / "hybrid_assets").rglob("*.py"):
        found |= set(VARIABLE.findall(path.read_text(encoding="utf-8")))
    return found - ENV_ONLY


def test_env_example_lists_exactly_the_variables_the_code_reads():
    example = read_env_file(PROJECT_ROOT / ".env.example")
    assert set(example) == code_variables()


def test_a_dotenv_file_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text('# comment\nHYBRID_MIN_RELEVANCE=0.42  # inline comment\nexport WEAVIATE_HTTP_PORT="8123"\n'
                      "HYBRID_API_TOKEN='from-dotenv'\nHYBRID_BASE_MODEL=from-dotenv\n")
    monkeypatch.setenv("HYBRID_ENV_FILE", str(dotenv))
    monkeypatch.setenv("HYBRID_BASE_MODEL", "from-environment")
    for name in ("HYBRID_MIN_RELEVANCE", "WEAVIATE_HTTP_PORT", "HYBRID_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.min_relevance == 0.42 and settings.weaviate_http_port == 8123
    assert settings.base_model == "from-environment"
    assert env_value("HYBRID_API_TOKEN") == "from-dotenv"  # the API reads its token the same way


@pytest.mark.integration
def test_the_cli_and_the_api_see_the_dotenv_too(settings, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from hybrid_assets.cli import main
    from hybrid_assets.serving.api import create_app

    cli_dotenv = tmp_path / "cli.env"
    cli_dotenv.write_text("WEAVIATE_URL=http://127.0.0.1:9\n")
    monkeypatch.setenv("HYBRID_ENV_FILE", str(cli_dotenv))
    status = CliRunner().invoke(main, ["weaviate", "status"])
    assert '"url": "http://127.0.0.1:9"' in status.output and '"remote": true' in status.output

    api_dotenv = tmp_path / "api.env"
    api_dotenv.write_text("HYBRID_API_TOKEN=s3cret\n")
    monkeypatch.setenv("HYBRID_ENV_FILE", str(api_dotenv))
    monkeypatch.delenv("HYBRID_API_TOKEN", raising=False)

    class NeverCalled:
        adapter_version = None

    with TestClient(create_app(load_settings(), engine=NeverCalled())) as http:  # the test Weaviate server
        assert http.get("/v1/adapters").status_code == 401  # the token from .env is required
        assert http.get("/v1/adapters", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_a_malformed_dotenv_names_the_file_and_line(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("HYBRID_DATA_DIR=./data\nthis line is wrong\n")
    monkeypatch.setenv("HYBRID_ENV_FILE", str(dotenv))
    with pytest.raises(SettingsError, match=r"\.env:2: expected KEY=value"):
        load_settings()


def test_a_bad_number_names_the_variable(monkeypatch):
    monkeypatch.setenv("WEAVIATE_HTTP_PORT", "eighty")
    with pytest.raises(SettingsError, match="WEAVIATE_HTTP_PORT='eighty' is not a valid int"):
        load_settings()


def test_the_test_suite_runs_on_defaults_not_a_developers_dotenv():
    assert Path(env_value("HYBRID_ENV_FILE") or "").name == "no-dotenv-in-tests"


def test_the_serving_batch_size_is_auto_by_default_and_chosen_for_the_device(monkeypatch):
    from hybrid_assets.models.base_model import default_serve_batch_size

    monkeypatch.delenv("HYBRID_SERVE_BATCH_SIZE", raising=False)
    assert load_settings().serve_batch_size is None  # "auto": serving picks it when it starts
    import torch

    assert default_serve_batch_size() == (32 if torch.cuda.is_available() else 8)
    monkeypatch.setenv("HYBRID_SERVE_BATCH_SIZE", "AUTO")
    assert load_settings().serve_batch_size is None
    monkeypatch.setenv("HYBRID_SERVE_BATCH_SIZE", "4")
    assert load_settings().serve_batch_size == 4
    monkeypatch.setenv("HYBRID_SERVE_BATCH_SIZE", "0")
    with pytest.raises(SettingsError, match="HYBRID_SERVE_BATCH_SIZE"):
        load_settings()
