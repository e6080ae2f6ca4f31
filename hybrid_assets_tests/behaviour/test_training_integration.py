"""Integration contract of the behaviour path with the real default base model (SmolLM2-135M,
NF4-quantised on CPU) on the fixture data, with tiny step counts:

- QLoRA training changes the LoRA weights and leaves the (4-bit) base weights bit-for-bit frozen;
- the saved adapter is a standard PEFT adapter: it reloads with ``PeftModel.from_pretrained`` onto
  the base model, has the trained weights, and generates text;
- an interrupted run resumes from its latest checkpoint and ends with the same weights as an
  uninterrupted run; a finished run can be extended (max_steps 1 -> 2) from its checkpoint;
- an interrupted run never touches the registry; evaluation produces metrics in [0, 1]; a refused
  promotion gate leaves the registry unchanged.
"""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from hybrid_assets_tests.behaviour.conftest import FIXTURES

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")

from hybrid_assets.behaviour.train import TrainConfig, TrainingRun, train_adapter  # noqa: E402

CONFIG = TrainConfig(max_steps=2, batch_size=2, grad_accum=1, max_length=512, checkpoint_every=1)


class Interrupted(Exception):
    pass


def _lora_state(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def _frozen_base(model) -> dict:
    layer = model.get_base_model().model.layers[0]
    return {
        "q_proj.nf4": layer.self_attn.q_proj.base_layer.weight.data.clone(),
        "down_proj.nf4": layer.mlp.down_proj.base_layer.weight.data.clone(),
        "input_layernorm": layer.input_layernorm.weight.detach().clone(),
        "embed_tokens": model.get_input_embeddings().weight[:256].detach().clone(),
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    target = tmp_path_factory.mktemp("behaviour") / "behaviour"
    shutil.copytree(FIXTURES, target)
    return target


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """One 2-step QLoRA run, with the weights captured before and after."""
    output = tmp_path_factory.mktemp("adapter")
    run = TrainingRun(CONFIG, data_dir, output)
    base_before, lora_before = _frozen_base(run.model), _lora_state(run.model)
    result = run.train()
    return SimpleNamespace(run=run, result=result, output=output, base_before=base_before, lora_before=lora_before)


def test_qlora_updates_lora_weights_and_keeps_the_base_frozen(trained):
    import bitsandbytes as bnb

    model = trained.run.model
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    assert q_proj.base_layer.weight.quant_state.quant_type == "nf4"

    for name, before in trained.base_before.items():
        assert torch.equal(before, _frozen_base(model)[name]), f"base weight {name} changed"
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    after = _lora_state(model)
    assert after.keys() == trained.lora_before.keys() and len(after) == 30 * 7 * 2  # 30 layers x 7 modules x A,B
    changed = [n for n in after if not torch.equal(after[n], trained.lora_before[n])]
    assert changed == list(after), "every LoRA matrix should move in two steps"

    result = trained.result
    assert (result.total_steps, result.resumed_from_step, result.steps_run) == (2, 0, 2)
    assert [step for step, _ in result.loss_curve] == [1, 2]
    assert all(0 < loss < 20 for _, loss in result.loss_curve)
    assert result.tokens_per_s > 0 and result.peak_rss_mb > 0 and result.train_examples == 14  # 17 records minus 3 held out as the dev split
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "train_result.json"):
        assert (trained.output / name).is_file()


def test_saved_adapter_reloads_with_peft_and_generates(trained):
    from peft import PeftModel

    from hybrid_assets.models.base_model import load_for_inference

    base, tokenizer = load_for_inference()
    model = PeftModel.from_pretrained(base, str(trained.output))
    model.eval()

    trained_weights = {n.replace(".default", ""): p for n, p in _lora_state(trained.run.model).items()}
    loaded_weights = {n.replace(".default", ""): p for n, p in _lora_state(model).items()}
    assert trained_weights.keys() == loaded_weights.keys()
    for name, weight in trained_weights.items():
        assert torch.equal(weight, loaded_weights[name]), name

    messages = [{"role": "system", "content": "You are a support assistant."},
                {"role": "user", "content": "Where is my parcel?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()


def test_interrupted_run_resumes_from_its_checkpoint_and_never_touches_the_registry(trained, data_dir, tmp_path):
    from hybrid_assets.behaviour.registry import AdapterRegistry, build_lineage

    registry = AdapterRegistry(tmp_path / "adapters")
    promoted = shutil.copytree(trained.output, registry.staging_dir("earlier-run"), dirs_exist_ok=True)
    version = registry.commit(promoted, build_lineage("smollm2-135m-instruct", "0" * 16, {}, {}))
    registry.promote(version.version_id)
    pointer = registry.current_file.read_bytes()
    staging = registry.staging_dir("this-run")

    def crash_after_first_step(log):
        if log.step == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_adapter(CONFIG, data_dir, staging, on_step=crash_after_first_step)
    assert (staging / "checkpoints" / "step-000001").is_dir()
    assert not (staging / "adapter_model.safetensors").exists()
    assert registry.current_file.read_bytes() == pointer
    assert [v.version_id for v in registry.list_versions()] == [version.version_id]

    resumed = train_adapter(CONFIG, data_dir, staging)

    assert (resumed.resumed_from_step, resumed.steps_run, resumed.total_steps) == (1, 1, 2)
    assert resumed.loss_curve[0] == pytest.approx(trained.result.loss_curve[0], rel=1e-6)
    assert resumed.loss_curve[1][1] == pytest.approx(trained.result.loss_curve[1][1], rel=1e-4)
    from safetensors.torch import load_file

    uninterrupted = load_file(trained.output / "adapter_model.safetensors")
    after_resume = load_file(staging / "adapter_model.safetensors")
    assert uninterrupted.keys() == after_resume.keys()
    for name, weight in uninterrupted.items():
        assert torch.allclose(weight, after_resume[name], rtol=1e-4, atol=1e-6), name


def test_a_finished_run_can_be_extended_from_its_checkpoint(data_dir, tmp_path):
    from dataclasses import replace

    first = train_adapter(replace(CONFIG, max_steps=1), data_dir, tmp_path)
    extended = train_adapter(CONFIG, data_dir, tmp_path)
    assert (first.total_steps, first.steps_run) == (1, 1)
    assert (extended.resumed_from_step, extended.steps_run, extended.total_steps) == (1, 1, 2)
    assert extended.loss_curve[0] == first.loss_curve[0]


def test_evaluation_metrics_and_a_refused_gate_leave_the_registry_unchanged(trained, data_dir, labels, tmp_path):
    from hybrid_assets.behaviour.dataset import load_behaviour_data
    from hybrid_assets.behaviour.evaluate import evaluate_model, promote_if_passing
    from hybrid_assets.behaviour.registry import AdapterRegistry, build_lineage

    records = [r for r in load_behaviour_data(data_dir, labels).records if r.context][:2]
    # 24 new tokens cannot hold a whole answer: neither model produces valid JSON, so the gate
    # (which needs the adapter to be strictly better) must refuse.
    base = evaluate_model(None, None, records, labels, max_new_tokens=24)
    adapter = evaluate_model(None, trained.output, records, labels, max_new_tokens=24)
    for report in (base, adapter):
        metrics = report.metrics.to_dict()
        assert metrics["n"] == 2 and len(report.predictions) == 2
        for name in ("json_validity", "sentiment_accuracy", "category_accuracy", "escalation_accuracy",
                     "decision_accuracy"):
            assert 0.0 <= metrics[name] <= 1.0
        assert metrics["mean_latency_s"] > 0 and metrics["tokens_per_s"] > 0
        assert all(p.text for p in report.predictions)
    assert adapter.adapter_dir == str(trained.output) and base.adapter_dir is None

    registry = AdapterRegistry(tmp_path / "adapters")
    staging = shutil.copytree(trained.output, registry.staging_dir("candidate"), dirs_exist_ok=True)
    candidate = registry.commit(staging, build_lineage("smollm2-135m-instruct", "1" * 16, CONFIG.to_dict(),
                                                       adapter.metrics.to_dict()))
    passed, reasons = promote_if_passing(registry, candidate.version_id, base.metrics, adapter.metrics)
    assert not passed
    assert any("json_validity" in reason for reason in reasons)
    assert registry.current() is None and not registry.current_file.exists()
