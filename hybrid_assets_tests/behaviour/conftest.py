"""Fixtures of the behaviour-path tests: a private copy of the small fixture data set (never the
real ``data/behaviour``), its label space, and the default base model's tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hybrid_assets.schema import LabelSpace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "behaviour"


@pytest.fixture
def behaviour_dir(tmp_path) -> Path:
    """A copy of the fixture data that a test may edit."""
    target = tmp_path / "behaviour"
    shutil.copytree(FIXTURES, target)
    return target


@pytest.fixture(scope="session")
def labels() -> LabelSpace:
    return LabelSpace.from_file(FIXTURES / "labels.json")


@pytest.fixture(scope="session")
def tokenizer():
    """The default base model's tokenizer (converts the packaged GGUF once into the cache if needed)."""
    from hybrid_assets.models.base_model import load_tokenizer

    return load_tokenizer()
