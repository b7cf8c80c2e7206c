#!/usr/bin/env python3
"""Decode throughput of transformers + PEFT's mixed-batch LoRA forward, the peer of
tests/gpu/cuda_decode_bench.cc on the same machine and the same generated model folder.

One static batch of --requests rows (--prompt-tokens random ids each, no padding) runs through
greedy `generate()` for exactly --new-tokens tokens (min_new_tokens = max_new_tokens, so EOS never
ends a row early). Cases, rounds interleaved like ours:
  base   the PeftModel under `disable_adapter()` (the LoRA wrappers are skipped)
  1      one adapter, `set_adapter("a0")`
  mixed  --adapters distinct adapters, row i on adapter i mod N, through
         `generate(..., adapter_names=[...])` (PEFT's mixed-batch forward)
The adapters are random rank-16 LoRA (alpha 32) on q,k,v,o,gate,up,down of every layer, built in
memory with peft; B is random (PEFT would zero it), so no adapter is a no-op.

Two rates per case: e2e = rows * new tokens / generate() seconds (prefill included), and decode =
rows * (new tokens - 1) / (seconds of the full generate - seconds of a 1-token generate of the
same batch): the prefill and first token taken out, which is what cuda_decode_bench's window
measures. bf16 on cuda, fp32 on cpu (--dtype overrides); adapters in the model's dtype unless
--adapter-dtype fp32 (PEFT's own default for a bf16 model upcasts them to fp32).

Runs wherever torch, transformers and peft import: on the GPU machine with its python3, and on a
CPU with a tiny model (tools/gen_model.py --layers 2 --hidden 64) for a quick check.
Prints one JSON object (also written to --json).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def shim_broken_fsdp():
    """Debian's torch 1.13 under Python 3.11 (this project's .venv) fails to import
    torch.distributed.fsdp (a dataclass ValueError), which transformers 4.x's generate() probes;
    no model here is FSDP-managed, so the probe may answer False. A no-op where fsdp imports."""
    try:
        import torch.distributed.fsdp  # noqa: F401
    except Exception:  # the import itself is what is broken
        import transformers.generation.utils as generation_utils

        if hasattr(generation_utils, "is_fsdp_managed_module"):
            generation_utils.is_fsdp_managed_module = lambda module: False


def load_model(path: str, dtype: torch.dtype, device: str):
    import transformers
    from transformers import AutoModelForCausalLM

    # transformers 5 renamed torch_dtype to dtype; 4.x ignores an unknown dtype= silently.
    major = int(transformers.__version__.split(".")[0])
    kw = {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}
    model = AutoModelForCausalLM.from_pretrained(path, **kw)
    return model.to(device=device, dtype=dtype).eval()


def add_adapters(base, count: int, rank: int, adapter_dtype: torch.dtype, seed: int):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, lora_dropout=0.0,
                        bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, config, adapter_name="a0")
    for i in range(1, count):
        model.add_adapter(f"a{i}", config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                fan_in = p.shape[1]
                bound = 1.0 / math.sqrt(fan_in) if ".lora_A." in name else 0.01
                values = (torch.rand(p.shape, generator=gen) * 2 - 1) * bound
                p.data = values.to(device=p.device, dtype=adapter_dtype)
    return model.eval()


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def timed_generate(model, ids, new_tokens: int, kw: dict, device: str, pad_id: int,
                   max_seconds: float):
    sync(device)
    start = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=pad_id, max_time=max_seconds, **kw)
    sync(device)
    return time.perf_counter() - start, out[:, ids.shape[1]:].cpu()


def run_case(model, case: str, ids, args, pad_id: int) -> dict:
    kw = {}
    n = ids.shape[0]
    if case == "mixed":
        kw["adapter_names"] = [f"a{i % args.adapters}" for i in range(n)]
    if case == "1":
        model.set_adapter("a0")

    def go(tokens):
        if case == "base":
            with model.disable_adapter():
                return timed_generate(model, ids, tokens, kw, args.device, pad_id, args.max_seconds)
        return timed_generate(model, ids, tokens, kw, args.device, pad_id, args.max_seconds)

    first_s, _ = go(1)
    full_s, tokens = go(args.new_tokens)
    generated = tokens.shape[1]
    decode_s = full_s - first_s
    return {
        "tokens": tokens,
        "e2e_tokens_per_s": n * generated / full_s,
        "decode_tokens_per_s": n * (generated - 1) / decode_s if decode_s > 0 else 0.0,
        "seconds": full_s,
        "prefill_and_first_token_seconds": first_s,
        "generated_per_row": generated,
        "truncated": generated < args.new_tokens,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="HF model folder (tools/gen_model.py)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cuda or cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="auto: bf16 on cuda, fp32 on cpu")
    p.add_argument("--adapter-dtype", default="model", choices=["model", "fp32"])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--adapters", type=int, default=64, help="distinct adapters of the mixed case")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", default="base,1,mixed")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="generate()'s max_time per call; a cut-short run is marked truncated")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if args.new_tokens < 2:
        p.error("--new-tokens must be >= 2 (the decode rate needs a step after the first token)")
    cases = [c for c in args.cases.split(",") if c]
    if not set(cases) <= {"base", "1", "mixed"}:
        p.error(f"--cases: {args.cases!r}; choose from base,1,mixed")

    if "mixed" in cases and int(torch.__version__.split(".")[0]) < 2:
        p.error(f"the mixed case needs torch >= 2 (PEFT's adapter_names registers "
                f"forward pre-hooks with_kwargs); this torch is {torch.__version__}: "
                f"run --cases base,1 here, or use the GPU machine's python3")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    names = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    dtype = names.get(args.dtype) or (torch.bfloat16 if args.device.startswith("cuda")
                                      else torch.float32)
    adapter_dtype = dtype if args.adapter_dtype == "model" else torch.float32

    import peft
    import transformers

    shim_broken_fsdp()
    t0 = time.perf_counter()
    base = load_model(args.model, dtype, args.device)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = add_adapters(base, max(args.adapters, 1), args.rank, adapter_dtype, args.seed)
    adapters_s = time.perf_counter() - t0
    cfg = base.config
    pad_id = getattr(cfg, "pad_token_id", None)
    pad_id = 0 if pad_id is None else pad_id  # gen_model.py writes none; no row is padded
    gen = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(4, cfg.vocab_size, (args.requests, args.prompt_tokens),
                        generator=gen).to(args.device)
    print(f"peft_decode_bench: {args.device} {dtype}, model loaded in {load_s:.1f} s, "
          f"{args.adapters} adapters built in {adapters_s:.1f} s", file=sys.stderr, flush=True)

    small = argparse.Namespace(**{**vars(args), "new_tokens": 2})
    for case in cases:  # warm-up: kernels, allocator, cuBLAS handles
        run_case(model, case, ids, small, pad_id)

    per_round = {c: [] for c in cases}
    for r in range(args.rounds):
        for i in range(len(cases)):
            case = cases[(i + r) % len(cases)]
            res = run_case(model, case, ids, args, pad_id)
            per_round[case].append(res)
            print(f"round {r} {case:6s} {res['decode_tokens_per_s']:10.1f} tok/s decode, "
                  f"{res['e2e_tokens_per_s']:10.1f} e2e{' TRUNCATED' if res['truncated'] else ''}",
                  file=sys.stderr, flush=True)

    def median(key, case):
        return statistics.median(x[key] for x in per_round[case])

    last_tokens = {c: per_round[c][-1]["tokens"] for c in cases}
    for c in cases:
        for x in per_round[c]:
            del x["tokens"]
    summary = {}
    for case in cases:
        row = {
            "decode_tokens_per_s": median("decode_tokens_per_s", case),
            "e2e_tokens_per_s": median("e2e_tokens_per_s", case),
            "truncated": any(x["truncated"] for x in per_round[case]),
            "per_round_decode_tokens_per_s": [x["decode_tokens_per_s"] for x in per_round[case]],
        }
        if "base" in cases and case != "base":
            # Rows whose greedy tokens differ from base's: 0 would mean the adapters never ran.
            tokens, base_tokens = last_tokens[case], last_tokens["base"]
            n = min(tokens.shape[1], base_tokens.shape[1])
            row["rows_differing_from_base"] = int(
                (tokens[:, :n] != base_tokens[:, :n]).any(dim=1).sum())
        if "base" in cases:
            ratios = [x["decode_tokens_per_s"] / b["decode_tokens_per_s"]
                      for x, b in zip(per_round[case], per_round["base"])
                      if b["decode_tokens_per_s"] > 0]
            row["ratio_to_base"] = statistics.median(ratios) if ratios else 0.0
        summary[case] = row
    result = {
        "peer": "transformers + peft, generate(adapter_names=...) mixed batch",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "device": args.device + (f" ({torch.cuda.get_device_name()})"
                                 if args.device.startswith("cuda") else ""),
        "dtype": str(dtype).replace("torch.", ""),
        "adapter_dtype": str(adapter_dtype).replace("torch.", ""),
        "model": args.model,
        "layers": cfg.num_hidden_layers,
        "hidden": cfg.hidden_size,
        "requests": args.requests,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "adapters": args.adapters,
        "rank": args.rank,
        "rounds": args.rounds,
        "cases": summary,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
