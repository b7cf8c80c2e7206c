"""The committed demo adapters (assets/adapters/*) on SmolLM2-135M-Instruct, through our engine.

For every adapter, the mean negative log-likelihood per token of its held-out answers (chats it
never trained on) must be lower with that adapter than with the base model or any other
adapter: the confusion matrix below, published in docs/demo_adapters.md. And our engine's NLL
must equal PEFT's (transformers + peft in fp32) on the same text within 1e-3 relative.
"""
import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import ROOT, run_loraserve
from default_model import default_model_dir

ADAPTER_ROOT = os.path.join(ROOT, "assets", "adapters")
ADAPTERS = sorted(d for d in os.listdir(ADAPTER_ROOT)
                  if os.path.exists(os.path.join(ADAPTER_ROOT, d, "adapter_config.json")))
BASE = "base"
PAIRS_PER_TEXT = 6  # held-out chats scored per adapter: bounds the test to 4 x 3 x 6 engine runs


@pytest.fixture(scope="module")
def model_dir():
    return default_model_dir()


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


def heldout_chats(tokenizer, name):
    """The adapter's held-out pairs as single-turn chats, the form it trained on: a list of
    (ids, scored) where scored[i] says token i is part of the assistant answer (its <|im_end|>
    included) and counts in the NLL. Single-turn, because in one long multi-turn chat the base
    model learns the voice in context from the earlier answers, which hides the adapter's."""
    chats = []
    for line in open(os.path.join(ADAPTER_ROOT, name, "heldout.jsonl")):
        pair = json.loads(line)
        messages = [{"role": "user", "content": pair["question"]}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        messages.append({"role": "assistant", "content": pair["answer"]})
        full = tokenizer.apply_chat_template(messages)
        assert full[:len(prompt)] == prompt
        # The final "\n" after <|im_end|> belongs to the template, not the answer.
        scored = [False] * len(prompt) + [True] * (len(full) - len(prompt) - 1) + [False]
        chats.append((full, np.array(scored)))
    return chats[:PAIRS_PER_TEXT]


def token_nlls(logits, ids, scored):
    """-log p of every scored token; logits[i] predicts ids[i + 1]."""
    logits = np.asarray(logits, dtype=np.float64).reshape(len(ids), -1)[:-1]
    targets = np.array(ids[1:])
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits[np.arange(len(targets)), targets] - np.log(np.exp(logits).sum(axis=1))
    return -logp[scored[1:]]


def engine_nlls(model_dir, adapter, texts, tmp_path):
    """{text: mean NLL per answer token} for one model over every held-out text, through ONE
    `loraserve logits --batch-file --all-positions` call (all chats in one forward pass)."""
    batch = os.path.join(tmp_path, f"{adapter}.jsonl")
    spec = [] if adapter == BASE else [os.path.join(ADAPTER_ROOT, adapter)]
    order = [(t, ids, scored) for t in sorted(texts) for ids, scored in texts[t]]
    with open(batch, "w") as f:
        for _, ids, _ in order:
            f.write(json.dumps({"prompt_ids": list(ids), "adapters": spec}) + "\n")
    out = os.path.join(tmp_path, f"{adapter}.bin")
    proc = run_loraserve("logits", "--model", model_dir, "--batch-file", batch, "--out", out,
                         "--all-positions")
    assert proc.returncode == 0, proc.stderr
    logits = np.fromfile(out, dtype=np.float32)
    vocab = logits.size // sum(len(ids) for _, ids, _ in order)
    logits = logits.reshape(-1, vocab)
    nlls, row = {}, 0
    for text, ids, scored in order:
        nlls.setdefault(text, []).append(token_nlls(logits[row:row + len(ids)], ids, scored))
        row += len(ids)
    return {t: float(np.concatenate(v).mean()) for t, v in nlls.items()}


def peft_nll(model_dir, adapter, chats):
    from peft import PeftModel

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    if adapter != BASE:
        model = PeftModel.from_pretrained(model, os.path.join(ADAPTER_ROOT, adapter))
    nlls = []
    with torch.no_grad():
        for ids, scored in chats:
            logits = model(torch.tensor([ids])).logits[0].numpy()
            nlls.append(token_nlls(logits, ids, scored))
    return float(np.concatenate(nlls).mean())


@pytest.fixture(scope="module")
def confusion(model_dir, tokenizer, tmp_path_factory):
    """{(model, text): our engine's mean NLL}; models are the base and every adapter."""
    tmp = str(tmp_path_factory.mktemp("nll"))
    texts = {name: heldout_chats(tokenizer, name) for name in ADAPTERS}
    table = {}
    for m in [BASE, *ADAPTERS]:
        for t, nll in engine_nlls(model_dir, m, texts, tmp).items():
            table[m, t] = nll
    print(format_matrix(table))
    return table, texts


def format_matrix(table):
    lines = ["mean NLL per answer token (rows: model, columns: held-out text)",
             "| model | " + " | ".join(ADAPTERS) + " |",
             "|---|" + "---|" * len(ADAPTERS)]
    for m in [BASE, *ADAPTERS]:
        lines.append(f"| {m} | " + " | ".join(f"{table[m, t]:.4f}" for t in ADAPTERS) + " |")
    return "\n".join(lines)


def test_there_are_three_demo_adapters():
    assert len(ADAPTERS) >= 3, ADAPTERS


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_wins_on_its_own_heldout_text(confusion, name):
    table, _ = confusion
    own = table[name, name]
    for other in [BASE, *ADAPTERS]:
        if other != name:
            assert own < table[other, name], (
                f"{name}'s held-out NLL {own:.4f} is not below {other}'s {table[other, name]:.4f}"
                f"\n{format_matrix(table)}")


@pytest.mark.parametrize("name", [BASE, *ADAPTERS])
def test_engine_nll_matches_peft(confusion, model_dir, name):
    table, texts = confusion
    text = name if name != BASE else ADAPTERS[0]
    reference = peft_nll(model_dir, name, texts[text])
    ours = table[name, text]
    assert abs(ours - reference) <= 1e-3 * abs(reference), (name, ours, reference)
