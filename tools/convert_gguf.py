#!/usr/bin/env python3
"""Converts a llama.cpp GGUF of a Llama-architecture model into a Hugging Face model folder.

Output: config.json (LlamaForCausalLM), model.safetensors (bf16, dequantized with the `gguf`
package), tokenizer.json (byte-level BPE rebuilt from the GGUF's tokenizer.ggml.* metadata),
tokenizer_config.json (with tokenizer.chat_template) and generation_config.json.

Why not transformers' GGUF loader (4.46): it dequantizes correctly, but its tokenizer converter
writes a Llama-style SentencePiece skeleton (byte fallback, "▁" decoder, <|im_start|> as BOS
post-processor) and drops the per-model pre-tokenizer; and it omits tie_word_embeddings. So the
tensors are read with `gguf` directly and the tokenizer is assembled with `tokenizers`.

llama.cpp's converter permutes the rows of attn_q/attn_k (interleaved rotary halves for its
RoPE); this script undoes that permutation so the weights match HF's rotate_half convention.
"""
import argparse
import json
import os
import sys

import numpy as np

# llama.cpp pre-tokenizer name -> tokenizers pre_tokenizer config. Only names whose regex is
# the GPT-2 one (optionally after splitting digits one by one) are supported; others fail loudly.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
               "use_regex": True}
PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "gpt-2": _BYTE_LEVEL,
    "default": _BYTE_LEVEL,
}
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def reverse_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp convert_hf_to_gguf.py LlamaModel.permute for q/k projection rows."""
    rows = weight.shape[0]
    return (weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def f32_decimal(x: float) -> float:
    """GGUF stores float32; write the shortest decimal that round-trips (1e-05, not 9.99e-06)."""
    return float(str(np.float32(x)))


def build_config(reader) -> dict:
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"convert_gguf: architecture '{arch}' is not supported (only llama)")
    p = "llama."
    hidden = int(field(reader, p + "embedding_length"))
    heads = int(field(reader, p + "attention.head_count"))
    names = {t.name for t in reader.tensors}
    vocab = int(field(reader, p + "vocab_size", len(field(reader, "tokenizer.ggml.tokens"))))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(field(reader, p + "feed_forward_length")),
        "num_hidden_layers": int(field(reader, p + "block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(field(reader, p + "attention.head_count_kv", heads)),
        "head_dim": int(field(reader, p + "rope.dimension_count", hidden // heads)),
        "hidden_act": "silu",
        "max_position_embeddings": int(field(reader, p + "context_length")),
        "rms_norm_eps": f32_decimal(field(reader, p + "attention.layer_norm_rms_epsilon")),
        "rope_theta": f32_decimal(field(reader, p + "rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(reader, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(field(reader, "tokenizer.ggml.padding_token_id",
                                  field(reader, "tokenizer.ggml.eos_token_id"))),
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3",
    }
    if field(reader, p + "rope.scaling.type") not in (None, "none"):
        raise SystemExit("convert_gguf: RoPE scaling in the GGUF is not supported")
    return config


def hf_name(gguf_name: str) -> str:
    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight":
             "model.norm.weight", "output.weight": "lm_head.weight"}
    if gguf_name in fixed:
        return fixed[gguf_name]
    parts = gguf_name.split(".")
    if parts[0] != "blk" or len(parts) != 4:
        raise SystemExit(f"convert_gguf: unexpected tensor '{gguf_name}'")
    layer, kind = parts[1], parts[2]
    sub = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
           "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
           "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
           "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    if kind not in sub:
        raise SystemExit(f"convert_gguf: unexpected tensor '{gguf_name}'")
    return f"model.layers.{layer}.{sub[kind]}.{parts[3]}"


def dequantized_tensors(reader, config: dict):
    """Yields (hf_name, float32 array in HF [out, in] layout) for every GGUF tensor."""
    from gguf import quants

    for t in reader.tensors:
        # GGUF lists dims innermost-first; dequantize returns the numpy [rows, cols] view.
        w = np.asarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])
        name = hf_name(t.name)
        if name.endswith("q_proj.weight"):
            w = reverse_permute(w, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = reverse_permute(w, config["num_key_value_heads"])
        yield name, w


def build_tokenizer(reader):
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    model = field(reader, "tokenizer.ggml.model")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if model != "gpt2":
        raise SystemExit(f"convert_gguf: tokenizer model '{model}' not supported (only gpt2 BPE)")
    if pre not in PRE_TOKENIZERS:
        raise SystemExit(f"convert_gguf: pre-tokenizer '{pre}' not supported "
                         f"(known: {', '.join(sorted(PRE_TOKENIZERS))})")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    unk_id = field(reader, "tokenizer.ggml.unknown_token_id")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=(
        tokens[unk_id] if unk_id is not None else None), fuse_unk=False, byte_fallback=False))
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    added = [AddedToken(tokens[i], special=(types[i] == TOKEN_TYPE_CONTROL), normalized=False)
             for i in range(len(tokens)) if types[i] in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)]
    tok.add_tokens(added)
    # The pre-tokenizer goes in as JSON: it is a literal copy of the table above.
    data = json.loads(tok.to_str())
    data["pre_tokenizer"] = PRE_TOKENIZERS[pre]
    return Tokenizer.from_str(json.dumps(data)), tokens, types


def tokenizer_config(reader, tokens, types) -> dict:
    bos = tokens[field(reader, "tokenizer.ggml.bos_token_id")]
    eos = tokens[field(reader, "tokenizer.ggml.eos_token_id")]
    unk_id = field(reader, "tokenizer.ggml.unknown_token_id")
    pad_id = field(reader, "tokenizer.ggml.padding_token_id")
    specials = {i: tokens[i] for i in range(len(tokens)) if types[i] == TOKEN_TYPE_CONTROL}
    return {
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(field(reader, "tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": bool(field(reader, "tokenizer.ggml.add_space_prefix", False)),
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": tokens[unk_id] if unk_id is not None else None,
        "pad_token": tokens[pad_id] if pad_id is not None else None,
        "additional_special_tokens": [t for t in (bos, eos) if t in specials.values()],
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
                                 for i, t in specials.items()},
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(field(reader, "llama.context_length")),
        "chat_template": field(reader, "tokenizer.chat_template"),
    }


def convert(gguf_path: str, out_dir: str) -> None:
    import torch
    from gguf import GGUFReader
    from safetensors.torch import save_file

    reader = GGUFReader(gguf_path)
    config = build_config(reader)
    if field(reader, "tokenizer.chat_template") is None:
        raise SystemExit("convert_gguf: the GGUF has no tokenizer.chat_template")
    os.makedirs(out_dir, exist_ok=True)
    tensors = {name: torch.from_numpy(np.array(w)).to(torch.bfloat16)
               for name, w in dequantized_tensors(reader, config)}
    expected = 2 + 9 * config["num_hidden_layers"] + (0 if config["tie_word_embeddings"] else 1)
    if len(tensors) != expected:
        raise SystemExit(f"convert_gguf: {len(tensors)} tensors, expected {expected}")
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})

    tok, tokens, types = build_tokenizer(reader)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    tok_config = tokenizer_config(reader, tokens, types)
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
                  "pad_token_id": config["pad_token_id"], "transformers_version": "4.46.3"}
    for name, data in (("config.json", config), ("tokenizer_config.json", tok_config),
                       ("special_tokens_map.json", {k: tok_config[k] for k in (
                           "bos_token", "eos_token", "unk_token", "pad_token",
                           "additional_special_tokens")}),
                       ("generation_config.json", generation)):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", required=True, help="input .gguf file")
    parser.add_argument("--out", required=True, help="output Hugging Face folder")
    args = parser.parse_args(argv)
    convert(args.gguf, args.out)
    print(f"convert_gguf: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
