#!/usr/bin/env python3
"""Writes a Llama-family model folder in the real Hugging Face format, deterministic from a seed.

The weights come from transformers' own model classes (LlamaForCausalLM, MistralForCausalLM,
Qwen2ForCausalLM) so config.json and the safetensors tensor names are exactly what users have.
Norm weights and biases are perturbed away from their 1/0 initialisation so that a forward pass
that ignored them would not match the reference by accident.
"""
import argparse
import json
import os
import random
import shutil
import sys

import torch
import transformers

ARCHS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, "LlamaForCausalLM"),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, "MistralForCausalLM"),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, "Qwen2ForCausalLM"),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there one all we their been has would when will more no "
    "if out so said what up its about into than them can only other new some could time these "
    "two may then do first any my now such like our over man me even most made after also did "
    "many before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year "
    "off come since against go came right used take three adapter model token server batch merge "
    "lora rank weight serve request stream kernel cache page memory layer prompt answer question"
).split()


def training_text(seed: int, n_lines: int = 4000) -> list:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        n = rng.randint(4, 16)
        sentence = " ".join(rng.choice(WORDS) for _ in range(n))
        if rng.random() < 0.3:
            sentence += f" {rng.randint(0, 99999)}"
        if rng.random() < 0.2:
            sentence = sentence.capitalize() + rng.choice([".", "!", "?", ",", ";"])
        lines.append(sentence)
    lines.append("Ünïcödé café naïve 日本語 中文 😀 \t tabs\n\nnewlines")
    return lines


def build_tokenizer(vocab_size: int, seed: int):
    """A small byte-level BPE (GPT-2 style) trained on generated text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(seed), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))],
    )
    return tok


CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def write_tokenizer(out: str, args) -> int:
    """Writes tokenizer.json + tokenizer_config.json; returns the tokenizer's vocabulary size."""
    if args.tokenizer:
        src = args.tokenizer
        if os.path.isdir(src):
            for name in ("tokenizer.json", "tokenizer_config.json"):
                if os.path.exists(os.path.join(src, name)):
                    shutil.copy(os.path.join(src, name), os.path.join(out, name))
        else:
            shutil.copy(src, os.path.join(out, "tokenizer.json"))
        from tokenizers import Tokenizer

        return Tokenizer.from_file(os.path.join(out, "tokenizer.json")).get_vocab_size()
    tok = build_tokenizer(args.vocab, args.seed)
    tok.save(os.path.join(out, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|end_of_text|>",
        "model_max_length": args.max_positions,
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return tok.get_vocab_size()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--arch", choices=sorted(ARCHS), default="llama")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--intermediate", type=int, default=172)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=0, help="0 = hidden / heads")
    p.add_argument("--max-positions", type=int, default=2048)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--rope-scaling", choices=["none", "llama3", "linear"], default="none")
    p.add_argument("--tie-embeddings", action="store_true")
    p.add_argument("--attention-bias", action="store_true", help="llama only: bias on q/k/v/o")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--max-shard-size", default="", help='e.g. "200KB": shard + index.json')
    p.add_argument("--init-std", type=float, default=0.08)
    p.add_argument("--tokenizer", default="", help="copy a real tokenizer.json (file or folder)")
    args = p.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    tokenizer_vocab = write_tokenizer(args.out, args)
    vocab = max(args.vocab, tokenizer_vocab)

    config_cls, model_cls, arch_name = ARCHS[args.arch]
    kwargs = dict(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_positions,
        rope_theta=args.rope_theta,
        tie_word_embeddings=args.tie_embeddings,
        initializer_range=args.init_std,
        bos_token_id=0,
        eos_token_id=3,
        torch_dtype={"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[args.dtype],
    )
    if args.head_dim:
        kwargs["head_dim"] = args.head_dim
    if args.arch == "llama":
        kwargs["attention_bias"] = args.attention_bias
    if args.arch == "mistral":
        kwargs["sliding_window"] = None
    if args.rope_scaling == "llama3":
        kwargs["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": max(16, args.max_positions // 8),
        }
    elif args.rope_scaling == "linear":
        kwargs["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    config = config_cls(**kwargs)
    config.architectures = [arch_name]

    torch.manual_seed(args.seed)
    model = model_cls(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            elif name.endswith(".bias"):
                param.copy_(0.05 * torch.randn_like(param))
    model = model.to(DTYPES[args.dtype])
    save_kwargs = {"safe_serialization": True}
    if args.max_shard_size:
        save_kwargs["max_shard_size"] = args.max_shard_size
    model.save_pretrained(args.out, **save_kwargs)
    model.generation_config.save_pretrained(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
