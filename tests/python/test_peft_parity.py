"""Multi-adapter correctness against PEFT itself on the same files.

- every adapter alone: our logits vs PeftModel with that adapter active;
- a mixed batch of 32 requests over 16+ adapters (ranks 4..64, different target modules,
  rsLoRA, DoRA, rank_pattern, weighted pairs and triples, base-only rows) run by us in ONE
  forward pass, each row vs PEFT running that request alone, and vs PEFT's own mixed-batch
  `adapter_names` forward for the rows it supports (PEFT refuses adapter_names with DoRA);
- weighted sets vs add_weighted_adapter(combination_type="cat"), exactly the weighted sum;
- ranks 256 and 512 alone, and one batch mixing ranks 1, 8, 256 and 512 (SGMV and BGMV rows).
Acceptance: max |ours - ref| / max |ref| <= 1e-4 per row.
"""
import contextlib
import functools
import json
import os

import numpy as np
import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

import gen_adapter
from conftest import relative_error, run_loraserve

TOL = 1e-4

# name -> gen_adapter flags
ADAPTERS = {
    "r4_qv": ["--rank", "4", "--target-modules", "q_proj,v_proj"],
    "r8_all": ["--rank", "8", "--target-modules", "all-linear"],
    "r16_attn": ["--rank", "16", "--target-modules", "q_proj,k_proj,v_proj,o_proj"],
    "r32_mlp": ["--rank", "32", "--target-modules", "gate_proj,up_proj,down_proj"],
    "r64_all": ["--rank", "64", "--target-modules", "all-linear", "--alpha", "32"],
    "r8_rslora": ["--rank", "8", "--rslora", "--target-modules", "q_proj,o_proj,down_proj"],
    "r16_rslora_all": ["--rank", "16", "--rslora", "--target-modules", "all-linear"],
    "r4_dora": ["--rank", "4", "--dora", "--target-modules", "q_proj,v_proj"],
    "r12_dora_all": ["--rank", "12", "--dora", "--target-modules", "all-linear"],
    "r8_regex": ["--rank", "8", "--target-modules", r".*\.(k_proj|up_proj)"],
    "r16_pattern": ["--rank", "16", "--target-modules", "all-linear",
                    "--rank-pattern", '{"down_proj": 4}', "--alpha-pattern", '{"q_proj": 64}'],
    "r8_layer1": ["--rank", "8", "--target-modules", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                  "--layers-to-transform", "1"],
    "r6_bf16": ["--rank", "6", "--target-modules", "q_proj,v_proj,gate_proj", "--dtype", "bf16"],
    "r24_v_o": ["--rank", "24", "--target-modules", "v_proj,o_proj"],
    "r40_gate_down": ["--rank", "40", "--target-modules", "gate_proj,down_proj"],
    "r10_fp16": ["--rank", "10", "--target-modules", "all-linear", "--dtype", "fp16"],
}
WEIGHTED_SETS = [
    [("r4_qv", 0.7), ("r8_all", 0.3)],
    [("r16_attn", 1.5), ("r32_mlp", -0.5)],
    [("r8_all", 0.5), ("r24_v_o", 0.25), ("r40_gate_down", 1.0)],
    [("r64_all", 0.2), ("r8_rslora", 0.8)],
    [("r6_bf16", 1.0), ("r10_fp16", 0.5), ("r4_qv", 2.0)],
]


@pytest.fixture(scope="module")
def setup(model_factory, tmp_path_factory):
    base = model_factory("peft_base", "--arch", "llama", "--seed", "21", "--layers", "2")
    root = tmp_path_factory.mktemp("adapters")
    paths = {}
    for i, (name, flags) in enumerate(sorted(ADAPTERS.items())):
        out = str(root / name)
        assert gen_adapter.main(["--model", base, "--out", out, "--seed", str(100 + i),
                                 *flags]) == 0
        paths[name] = out
    return base, paths


def requests():
    """32 requests: 16 single adapters, 5 weighted sets, base-only rows, repeats."""
    names = sorted(ADAPTERS)
    reqs = [[(n, 1.0)] for n in names]
    reqs += WEIGHTED_SETS
    reqs += [[]] * 3
    reqs += [[(names[i], 1.0)] for i in (0, 3, 5, 7, 9, 11, 13, 15)]
    assert len(reqs) == 32
    rng = np.random.default_rng(5)
    prompts = [[int(t) for t in rng.integers(1, 500, size=int(rng.integers(3, 24)))]
               for _ in reqs]
    return reqs, prompts


