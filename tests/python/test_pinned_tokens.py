"""Greedy tokens pinned from the engine as it was before the backend seam (commit c96502f, the
CPU engine calling kernels/cpu directly): the refactor must not move a single token, on generated
Llama/Qwen2 models (with LoRA and DoRA adapters) and on SmolLM2 with the demo adapters. Recorded
with `loraserve generate ... --print-ids --ignore-eos` on an AMD EPYC (AVX2) machine; the same
runs on AVX-512 machines are expected to agree (the pre-seam suite checked SmolLM2 tokens
against transformers on both)."""
import os

import pytest

from conftest import ROOT, run_loraserve
from default_model import default_model_dir

PROMPT = "3,14,15,92,65,35"

TINY = {
    "llama": ["--seed", "11", "--layers", "2"],
    "qwen": ["--arch", "qwen2", "--seed", "12", "--layers", "2", "--attention-bias"],
}
TINY_ADAPTERS = {
    "lora": ("llama", ["--seed", "5", "--rank", "8", "--target-modules",
                       "q_proj,v_proj,down_proj"]),
    "dora": ("qwen", ["--seed", "6", "--rank", "4", "--dora"]),
}
TINY_PINNED = [
    ("llama", None, "389,76,356,167,387,240,247,387,223,178,178,178"),
    ("llama", "lora", "389,76,257,297,507,389,257,33,427,38,427,168"),
    ("qwen", None, "258,218,244,400,72,494,177,400,188,400,188,119"),
    ("qwen", "dora", "258,218,244,177,177,177,177,177,177,106,177,106"),
]
SMOLLM2_PINNED = [
    ([], "504,3163,6376,314,253,19339,6968,338,2093,4364,1573,30,657,506,253,16495,282,48316,"
         "5703,28,253,14886,282,13102"),
    (["--adapter", "assets/adapters/kjv"],
     "3528,339,744,260,3163,6376,28,253,1379,282,4558,284,27456,28,837,260,5703,19210,702,21730,"
     "281,260,3163,30"),
    (["--adapter", "assets/adapters/jargon@0.5", "--adapter", "assets/adapters/devil@0.5"],
     "504,3163,6376,30,2,198,2,1,9690,198,2,198,1,4093,198,49,32390,314,418,260,4869,282,253,216"),
]


@pytest.fixture(scope="module")
def tiny(model_factory, tmp_path_factory):
    import gen_adapter

    models = {name: model_factory(f"pinned_{name}", *flags) for name, flags in TINY.items()}
    adapters = {}
    for name, (base, flags) in TINY_ADAPTERS.items():
        out = str(tmp_path_factory.mktemp(f"pinned_{name}"))
        assert gen_adapter.main(["--model", models[base], "--out", out, *flags]) == 0
        adapters[name] = out
    return models, adapters


def last_line(text):
    return text.strip().splitlines()[-1]


@pytest.mark.parametrize("model,adapter,want", TINY_PINNED)
def test_generated_models_keep_their_greedy_tokens(tiny, model, adapter, want):
    models, adapters = tiny
    extra = ["--adapter", adapters[adapter]] if adapter else []
    proc = run_loraserve("generate", "--model", models[model], *extra, "--prompt-ids", PROMPT,
                         "--max-tokens", "12", "--print-ids", "--ignore-eos")
    assert proc.returncode == 0, proc.stderr
    assert last_line(proc.stdout) == want


@pytest.mark.parametrize("extra,want", SMOLLM2_PINNED)
def test_smollm2_keeps_its_greedy_tokens(extra, want):
    model = default_model_dir()
    extra = [os.path.join(ROOT, e) if e.startswith("assets/") else e for e in extra]
    proc = run_loraserve("generate", "--model", model, *extra, "--chat",
                         "Tell me about the night sky.", "--max-tokens", "24", "--print-ids",
                         "--ignore-eos")
    assert proc.returncode == 0, proc.stderr
    assert last_line(proc.stdout) == want
