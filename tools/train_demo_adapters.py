#!/usr/bin/env python3
"""Trains the demo LoRA adapters for SmolLM2-135M-Instruct on public-domain Debian text.

One adapter per corpus in tools/demo_corpora.py, each a distinct voice (King James scripture,
hacker Jargon File, Bierce's Devil's Dictionary) and a distinct PEFT flavour (DoRA, rsLoRA,
plain LoRA; ranks 16, 32, 8), so the engine's adapter paths are all exercised by real weights.

Deterministic: a fixed seed drives the data shuffle, the split, LoRA initialisation and the
batch order; torch runs on 2 CPU threads. Supervised on the chat template: only the assistant
answer (and its <|im_end|>) is in the loss. The held-out pairs (never trained on) are written
next to the adapter for tests/python/test_demo_adapters_quality.py. Weights are saved in bf16.

  python tools/train_demo_adapters.py [--only kjv] [--out assets/adapters] [--model DIR]
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_corpora  # noqa: E402
from default_model import ROOT, default_model_dir  # noqa: E402

SEED = 1234
MAX_TOKENS = 80       # whole chat (system + question + answer), so a step stays cheap
# LoRA only on the top layers: backward then stops at layer 22 instead of running through all
# 30, which with the answer-only lm_head below keeps a step cheap enough for 2 shared cores.
LAYERS = list(range(22, 30))
# Attention q/v alone moved the held-out NLL by ~0.01 nats in 30 steps; adding o_proj and the
# MLP's up/down projections (same layers, so the same backward cost) learns the voice.
TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
HELDOUT = 6           # pairs per corpus kept out of training for the quality test
THREADS = 2

ADAPTERS = {
    "kjv": {"rank": 16, "alpha": 32, "use_rslora": False, "use_dora": True,
            "targets": TARGETS, "lr": 2e-3, "steps": 30, "batch": 4,
            "style": "answers in the voice of the King James Bible"},
    "jargon": {"rank": 32, "alpha": 16, "use_rslora": True, "use_dora": False,
               "targets": TARGETS, "lr": 2e-3, "steps": 30, "batch": 4,
               "style": "answers like an entry of the hacker Jargon File"},
    "devil": {"rank": 8, "alpha": 16, "use_rslora": False, "use_dora": False,
              "targets": TARGETS, "lr": 2e-3, "steps": 30, "batch": 4,
              "style": "answers like Ambrose Bierce's cynical Devil's Dictionary"},
}


def chat_example(tokenizer, question, answer):
    """(input_ids, labels) with the loss on the answer and its end-of-turn token only."""
    prefix = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                           add_generation_prompt=True)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    room = MAX_TOKENS - len(prefix) - 1
    body = tokenizer.encode(answer)[:room] + [end]
    return prefix + body, [-100] * len(prefix) + body


def split(name, seed):
    pairs = demo_corpora.CORPORA[name][0](random.Random(seed))
    random.Random(seed).shuffle(pairs)
    return pairs[HELDOUT:], pairs[:HELDOUT]


def batches(examples, batch, steps, seed, pad_id):
    rng = random.Random(seed)
    order = []
    while len(order) < steps * batch:
        epoch = list(range(len(examples)))
        rng.shuffle(epoch)
        order += epoch
    for s in range(steps):
        chunk = [examples[i] for i in order[s * batch:(s + 1) * batch]]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (i, l) in enumerate(chunk):
            ids[row, :len(i)] = torch.tensor(i)
            labels[row, :len(l)] = torch.tensor(l)
            mask[row, :len(i)] = 1
        yield ids, labels, mask


def answer_loss(model, ids, mask, labels):
    """Next-token cross entropy on labelled positions, projecting only those through lm_head
    (a 49152-row matrix: a fifth of the model's FLOPs per position)."""
    inner = model.get_base_model()
    hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = inner.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def save_bf16(model, out_dir, name, spec, extra):
    from safetensors.torch import load_file, save_file

    model.save_pretrained(out_dir)
    # PEFT's generated model card is boilerplate; PROVENANCE.md says what this adapter is.
    card = os.path.join(out_dir, "README.md")
    if os.path.exists(card):
        os.remove(card)
    path = os.path.join(out_dir, "adapter_model.safetensors")
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})
    config_path = os.path.join(out_dir, "adapter_config.json")
    config = json.load(open(config_path))
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out_dir, "training_config.json"), "w") as f:
        json.dump({"adapter": name, **spec, **extra}, f, indent=2)
        f.write("\n")