def our_batch_logits(base, paths, reqs, prompts, tmp_path, *extra):
    batch = os.path.join(tmp_path, "batch.jsonl")
    with open(batch, "w") as f:
        for req, prompt in zip(reqs, prompts):
            specs = [f"{paths[n]}@{w}" for n, w in req]
            f.write(json.dumps({"prompt_ids": prompt, "adapters": specs}) + "\n")
    out = os.path.join(tmp_path, "logits.bin")
    proc = run_loraserve("logits", "--model", base, "--batch-file", batch, "--out", out, *extra)
    assert proc.returncode == 0, proc.stderr
    return np.fromfile(out, dtype=np.float32).reshape(len(reqs), -1)


def set_name(req):
    if not req:
        return "__base__"
    return "__".join(f"{n}_w{str(w).replace('.', 'p').replace('-', 'm')}" for n, w in req)


@contextlib.contextmanager
def adapter_names_injected(peft_model, names):
    """PEFT's `adapter_names=` forward, on torch 1.13.

    PEFT injects adapter_names into every LoRA layer's forward through
    register_forward_pre_hook(with_kwargs=True), which needs torch >= 2.0. Binding the same
    keyword on each layer's forward reaches the same code path (LoraLayer._mixed_batch_forward).
    """
    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        layer.forward = functools.partial(type(layer).forward, layer, adapter_names=names)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def round_matrices(model, dtype):
    """What `--weight-dtype` does to a wider checkpoint: every matrix rounded (to nearest even)
    to the 16-bit type and computed in fp32; vectors (norms, biases) stay as the file has them."""
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(param.to(dtype).float())


class PeftReference:
    """One PeftModel holding every adapter plus the cat-combined weighted sets."""

    def __init__(self, base, paths, reqs, matrix_dtype=None):
        model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32,
                                                     attn_implementation="eager")
        if matrix_dtype is not None:
            round_matrices(model, matrix_dtype)
        names = sorted(paths)
        self.peft = PeftModel.from_pretrained(model, paths[names[0]], adapter_name=names[0])
        for n in names[1:]:
            self.peft.load_adapter(paths[n], adapter_name=n)
        for req in reqs:
            if len(req) > 1 and set_name(req) not in self.peft.peft_config:
                self.peft.add_weighted_adapter([n for n, _ in req], [w for _, w in req],
                                               set_name(req), combination_type="cat")
        self.peft.eval()

    def alone(self, req, prompt):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            if not req:
                with self.peft.disable_adapter():
                    return self.peft(ids).logits[0, -1].numpy()
            self.peft.set_adapter(set_name(req) if len(req) > 1 else req[0][0])
            return self.peft(ids).logits[0, -1].numpy()

    def mixed_batch(self, reqs, prompts):
        """PEFT's own mixed-adapter batch forward (right padding + attention mask)."""
        longest = max(map(len, prompts))
        ids = torch.zeros(len(prompts), longest, dtype=torch.long)
        mask = torch.zeros(len(prompts), longest, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p)
            mask[i, : len(p)] = 1
        names = [set_name(r) if len(r) != 1 else r[0][0] for r in reqs]
        with torch.no_grad(), adapter_names_injected(self.peft, names):
            logits = self.peft(ids, attention_mask=mask).logits
        return np.stack([logits[i, len(p) - 1].numpy() for i, p in enumerate(prompts)])


@pytest.fixture(scope="module")
def reference(setup):
    base, paths = setup
    reqs, _ = requests()
    return PeftReference(base, paths, reqs)


def test_mixed_batch_matches_each_request_alone_in_peft(setup, reference, tmp_path):
    base, paths = setup
    reqs, prompts = requests()
    ours = our_batch_logits(base, paths, reqs, prompts, tmp_path)
    base_rows = [i for i, r in enumerate(reqs) if not r]
    for i, (req, prompt) in enumerate(zip(reqs, prompts)):
        ref = reference.alone(req, prompt)
        err = relative_error(ours[i], ref)
        assert err <= TOL, f"row {i} {set_name(req)}: relative error {err:.3g}"
        if req:  # the adapter really changed the output, so the comparison is meaningful
            base_ref = reference.alone([], prompt)
            assert np.max(np.abs(ref - base_ref)) > 1e-3, set_name(req)
    assert base_rows


