"""Offline fusion (`loraserve fuse-local`) against peft 0.13.2's add_weighted_adapter.

Both results are loaded into the same PeftModel (ours through PEFT's own loader, which also
checks our writer's adapter_config.json) and compared module by module on the delta s * B @ A:
max |ours - peft| / max |peft| <= 1e-4. DARE draws random masks (torch.bernoulli), so it is
tested by its properties in tests/adapters/fusion_test.cc instead.

Documented differences (PEFT bugs, see adapters/fusion.h): PEFT's *_svd types scale each delta
by s_i twice, so with s_i != 1 ours equals PEFT run with weights w_i / s_i; the fused config
inherits use_rslora from the first source in PEFT, so no rsLoRA adapter comes first here.
"""
import json
import os
import tempfile

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

import gen_adapter
from conftest import run_loraserve

TOL = 1e-4

ADAPTERS = {
    "r4_qv": ["--rank", "4", "--target-modules", "q_proj,v_proj"],  # s = 2
    "r8_all_rslora": ["--rank", "8", "--rslora", "--target-modules", "all-linear"],
    "r8_attn": ["--rank", "8", "--alpha", "8", "--target-modules", "q_proj,k_proj,v_proj,o_proj"],
    "r8_all": ["--rank", "8", "--alpha", "8", "--target-modules", "all-linear"],
    "r8_mlp_s2": ["--rank", "8", "--target-modules", "gate_proj,up_proj,down_proj,q_proj"],
    "r6_qv_s1": ["--rank", "6", "--alpha", "6", "--target-modules", "q_proj,v_proj,down_proj"],
    "r8_layer1": ["--rank", "8", "--alpha", "8", "--target-modules", "all-linear",
                  "--layers-to-transform", "1"],
}


@pytest.fixture(scope="module")
def setup(model_factory, tmp_path_factory):
    base = model_factory("fusion_base", "--seed", "1", "--layers", "2")
    root = tmp_path_factory.mktemp("fusion_adapters")
    paths = {}
    for i, (name, flags) in enumerate(sorted(ADAPTERS.items())):
        out = str(root / name)
        assert gen_adapter.main(["--model", base, "--out", out, "--seed", str(300 + i),
                                 *flags]) == 0
        paths[name] = out
    return base, paths, root


def scaling_of(path):
    with open(os.path.join(path, "adapter_config.json")) as f:
        config = json.load(f)
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / (r ** 0.5 if config.get("use_rslora") else r)


def deltas(model, name):
    """module name -> s * B @ A (float64) for every LoRA layer that carries `name`."""
    out = {}
    for key, module in model.named_modules():
        if isinstance(module, LoraLayer) and name in module.lora_A:
            out[key] = module.get_delta_weight(name).detach().double()
    return out


def fuse_both(setup, sources, combination, peft_weights=None, **kwargs):
    base, paths, root = setup
    ours = os.path.join(tempfile.mkdtemp(dir=root), "fused")
    args = ["fuse-local", "--model", base, "--combination", combination, "--out", ours]
    for name, weight in sources:
        args += ["--adapter", f"{paths[name]}@{weight}"]
    flag = {"svd_rank": "--svd-rank", "density": "--density",
            "majority_sign_method": "--majority-sign", "svd_clamp": "--svd-clamp"}
    for key, value in kwargs.items():
        args += [flag[key], str(value)]
    proc = run_loraserve(*args)
    assert proc.returncode == 0, proc.stderr

    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    names = [f"s{i}" for i in range(len(sources))]
    peft = PeftModel.from_pretrained(model, paths[sources[0][0]], adapter_name=names[0])
    for adapter_name, (name, _) in zip(names[1:], sources[1:]):
        peft.load_adapter(paths[name], adapter_name=adapter_name)
    weights = peft_weights or [w for _, w in sources]
    peft.add_weighted_adapter(names, weights, "fused", combination_type=combination, **kwargs)
    peft.load_adapter(ours, adapter_name="ours")
    return deltas(peft.base_model.model, "fused"), deltas(peft.base_model.model, "ours")


def assert_same_deltas(theirs, ours):
    # Where PEFT created a LoRA layer that our result leaves out (and vice versa), the other
    # side's delta must be zero.
    for key in sorted(set(theirs) | set(ours)):
        ref = theirs.get(key)
        got = ours.get(key)
        if ref is None:
            ref = torch.zeros_like(got)
        if got is None:
            got = torch.zeros_like(ref)
        scale = ref.abs().max().item()
        if scale == 0:
            assert got.abs().max().item() < 1e-7, key
            continue
        err = (got - ref).abs().max().item() / scale
        assert err <= TOL, f"{key}: relative error {err:.3g}"


CASES = [
    # cat: exact; mixed ranks and target sets, rsLoRA second, a negative weight.
    ("cat", [("r4_qv", 0.6), ("r8_all_rslora", 0.4)], {}),
    ("cat", [("r8_attn", 1.5), ("r8_mlp_s2", -0.5), ("r6_qv_s1", 0.25)], {}),
    # linear: PEFT's factor-wise sum with sqrt(w * s), modules present in only some sources.
    ("linear", [("r8_attn", 0.7), ("r8_mlp_s2", 0.3)], {}),
    ("linear", [("r8_all", 0.5), ("r8_layer1", 0.5)], {}),
    # svd with s = 1 everywhere (PEFT's double scaling is then invisible), truncated.
    ("svd", [("r8_attn", 0.6), ("r6_qv_s1", 0.4)], {"svd_rank": 5}),
    ("svd", [("r8_all", 1.0), ("r8_attn", -0.5)], {}),
    # TIES family: magnitude pruning + sign election, deterministic.
    ("ties", [("r8_attn", 0.6), ("r8_all", 0.4)], {"density": 0.5}),
    ("ties", [("r8_attn", 0.6), ("r8_all", 0.4), ("r8_layer1", 0.3)],
     {"density": 0.7, "majority_sign_method": "frequency"}),
    ("ties_svd", [("r8_attn", 0.6), ("r6_qv_s1", 0.4)], {"density": 0.5, "svd_rank": 6}),
    ("magnitude_prune", [("r8_attn", 0.6), ("r8_all", 0.4)], {"density": 0.3}),
    ("magnitude_prune_svd", [("r8_attn", 0.6), ("r8_all", 0.4)], {"density": 0.3}),
]


@pytest.mark.parametrize("combination,sources,kwargs", CASES,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_matches_peft(setup, combination, sources, kwargs):
    theirs, ours = fuse_both(setup, sources, combination, **kwargs)
    assert theirs, "PEFT produced no fused modules"
    assert_same_deltas(theirs, ours)


def test_svd_with_scaling_equals_peft_at_weights_over_scaling(setup):
    """PEFT 0.13.2 multiplies get_delta_weight (already * s_i) by w_i * s_i again; ours is the
    intended sum of w_i * s_i * B_i A_i, i.e. PEFT's result for weights w_i / s_i."""
    _, paths, _ = setup
    sources = [("r4_qv", 0.6), ("r8_mlp_s2", 0.4)]
    peft_weights = [w / scaling_of(paths[n]) for n, w in sources]
    theirs, ours = fuse_both(setup, sources, "svd", peft_weights=peft_weights, svd_rank=8)
    assert_same_deltas(theirs, ours)
