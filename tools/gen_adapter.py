#!/usr/bin/env python3
"""Writes a PEFT LoRA adapter for a generated base model folder, deterministic from a seed.

The adapter is made by peft itself (get_peft_model + save_pretrained), so adapter_config.json
and the tensor names are exactly what users have. PEFT initialises lora_B to zero, which would
make every adapter a no-op; here A and B are re-drawn from a seeded normal distribution so the
adapter visibly changes the logits while staying numerically tame, and a DoRA magnitude is moved
away from the row norm it starts at so the DoRA rescaling is exercised too.

  python tools/gen_adapter.py --model MODEL_DIR --out ADAPTER_DIR --seed 1 --rank 8 \
      --target-modules q_proj,v_proj [--rslora] [--dora] [--rank-pattern '{"v_proj": 4}']
"""
import argparse
import json
import math
import os
import sys

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
REGEX_CHARS = set("*\\()[]|^$+?{}")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_targets(text: str):
    """A comma list of module names, "all-linear", or a regex (PEFT full-matches a string)."""
    if text == "all-linear":
        # What PEFT expands it to for a Llama-family model; a list also allows layer subsets.
        return list(ALL_LINEAR)
    if any(c in REGEX_CHARS for c in text):
        return text
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_layers(text: str):
    if not text:
        return None
    return [int(t) for t in text.split(",")]


def randomize(peft_model, seed: int, a_std: float, b_std: float, delta_std: float,
              dora_spread: float) -> int:
    """Re-draws every lora_A/lora_B (and DoRA magnitude) in module order; returns the count.

    With b_std = 0, B's std is chosen so each element of the delta s * B @ A has std delta_std,
    whatever the rank, alpha or rsLoRA: large ranks and alphas stay numerically sane.
    """
    from peft.tuners.lora import LoraLayer

    gen = torch.Generator().manual_seed(seed)
    count = 0
    for _, module in sorted(peft_model.named_modules(), key=lambda kv: kv[0]):
        if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
            continue
        a = module.lora_A["default"].weight
        b = module.lora_B["default"].weight
        rank = a.shape[0]
        scaling = module.scaling["default"]
        std_a = a_std if a_std > 0 else 1.0 / math.sqrt(a.shape[1])
        std_b = b_std if b_std > 0 else delta_std / (abs(scaling) * math.sqrt(rank) * std_a)
        with torch.no_grad():
            a.copy_(torch.randn(a.shape, generator=gen) * std_a)
            b.copy_(torch.randn(b.shape, generator=gen) * std_b)
            if module.use_dora.get("default", False):
                # PEFT's initial magnitude is ||W + s B A|| per output row (the identity rescale);
                # recompute it for the new A, B and scale each row by a random factor near 1.
                weight = module.get_base_layer().weight.float()
                norm = torch.linalg.norm(weight + scaling * (b.float() @ a.float()), dim=1)
                factor = 1.0 + dora_spread * (2.0 * torch.rand(norm.shape, generator=gen) - 1.0)
                module.lora_magnitude_vector["default"].weight.copy_(norm * factor)
        count += 1
    return count


def convert_dtype(path: str, dtype: torch.dtype) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k).to(dtype).contiguous() for k in f.keys()}
    save_file(tensors, path, metadata=metadata)


def make_config(args):
    from peft import LoraConfig

    alpha = args.alpha if args.alpha > 0 else 2 * args.rank
    return LoraConfig(
        r=args.rank,
        lora_alpha=int(alpha) if float(alpha).is_integer() else alpha,
        target_modules=parse_targets(args.target_modules),
        use_rslora=args.rslora,
        use_dora=args.dora,
        rank_pattern=json.loads(args.rank_pattern),
        alpha_pattern=json.loads(args.alpha_pattern),
        layers_to_transform=parse_layers(args.layers_to_transform),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="base model folder (tools/gen_model.py)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=0, help="lora_alpha; 0 = 2 * rank")
    p.add_argument("--target-modules", default="q_proj,v_proj",
                   help='comma list, "all-linear", or a regex full-matched against module paths')
    p.add_argument("--rslora", action="store_true", help="scaling alpha / sqrt(r)")
    p.add_argument("--dora", action="store_true")
    p.add_argument("--rank-pattern", default="{}", help='JSON, e.g. {"down_proj": 4}')
    p.add_argument("--alpha-pattern", default="{}", help='JSON, e.g. {"layers.0.self_attn.q_proj": 32}')
    p.add_argument("--layers-to-transform", default="", help="comma list of layer indices")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                   help="dtype of adapter_model.safetensors")
    p.add_argument("--a-std", type=float, default=0, help="std of lora_A; 0 = 1/sqrt(in)")
    p.add_argument("--b-std", type=float, default=0, help="std of lora_B; 0 = from --delta-std")
    p.add_argument("--delta-std", type=float, default=0.02,
                   help="std of each element of s * B @ A when --b-std is 0")
    p.add_argument("--dora-spread", type=float, default=0.2,
                   help="DoRA magnitude = row norm * U(1 - spread, 1 + spread)")
    args = p.parse_args(argv)

    import transformers
    from peft import get_peft_model

    torch.manual_seed(args.seed)
    base = transformers.AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    try:
        model = get_peft_model(base, make_config(args))
    except ValueError as e:  # PEFT's own checks: bad target_modules, layers with a regex, ...
        print(f"gen_adapter: {e}", file=sys.stderr)
        return 2
    count = randomize(model, args.seed, args.a_std, args.b_std, args.delta_std,
                      args.dora_spread)
    if count == 0:
        print("gen_adapter: no module matched --target-modules", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    # PEFT writes target_modules from a set, whose order changes with the interpreter's hash
    # seed; sort it so the same flags give the same bytes.
    config_path = os.path.join(args.out, "adapter_config.json")
    with open(config_path) as f:
        saved = json.load(f)
    if isinstance(saved.get("target_modules"), list):
        saved["target_modules"] = sorted(saved["target_modules"])
    with open(config_path, "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)
        f.write("\n")
    # The model card embeds version strings; the adapter is config + weights only.
    readme = os.path.join(args.out, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    weights = os.path.join(args.out, "adapter_model.safetensors")
    if args.dtype != "fp32":
        convert_dtype(weights, DTYPES[args.dtype])
    print(f"gen_adapter: {count} LoRA modules -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