def test_mixed_batch_matches_peft_adapter_names_forward(setup, reference, tmp_path):
    base, paths = setup
    reqs, prompts = requests()
    # PEFT refuses adapter_names when any DoRA adapter is loaded in the model; compare the
    # rows PEFT can batch in a model without DoRA adapters.
    keep = [i for i, r in enumerate(reqs) if not any("dora" in n for n, _ in r)]
    reqs = [reqs[i] for i in keep]
    prompts = [prompts[i] for i in keep]
    no_dora = {n: p for n, p in paths.items() if "dora" not in n}
    ref_model = PeftReference(base, no_dora, reqs)
    ref = ref_model.mixed_batch(reqs, prompts)
    ours = our_batch_logits(base, paths, reqs, prompts, tmp_path)
    assert len({set_name(r) for r in reqs}) >= 16
    for i, req in enumerate(reqs):
        err = relative_error(ours[i], ref[i])
        assert err <= TOL, f"row {i} {set_name(req)}: relative error {err:.3g}"


# The 16-bit weight storage and the narrower kernels hold the same 1e-4 against PEFT: the base
# matrices rounded as we round them (bf16/fp16), the adapters as the files store them.
@pytest.mark.parametrize("weight_dtype,isa", [("bf16", "auto"), ("fp16", "avx2"),
                                              ("fp32", "avx2"), ("bf16", "portable")])
def test_mixed_batch_through_weight_dtypes_and_isas(setup, tmp_path, weight_dtype, isa):
    base, paths = setup
    reqs, prompts = requests()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[weight_dtype]
    ref_model = PeftReference(base, paths, reqs, matrix_dtype=dtype)
    ours = our_batch_logits(base, paths, reqs, prompts, tmp_path, "--weight-dtype", weight_dtype,
                            "--cpu-isa", isa)
    for i, (req, prompt) in enumerate(zip(reqs, prompts)):
        err = relative_error(ours[i], ref_model.alone(req, prompt))
        assert err <= TOL, f"{weight_dtype}/{isa} row {i} {set_name(req)}: relative error {err:.3g}"
    if dtype is not None:
        # The rounding really happened: a base-only row is off the unrounded fp32 model by far
        # more than the tolerance above (fp16: ~8e-4, bf16: ~3e-3).
        row = reqs.index([])
        unrounded = PeftReference(base, {"r4_qv": paths["r4_qv"]}, [])
        assert relative_error(ours[row], unrounded.alone([], prompts[row])) > 3 * TOL


def test_single_adapter_generate_cli_accepts_adapter(setup):
    base, paths = setup
    plain = run_loraserve("generate", "--model", base, "--prompt-ids", "1,2,3", "--max-tokens",
                          "8", "--print-ids", "--ignore-eos")
    tuned = run_loraserve("generate", "--model", base, "--prompt-ids", "1,2,3", "--max-tokens",
                          "8", "--print-ids", "--ignore-eos", "--adapter", paths["r64_all"])
    assert plain.returncode == 0 and tuned.returncode == 0, plain.stderr + tuned.stderr
    assert len(plain.stdout.strip().split(",")) == 8
    assert plain.stdout != tuned.stdout


def test_weighted_dora_is_rejected(setup, tmp_path):
    base, paths = setup
    proc = run_loraserve("logits", "--model", base, "--prompt-ids", "1,2", "--out",
                         os.path.join(tmp_path, "x.bin"), "--adapter", paths["r4_dora"] + "@0.5",
                         "--adapter", paths["r4_qv"])
    assert proc.returncode != 0
    assert "DoRA" in proc.stderr


def test_adapter_dtype_storage_modes(setup, tmp_path):
    """auto keeps the bf16/fp16 files 16-bit in the pool: bit-identical to holding them in fp32.
    bf16 rounds every fp32 adapter: close to fp32 storage, but not equal."""
    base, paths = setup
    reqs, prompts = requests()
    auto = our_batch_logits(base, paths, reqs, prompts, tmp_path)
    wide = our_batch_logits(base, paths, reqs, prompts, tmp_path, "--adapter-dtype", "fp32")
    narrow = our_batch_logits(base, paths, reqs, prompts, tmp_path, "--adapter-dtype", "bf16")
    sixteen_bit = {"r6_bf16", "r10_fp16"}
    for i, req in enumerate(reqs):
        names = {n for n, _ in req}
        if names and names <= sixteen_bit and len(req) == 1:
            np.testing.assert_array_equal(auto[i], wide[i], err_msg=set_name(req))
        else:  # other rows: same values; mixed-dtype sets add their dtype runs separately
            assert relative_error(auto[i], wide[i]) <= 1e-6, set_name(req)
    for i, req in enumerate(reqs):
        if not req:  # base rows never touch the adapters
            np.testing.assert_array_equal(narrow[i], wide[i])
            continue
        rounding = relative_error(narrow[i], wide[i])
        assert rounding < 1e-2, f"{set_name(req)}: bf16 rounding moved logits by {rounding:.3g}"
    assert any(relative_error(narrow[i], wide[i]) > 0 for i, req in enumerate(reqs) if req)


