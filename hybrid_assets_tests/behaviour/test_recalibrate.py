"""``hybrid-assets calibrate`` (behaviour/pipeline.recalibrate): what it refuses before loading a model."""

from __future__ import annotations

import json

import pytest

from hybrid_assets.behaviour.pipeline import recalibrate
from hybrid_assets.settings import load_settings


def test_an_adapter_trained_on_other_data_is_refused_with_both_versions_named(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "lineage.json").write_text(json.dumps({"dataset_version": "0123abcd" * 8, "metrics": {}}))
    before = (adapter / "lineage.json").read_text()
    with pytest.raises(ValueError, match=r"0123abcd.*dev split is not held out"):
        recalibrate(load_settings(), adapter)
    assert (adapter / "lineage.json").read_text() == before  # nothing written


def test_an_adapter_without_lineage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no lineage.json"):
        recalibrate(load_settings(), tmp_path)
