"""Our CPU forward pass against Hugging Face transformers loading the same folder.

Acceptance: max |ours - ref| / max |ref| <= 1e-4 in fp32 for last-position logits of several
prompts, for every config variant the generator writes.
"""
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import our_logits, relative_error

VARIANTS = {
    "llama_gqa": ["--arch", "llama", "--seed", "1"],
    "llama_tied": ["--arch", "llama", "--seed", "2", "--tie-embeddings", "--kv-heads", "4"],
    "qwen2_qkv_bias": ["--arch", "qwen2", "--seed", "3", "--rope-theta", "1000000"],
    "llama3_rope_scaling": ["--arch", "llama", "--seed", "4", "--rope-scaling", "llama3",
                            "--rope-theta", "500000", "--max-positions", "1024"],
    "llama_linear_rope": ["--arch", "llama", "--seed", "5", "--rope-scaling", "linear"],
    "mistral": ["--arch", "mistral", "--seed", "6", "--heads", "8", "--kv-heads", "2",
                "--hidden", "64", "--head-dim", "16"],
    "llama_attention_bias": ["--arch", "llama", "--seed", "7", "--attention-bias"],
    "llama_bf16": ["--arch", "llama", "--seed", "8", "--dtype", "bf16"],
    "llama_fp16": ["--arch", "llama", "--seed", "9", "--dtype", "fp16"],
    "qwen2_bf16_sharded": ["--arch", "qwen2", "--seed", "10", "--dtype", "bf16",
                           "--max-shard-size", "150KB"],
    "llama_head_dim_32": ["--arch", "llama", "--seed", "11", "--heads", "4", "--head-dim", "32",
                          "--kv-heads", "1"],
}

PROMPTS = [
    [0, 5],
    [7],
    list(range(1, 40)),
    [(i * 37 + 11) % 500 for i in range(150)],
]


def reference_logits(model_dir, prompt):
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0].numpy()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_last_position_logits_match_transformers(variant, model_factory, tmp_path):
    model_dir = model_factory(variant, *VARIANTS[variant])
    for prompt in PROMPTS:
        ref = reference_logits(model_dir, prompt)[-1]
        ours = our_logits(model_dir, prompt, tmp_path)
        err = relative_error(ours, ref)
        assert err <= 1e-4, f"{variant} prompt len {len(prompt)}: relative error {err:.3g}"


def test_all_position_logits_match_transformers(model_factory, tmp_path):
    model_dir = model_factory("llama_gqa", *VARIANTS["llama_gqa"])
    prompt = PROMPTS[2]
    ref = reference_logits(model_dir, prompt)
    ours = our_logits(model_dir, prompt, tmp_path, all_positions=True).reshape(ref.shape)
    assert relative_error(ours, ref) <= 1e-4
    # The test would catch a model that ignores its input: rows must differ.
    assert np.max(np.abs(ours[0] - ours[-1])) > 1e-3
