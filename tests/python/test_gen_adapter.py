"""tools/gen_adapter.py: adapters PEFT itself loads, deterministic, and visibly non-trivial."""
import json
import os
import warnings

import pytest
import torch

import gen_adapter

warnings.filterwarnings("ignore")


@pytest.fixture(scope="module")
def base_dir(model_factory):
    return model_factory("gen_adapter_base", "--seed", "11", "--hidden", "32", "--layers", "2",
                         "--intermediate", "48", "--vocab", "256")


def generate(base_dir, out, *flags):
    assert gen_adapter.main(["--model", base_dir, "--out", str(out), *flags]) == 0
    return str(out)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def load(base_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    return base, PeftModel.from_pretrained(base, adapter_dir)


def lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return {k: m for k, m in model.base_model.model.named_modules() if isinstance(m, LoraLayer)}


def test_deterministic_from_seed(base_dir, tmp_path):
    flags = ["--seed", "3", "--rank", "4", "--target-modules", "q_proj,v_proj,up_proj"]
    a = generate(base_dir, tmp_path / "a", *flags)
    b = generate(base_dir, tmp_path / "b", *flags)
    c = generate(base_dir, tmp_path / "c", *flags[:-2], "--target-modules", "q_proj,v_proj,up_proj",
                 "--seed", "4")
    assert sorted(os.listdir(a)) == ["adapter_config.json", "adapter_model.safetensors"]
    for name in os.listdir(a):
        assert read_bytes(os.path.join(a, name)) == read_bytes(os.path.join(b, name)), name
    assert read_bytes(os.path.join(a, "adapter_model.safetensors")) != read_bytes(
        os.path.join(c, "adapter_model.safetensors"))


def test_adapter_changes_logits_sanely(base_dir, tmp_path):
    adapter = generate(base_dir, tmp_path / "a", "--seed", "1", "--rank", "8", "--rslora")
    base, model = load(base_dir, adapter)
    ids = torch.tensor([[1, 4, 9, 16, 25, 36]])
    with torch.no_grad():
        with model.disable_adapter():
            reference = model(ids).logits
        adapted = model(ids).logits
    assert torch.isfinite(adapted).all()
    change = float((adapted - reference).abs().max() / reference.abs().max())
    assert 0.01 < change < 2.0, change
    for layer in lora_layers(model).values():
        assert float(layer.lora_B["default"].weight.abs().max()) > 0


def test_patterns_layers_and_scaling(base_dir, tmp_path):
    adapter = generate(base_dir, tmp_path / "a", "--seed", "2", "--rank", "8", "--alpha", "16",
                       "--target-modules", "q_proj,down_proj", "--layers-to-transform", "1",
                       "--rank-pattern", '{"down_proj": 2}', "--alpha-pattern", '{"q_proj": 4}')
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        config = json.load(f)
    assert config["layers_to_transform"] == [1]
    _, model = load(base_dir, adapter)
    layers = lora_layers(model)
    assert sorted(layers) == ["model.layers.1.mlp.down_proj", "model.layers.1.self_attn.q_proj"]
    down = layers["model.layers.1.mlp.down_proj"]
    assert down.r["default"] == 2 and down.scaling["default"] == pytest.approx(8.0)
    q = layers["model.layers.1.self_attn.q_proj"]
    assert q.r["default"] == 8 and q.scaling["default"] == pytest.approx(0.5)


def test_dora_magnitude_moved_off_the_row_norm(base_dir, tmp_path):
    adapter = generate(base_dir, tmp_path / "a", "--seed", "5", "--rank", "4", "--dora",
                       "--target-modules", r".*\.(k|o)_proj")
    _, model = load(base_dir, adapter)
    layers = lora_layers(model)
    assert len(layers) == 4
    for layer in layers.values():
        a = layer.lora_A["default"].weight
        b = layer.lora_B["default"].weight
        w = layer.get_base_layer().weight
        norm = torch.linalg.norm(w + layer.scaling["default"] * (b @ a), dim=1)
        magnitude = layer.lora_magnitude_vector["default"].weight
        assert magnitude.shape == norm.shape
        ratio = magnitude / norm
        assert float((ratio - 1).abs().max()) > 0.01
        assert float((ratio - 1).abs().max()) <= 0.2 + 1e-5


@pytest.mark.parametrize("dtype,expected", [("bf16", "BF16"), ("fp16", "F16")])
def test_dtype(base_dir, tmp_path, dtype, expected):
    adapter = generate(base_dir, tmp_path / "a", "--seed", "1", "--dtype", dtype)
    path = os.path.join(adapter, "adapter_model.safetensors")
    header_len = int.from_bytes(read_bytes(path)[:8], "little")
    header = json.loads(read_bytes(path)[8:8 + header_len])
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    assert dtypes == {expected}
    load(base_dir, adapter)


def test_unmatched_targets_fail(base_dir, tmp_path):
    assert gen_adapter.main(["--model", base_dir, "--out", str(tmp_path / "x"),
                             "--target-modules", "no_such_proj"]) != 0
