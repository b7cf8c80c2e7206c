#!/usr/bin/env python3
"""Answers one chat question with the base model, each demo adapter and a weighted blend.

Runs `loraserve generate` greedily (the chat template is applied here with the model's
tokenizer, so it works with builds that predate `generate --chat`) and prints Markdown, the
form docs/demo_adapters.md shows.

  python tools/demo_answers.py "What is a computer?" [--blend jargon@0.5,devil@0.5]
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from default_model import ROOT, default_model_dir  # noqa: E402

ADAPTER_ROOT = os.path.join(ROOT, "assets", "adapters")


def answer(binary, model_dir, prompt_ids, adapters, max_tokens, tokenizer):
    args = [binary, "generate", "--model", model_dir, "--prompt-ids",
            ",".join(map(str, prompt_ids)), "--max-tokens", str(max_tokens), "--print-ids"]
    for name, weight in adapters:
        args += ["--adapter", f"{os.path.join(ADAPTER_ROOT, name)}@{weight}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"loraserve generate failed:\n{proc.stderr}")
    ids = [int(t) for t in proc.stdout.strip().splitlines()[-1].split(",") if t]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def main(argv=None) -> int:
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("question")
    parser.add_argument("--blend", default="jargon@0.5,devil@0.5",
                        help="comma list of NAME@WEIGHT for the blended answer")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--binary", default=os.environ.get(
        "LORASERVE_BIN", os.path.join(ROOT, "build", "loraserve")))
    args = parser.parse_args(argv)
    model_dir = default_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": args.question}],
                                           add_generation_prompt=True)
    names = sorted(d for d in os.listdir(ADAPTER_ROOT)
                   if os.path.exists(os.path.join(ADAPTER_ROOT, d, "adapter_config.json")))
    blend = [(n, float(w)) for n, w in (item.split("@") for item in args.blend.split(","))]
    runs = [("base", [])] + [(n, [(n, 1.0)]) for n in names]
    runs.append((" + ".join(f"{w:g}·{n}" for n, w in blend), blend))
    print(f"**Prompt:** {args.question}\n")
    print("| adapter | answer (greedy, first {} tokens) |".format(args.max_tokens))
    print("|---|---|")
    for label, adapters in runs:
        text = answer(args.binary, model_dir, prompt, adapters, args.max_tokens, tokenizer)
        print(f"| {label} | {text.replace('|', '/').replace(chr(10), ' ')} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