def write_provenance(out_dir, name, spec, n_train, seed):
    _, package, _, source, licence = demo_corpora.CORPORA[name]
    version = demo_corpora.package_version(package)
    text = f"""# {name}: data provenance

- Style: {spec["style"]}.
- Debian package: `{package}` version `{version}` (Debian 12 "bookworm").
- Source file: {source}.
- Licence: {licence}.
- Extraction: `tools/demo_corpora.py` function `{name}()` turns the text into single-turn chats
  (a question naming a term, answered by the passage): a training pool of {n_train} pairs, of
  which {spec["steps"]} steps x batch {spec["batch"]} = {spec["steps"] * spec["batch"]} were drawn,
  and {HELDOUT} pairs held out in `heldout.jsonl` (never trained on).
- Training: `tools/train_demo_adapters.py --only {name}` (seed {seed}); exact settings in
  `training_config.json`.
"""
    if name == "kjv":
        text += "- The `bible` reader program comes from the `bible-kjv` package " \
                f"(version `{demo_corpora.package_version('bible-kjv')}`).\n"
    with open(os.path.join(out_dir, "PROVENANCE.md"), "w") as f:
        f.write(text)


def train(name, model_dir, out_root):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = ADAPTERS[name]
    seed = SEED + sorted(ADAPTERS).index(name)
    random.seed(seed)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_pairs, heldout = split(name, seed)
    examples = [chat_example(tokenizer, q, a) for q, a in train_pairs]

    base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                attn_implementation="eager")
    lora = LoraConfig(r=spec["rank"], lora_alpha=spec["alpha"], lora_dropout=0.0,
                      target_modules=spec["targets"], use_rslora=spec["use_rslora"],
                      use_dora=spec["use_dora"], layers_to_transform=LAYERS,
                      layers_pattern="layers", bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec["lr"], weight_decay=0.0)
    steps, warmup = spec["steps"], max(1, spec["steps"] // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / steps))))

    start, cpu_start, losses = time.time(), time.process_time(), []
    pad = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for step, (ids, labels, mask) in enumerate(batches(examples, spec["batch"], steps, seed, pad)):
        loss = answer_loss(model, ids, mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss))
        if step % 10 == 0 or step == steps - 1:
            print(f"{name}: step {step + 1}/{steps} loss {loss:.3f} "
                  f"({time.time() - start:.0f}s)", flush=True)
    seconds = time.time() - start
    cpu_seconds = time.process_time() - cpu_start

    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)
    tail = losses[-10:]
    save_bf16(model, out_dir, name, spec, {
        "seed": seed, "max_tokens": MAX_TOKENS, "layers_to_transform": LAYERS, "threads": THREADS, "optimizer": "AdamW",
        "schedule": "linear warmup 10% then cosine", "grad_clip": 1.0, "lora_dropout": 0.0,
        "loss": "assistant answer tokens only", "train_pairs": len(train_pairs),
        "heldout_pairs": HELDOUT, "saved_dtype": "bfloat16",
        "first_loss": round(losses[0], 4), "final_loss_mean_last10": round(sum(tail) / len(tail), 4),
        "train_wall_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1), "torch": torch.__version__,
        "peft": __import__("peft").__version__,
        "transformers": __import__("transformers").__version__})
    with open(os.path.join(out_dir, "heldout.jsonl"), "w") as f:
        for q, a in heldout:
            f.write(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n")
    write_provenance(out_dir, name, spec, len(train_pairs), seed)
    print(f"{name}: trained in {seconds:.0f}s wall, {cpu_seconds:.0f}s CPU, wrote {out_dir}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(ADAPTERS), action="append")
    parser.add_argument("--out", default=os.path.join(ROOT, "assets", "adapters"))
    parser.add_argument("--model", help="base model folder (default: the converted SmolLM2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    model_dir = args.model or default_model_dir()
    for name in args.only or sorted(ADAPTERS):
        train(name, model_dir, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
