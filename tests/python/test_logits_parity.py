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


def rounded_reference_logits(model_dir, prompt, dtype):
    """transformers on the model with every matrix rounded to `dtype` (what --weight-dtype does
    to an fp32 checkpoint), computed in fp32; norms stay fp32."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(param.to(dtype).float())
        return model(torch.tensor([prompt])).logits[0].numpy()


# Every weight dtype and kernel ISA against transformers: 16-bit files held 16-bit (auto), fp32
# files rounded to bf16/fp16, and the AVX2 and portable kernels on whatever CPU runs the suite.
@pytest.mark.parametrize("variant,weight_dtype,isa", [
    ("llama_gqa", "bf16", "auto"), ("llama_gqa", "fp16", "auto"),
    ("llama_bf16", "auto", "avx2"), ("llama_fp16", "auto", "portable"),
    ("qwen2_qkv_bias", "bf16", "avx2"), ("llama_head_dim_32", "fp32", "portable"),
])
def test_logits_through_weight_dtypes_and_isas(variant, weight_dtype, isa, model_factory,
                                               tmp_path):
    model_dir = model_factory(variant, *VARIANTS[variant])
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(weight_dtype)
    for prompt in PROMPTS[1:3]:
        ours = our_logits(model_dir, prompt, tmp_path,
                          extra=("--weight-dtype", weight_dtype, "--cpu-isa", isa))
        if dtype is None:
            ref = reference_logits(model_dir, prompt)[-1]
        else:
            ref = rounded_reference_logits(model_dir, prompt, dtype)[-1]
            # The rounding is real: the unrounded model is further away than the tolerance.
            assert relative_error(ours, reference_logits(model_dir, prompt)[-1]) > 2e-4
        err = relative_error(ours, ref)
        assert err <= 1e-4, f"{variant} {weight_dtype}/{isa} len {len(prompt)}: error {err:.3g}"


def test_all_position_logits_match_transformers(model_factory, tmp_path):
    model_dir = model_factory("llama_gqa", *VARIANTS["llama_gqa"])
    prompt = PROMPTS[2]
    ref = reference_logits(model_dir, prompt)
    ours = our_logits(model_dir, prompt, tmp_path, all_positions=True).reshape(ref.shape)
    assert relative_error(ours, ref) <= 1e-4
    # The test would catch a model that ignores its input: rows must differ.
    assert np.max(np.abs(ours[0] - ours[-1])) > 1e-3