def test_adapter_dtype_rejects_unknown_value(setup, tmp_path):
    base, paths = setup
    proc = run_loraserve("logits", "--model", base, "--prompt-ids", "1,2", "--out",
                         os.path.join(tmp_path, "x.bin"), "--adapter", paths["r4_qv"],
                         "--adapter-dtype", "fp8")
    assert proc.returncode != 0
    assert "--adapter-dtype" in proc.stderr


# Ranks up to --max-lora-rank's default (512), above every dimension of the tiny model (PEFT
# allows r > in/out features: B is [out, r], A is [r, in]), next to rank 1 and 8 adapters.
HIGH_RANK_ADAPTERS = {
    "r1_qv": ["--rank", "1", "--target-modules", "q_proj,v_proj"],
    "r8_all": ["--rank", "8", "--target-modules", "all-linear"],
    "r256_qv": ["--rank", "256", "--target-modules", "q_proj,v_proj"],
    "r256_all_rslora": ["--rank", "256", "--rslora", "--target-modules", "all-linear"],
    "r512_all": ["--rank", "512", "--target-modules", "all-linear"],
}


@pytest.fixture(scope="module")
def high_rank(model_factory, tmp_path_factory):
    base = model_factory("peft_base", "--arch", "llama", "--seed", "21", "--layers", "2")
    root = tmp_path_factory.mktemp("high_rank_adapters")
    paths = {}
    for i, (name, flags) in enumerate(sorted(HIGH_RANK_ADAPTERS.items())):
        out = str(root / name)
        assert gen_adapter.main(["--model", base, "--out", out, "--seed", str(300 + i),
                                 *flags]) == 0
        paths[name] = out
    return base, paths, PeftReference(base, paths, [])


def high_rank_requests():
    """Long prompts (70+ tokens: one SGMV segment each) and short ones (BGMV), adjacent rows
    of different ranks, and a base-only row."""
    names = ["r1_qv", "r512_all", "r8_all", "r512_all", "r256_qv", "r1_qv", None, "r8_all",
             "r256_all_rslora", "r512_all"]
    lengths = [5, 70, 72, 4, 66, 80, 9, 3, 75, 2]
    rng = np.random.default_rng(7)
    reqs = [[(n, 1.0)] if n else [] for n in names]
    prompts = [[int(t) for t in rng.integers(1, 500, size=n)] for n in lengths]
    return reqs, prompts


@pytest.mark.parametrize("name", ["r256_qv", "r256_all_rslora", "r512_all"])
def test_rank_256_and_512_adapters_alone_match_peft(high_rank, tmp_path, name):
    base, paths, reference = high_rank
    for prompt in ([3, 14, 15, 92, 65], list(range(1, 71))):
        ours = our_batch_logits(base, paths, [[(name, 1.0)]], [prompt], tmp_path)[0]
        ref = reference.alone([(name, 1.0)], prompt)
        err = relative_error(ours, ref)
        assert err <= TOL, f"{name}, {len(prompt)} tokens: relative error {err:.3g}"
        assert np.max(np.abs(ref - reference.alone([], prompt))) > 1e-3, name


def test_ranks_1_8_256_512_in_one_batch_match_peft_alone(high_rank, tmp_path):
    base, paths, reference = high_rank
    reqs, prompts = high_rank_requests()
    ours = our_batch_logits(base, paths, reqs, prompts, tmp_path)
    for i, (req, prompt) in enumerate(zip(reqs, prompts)):
        err = relative_error(ours[i], reference.alone(req, prompt))
        assert err <= TOL, f"row {i} {set_name(req)} ({len(prompt)} tokens): relative error {err:.3g}"
