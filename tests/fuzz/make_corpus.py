#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (corpus/<target>/), dictionaries (dict/<target>.dict) and
fixed data (data/tokenizers/): small real files, so a clean clone fuzzes without ../shared.

Run from the repository root with the project venv: .venv/bin/python tests/fuzz/make_corpus.py
It reads the real tokenizers in ../shared/tokenizers (llama2, llama3, qwen3) and the SmolLM2
tokenizer of the default model (.cache/models/smollm2-135m-instruct), cuts their vocabularies
down (see data/README.md) and rewrites everything it owns; the files are committed.
"""
import json
import pathlib
import shutil
import struct

import numpy as np
from safetensors.numpy import save

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUZZ = ROOT / "tests" / "fuzz"
SHARED = ROOT.parent / "shared" / "tokenizers"
TOKENIZERS = {
    "llama2": SHARED / "llama2",
    "llama3": SHARED / "llama3",
    "qwen3": SHARED / "qwen3",
    "smollm2": ROOT / ".cache" / "models" / "smollm2-135m-instruct",
}
# Keys of tokenizer_config.json that the loader reads (runtime/tokenizer/tokenizer.cc).
CONFIG_KEYS = ["bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens",
               "chat_template"]

TEXTS = [
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog 1234567890.",
    "  leading and trailing spaces  \n\n\ttabs\r\nCRLF",
    "Ünïcödé café naïve 日本語のテキスト 中文 한국어 😀👍🏽 العربية",
    "def f(x):\n    return x ** 2  # squares\n",
    "<s>[INST] special tokens inline </s><|begin_of_text|><|im_start|>user<|im_end|>",
    "e\u0301 decomposed, \ufb01 ligature, \u212b angstrom",
    "don't it's we're they've I'm you'll he'd",
    "",
]


def write(path: pathlib.Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def reset(path: pathlib.Path) -> pathlib.Path:
    """Empties `path`, except regress-* files: inputs that once crashed, added by hand."""
    path.mkdir(parents=True, exist_ok=True)
    for item in path.iterdir():
        if item.name.startswith("regress-"):
            continue
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    return path


def trim_tokenizer(tokenizer: dict, keep: int) -> dict:
    """The same tokenizer with the model vocabulary cut to ids below `keep` (every byte and
    byte-fallback token lies there) and only the merges among kept tokens; added tokens stay."""
    out = json.loads(json.dumps(tokenizer))
    model = out["model"]
    model["vocab"] = {t: i for t, i in model["vocab"].items() if i < keep}
    merges = []
    for merge in model["merges"]:
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        if a in model["vocab"] and b in model["vocab"] and a + b in model["vocab"]:
            merges.append(merge)
    model["merges"] = merges
    return out


def load_tokenizers():
    out = {}
    for name, folder in TOKENIZERS.items():
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config = {k: config[k] for k in CONFIG_KEYS if k in config}
        if name == "llama2":  # its tokenizer_config.json has none; transformers' legacy one
            config["chat_template"] = (ROOT / "tests/data/tokenizer/llama2_chat_template.jinja"
                                       ).read_text()
        out[name] = (tokenizer, config)
    return out


def tokenizer_data(tokenizers) -> None:
    for name, (tokenizer, config) in tokenizers.items():
        folder = reset(FUZZ / "data" / "tokenizers" / name)
        write(folder / "tokenizer.json", json.dumps(trim_tokenizer(tokenizer, 8000),
                                                    ensure_ascii=False))
        write(folder / "tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=1))


def tokenizer_corpora(tokenizers) -> None:
    out = reset(FUZZ / "corpus" / "tokenizer_json")
    for name, (tokenizer, config) in tokenizers.items():
        small = json.dumps(trim_tokenizer(tokenizer, 400), ensure_ascii=False).encode()
        cfg = json.dumps(config, ensure_ascii=False).encode()
        write(out / f"{name}", small + b"\0" + cfg + b"\0" + TEXTS[3].encode())
        write(out / f"{name}-noconfig", small + b"\0\0" + TEXTS[5].encode())
    out = reset(FUZZ / "corpus" / "tokenizer_encode")
    for selector, name in enumerate(TOKENIZERS):
        for i, text in enumerate(TEXTS):
            flags = 0x10 if i % 2 else 0
            write(out / f"{name}-{i}", bytes([selector | flags]) + text.encode())
    write(out / "invalid-utf8", bytes([1]) + b"ok \xff\xfe bad \xc3 cut \xe6\x97")


def chat_corpus(tokenizers) -> None:
    out = reset(FUZZ / "corpus" / "chat_template")
    conversations = [
        [(0, "You are a helpful assistant."), (1, "Hi!"), (2, "Hello. How can I help?"),
         (1, "Tell me a joke.")],
        [(1, "Just one user turn with {{ braces }} and {% tags %}")],
        [(1, "a"), (3, "tool output"), (4, "developer note"), (2, "")],
        [(5, "custom-role\nwith content")],
    ]

    def encode(messages):
        return b"\x1e".join(bytes([role]) + text.encode() for role, text in messages)

    for mode, name in enumerate(TOKENIZERS, start=1):
        template = tokenizers[name][1]["chat_template"].encode()
        for i, messages in enumerate(conversations):
            write(out / f"{name}-{i}", bytes([mode | (0x80 if i % 2 else 0)]) + encode(messages))
            write(out / f"{name}-as-source-{i}",
                  bytes([0x80 if i % 2 else 0]) + template + b"\0" + encode(messages))
    # Constructs the real templates use less often.
    for i, source in enumerate([
        "{% for m in messages %}{{ loop.index }}:{{ m.role | upper }}={{ m.content | trim }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}",
        "{% set ns = namespace(x=0) %}{% for m in messages %}{% set ns.x = ns.x + m.content|length"
        " %}{% endfor %}{{ ns.x }} {{ messages | length }} {{ bos_token ~ eos_token }}",
        "{{ messages[0]['content'][1:5] }}{{ messages | map(attribute='role') | join(',') }}"
        "{{ (messages | last).content.split(' ') | tojson }}",
        "{% if messages[0].role == 'system' %}{{ raise_exception('no system') }}{% endif %}",
        "{%- macro m(x) -%}[{{ x }}]{%- endmacro -%}{{ m(1) }}",
        "{{ 'a' * 3 }}{{ 7 // 2 }}{{ 7 % 3 }}{{ -1 if true else 2 }}{{ [1,2,3][::-1] }}"
        "{{ {'k': 'v'}.items() | list }}{{ 'x' in 'xyz' }}{{ none is none }}",
    ]):
        write(out / f"constructs-{i}", b"\0" + source.encode() + b"\0" + encode(conversations[0]))


def safetensors_corpus() -> None:
    out = reset(FUZZ / "corpus" / "safetensors")
    rng = np.random.default_rng(0)
    write(out / "f32", save({"w": rng.standard_normal((2, 3)).astype(np.float32)}))
    write(out / "mixed", save({
        "a": rng.standard_normal((4,)).astype(np.float16),
        "b": np.arange(6, dtype=np.int64).reshape(2, 3),
        "c": np.array([True, False]),
        "d": np.zeros((0, 5), dtype=np.float32),
        "e": np.array(3.0, dtype=np.float32),
        "f": np.arange(4, dtype=np.uint8),
    }, metadata={"format": "pt", "note": "seed"}))
    # bf16 has no numpy dtype: write the header by hand.
    header = json.dumps({"x": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
                         "__metadata__": {"format": "pt"}}).encode()
    write(out / "bf16", struct.pack("<Q", len(header)) + header + bytes(range(8)))
    write(out / "empty-header", struct.pack("<Q", 2) + b"{}")
    write(out / "adapter", tiny_adapter())


def tiny_adapter(rank: int = 2) -> bytes:
    """A PEFT adapter for the upload fuzzer's base (hidden 16, intermediate 32, 2 layers, 4 heads,
    2 KV heads): q_proj and v_proj of both layers."""
    rng = np.random.default_rng(1)
    tensors = {}
    for layer in range(2):
        for module, out_dim in (("q_proj", 16), ("v_proj", 8)):
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.standard_normal((rank, 16)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.standard_normal((out_dim, rank)).astype(
                np.float16)
    return save(tensors, metadata={"format": "pt"})


TINY_ADAPTER_CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                       "target_modules": ["q_proj", "v_proj"], "bias": "none",
                       "base_model_name_or_path": "smollm2", "task_type": "CAUSAL_LM"}


def peft_corpus() -> None:
    out = reset(FUZZ / "corpus" / "peft_config")
    for adapter in sorted((ROOT / "assets" / "adapters").iterdir()):
        shutil.copy(adapter / "adapter_config.json", out / f"demo-{adapter.name}")
    variants = {
        "patterns": {"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                     "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                     "rank_pattern": {"q_proj": 4, "layers.1.self_attn.v_proj": 2},
                     "alpha_pattern": {"o_proj": 32.5, "model.layers.0.self_attn.k_proj": 3}},
        "regex": {"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                  "target_modules": r".*\.(self_attn|mlp)\.(q|v|up)_proj", "use_rslora": True},
        "layers": {"peft_type": "LORA", "r": 16, "lora_alpha": 16, "target_modules": "all-linear",
                   "layers_to_transform": [0, 7], "layers_pattern": ["layers", "h"],
                   "use_dora": True},
        "layer-int": {"peft_type": "LORA", "target_modules": ["down_proj"],
                      "layers_to_transform": 1, "layers_pattern": "layers",
                      "modules_to_save": None, "fan_in_fan_out": False,
                      "init_lora_weights": "gaussian", "layer_replication": None},
        "refused": {"peft_type": "LORA", "target_modules": ["q_proj"],
                    "init_lora_weights": "pissa", "megatron_config": {"x": 1}},
        "tiny": TINY_ADAPTER_CONFIG,
    }
    for name, config in variants.items():
        write(out / name, json.dumps(config, indent=2))


def model_config_corpus() -> None:
    out = reset(FUZZ / "corpus" / "model_config")
    import transformers  # slow to import; only here

    base = dict(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    configs = {
        "llama": transformers.LlamaConfig(**base, tie_word_embeddings=True),
        "llama3-rope": transformers.LlamaConfig(**base, attention_bias=True, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}, eos_token_id=[1, 2]),
        "llama-linear": transformers.LlamaConfig(**base, head_dim=32,
                                                 rope_scaling={"type": "linear", "factor": 2.0}),
        "mistral": transformers.MistralConfig(**base, sliding_window=None),
        "qwen2": transformers.Qwen2Config(**base, rope_theta=1e6),
    }
    for name, config in configs.items():
        config.architectures = [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                                 "qwen2": "Qwen2ForCausalLM"}[config.model_type]]
        write(out / name, config.to_json_string())
    smollm2 = TOKENIZERS["smollm2"] / "config.json"
    shutil.copy(smollm2, out / "smollm2-135m")


def upload_record_header(adapter_id: str, total: int, sha: str = "") -> bytes:
    return (bytes([0, 0]) + struct.pack("<I", total) + bytes([len(adapter_id)]) +
            adapter_id.encode() + bytes([len(sha)]) + sha.encode())


def upload_record_chunk(name_index: int, data: bytes, offset=None, name: bytes = b"") -> bytes:
    out = bytes([1, name_index])
    if name_index == 3:
        out += bytes([len(name)]) + name
    out += bytes([0]) if offset is None else bytes([1]) + struct.pack("<I", offset)
    return out + struct.pack("<H", len(data)) + data


def upload_corpus() -> None:
    out = reset(FUZZ / "corpus" / "upload_stream")
    config = json.dumps(TINY_ADAPTER_CONFIG).encode()
    weights = tiny_adapter()
    half = len(weights) // 2
    whole = (upload_record_header("tiny-adapter", len(config) + len(weights)) +
             upload_record_chunk(0, config) + upload_record_chunk(1, weights[:half]) +
             upload_record_chunk(1, weights[half:]) + bytes([3]))
    write(out / "complete", whole)
    write(out / "with-readme", upload_record_header("a.b-c_1", 0) + upload_record_chunk(0, config)
          + upload_record_chunk(2, b"# readme\n") + upload_record_chunk(1, weights) + bytes([3]))
    write(out / "out-of-order", upload_record_header("x", 0) + upload_record_chunk(1, b"abc", 5))
    write(out / "no-header", upload_record_chunk(0, config))
    write(out / "twice", upload_record_header("x", 0) + upload_record_header("y", 0))
    write(out / "empty-message", upload_record_header("x", 0) + bytes([2]))
    write(out / "odd-name", upload_record_header("x", 0) +
          upload_record_chunk(3, b"data", name=b"../../etc/passwd"))
    write(out / "too-large", upload_record_header("x", 1 << 21))


def openai_corpus() -> None:
    out = reset(FUZZ / "corpus" / "openai_request")
    bodies = {
        "completion": {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 16},
        "completion-full": {"model": "kjv", "prompt": ["a", "b"], "n": 2, "temperature": 0.7,
                            "top_p": 0.9, "top_k": 40, "seed": 7, "stop": ["\n", "END"],
                            "logprobs": 3, "stream": True, "stream_options": {"include_usage": True},
                            "min_tokens": 2, "ignore_eos": False, "best_of": 2, "echo": False,
                            "presence_penalty": 0, "frequency_penalty": 0.0, "user": "u"},
        "completion-ids": {"model": "smollm2", "prompt": [1, 2, 3], "max_completion_tokens": 4},
        "completion-id-lists": {"model": "smollm2", "prompt": [[1, 2], [3]], "max_tokens": 2.0},
        "chat": {"model": "devil", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
        "chat-full": {"model": "jargon", "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "part"}]},
            {"role": "user", "content": "q"}, {"role": "assistant", "content": None},
            {"role": "tool", "content": "t"}],
            "logprobs": True, "top_logprobs": 5, "response_format": {"type": "text"},
            "tools": [], "tool_choice": "none", "stop": "x", "max_tokens": None},
        "merged": {"model": "smollm2", "prompt": "x", "merged_adapters": {
            "ids": ["kjv", "devil"], "weights": [0.5, 0.5], "merge_strategy": "linear",
            "density": 0.5, "majority_sign_method": "total"}},
        "refused": {"model": "m", "prompt": "x", "logit_bias": {"1": 2}, "suffix": "s",
                    "chat_template": "{{ x }}"},
    }
    for name, body in bodies.items():
        write(out / name, json.dumps(body))


def lora_corpus() -> None:
    out = reset(FUZZ / "corpus" / "lora_request")
    bodies = {
        "load": {"lora_name": "kjv", "lora_path": "/adapters/kjv"},
        "load-inplace": {"lora_name": "kjv", "lora_path": "/adapters/kjv", "load_inplace": True},
        "load-bad": {"lora_name": 3, "lora_path": None},
        "unload": {"lora_name": "kjv"},
        "resolver-config": TINY_ADAPTER_CONFIG,
        "resolver-other-base": dict(TINY_ADAPTER_CONFIG, base_model_name_or_path="llama"),
    }
    for name, body in bodies.items():
        write(out / name, json.dumps(body))


# Dictionary words are the raw bytes to insert; dict_entry escapes them for libFuzzer.
JSON_TOKENS = ["{", "}", "[", "]", ":", ",", '"', '\\"', "\\\\", "\\u0000", "\\ud800", "true",
               "false", "null", "-0", "1e999", "-1", "0.5", "18446744073709551615",
               "9223372036854775808", "4294967296", "2147483648"]


def dict_entry(word: str) -> str:
    out = ""
    for byte in word.encode():
        char = chr(byte)
        out += char if 0x20 <= byte < 0x7f and char not in '"\\' else f"\\x{byte:02x}"
    return f'"{out}"'


def dicts() -> None:
    out = reset(FUZZ / "dict")
    keys = {
        "safetensors": ["__metadata__", "dtype", "shape", "data_offsets", "F32", "F16", "BF16",
                        "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL",
                        "F8_E4M3", "F8_E5M2"],
        "model_config": ["architectures", "model_type", "llama", "mistral", "qwen2", "vocab_size",
                         "hidden_size", "intermediate_size", "num_hidden_layers",
                         "num_attention_heads", "num_key_value_heads", "head_dim",
                         "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
                         "rope_type", "type", "factor", "low_freq_factor", "high_freq_factor",
                         "original_max_position_embeddings", "linear", "llama3", "default",
                         "tie_word_embeddings", "attention_bias", "mlp_bias", "hidden_act",
                         "silu", "bos_token_id", "eos_token_id"],
        "peft_config": ["peft_type", "LORA", "r", "lora_alpha", "target_modules", "all-linear",
                        "use_rslora", "use_dora", "rank_pattern", "alpha_pattern", "bias", "none",
                        "all", "lora_only", "layers_to_transform", "layers_pattern", "layers",
                        "fan_in_fan_out", "modules_to_save", "init_lora_weights", "pissa",
                        "olora", "loftq", "layer_replication", "megatron_config", "task_type",
                        "base_model_name_or_path", "q_proj", "k_proj", "v_proj", "o_proj",
                        "gate_proj", "up_proj", "down_proj", "self_attn", "mlp"],
        "tokenizer_json": ["model", "BPE", "vocab", "merges", "added_tokens", "normalizer",
                           "pre_tokenizer", "post_processor", "decoder", "type", "Sequence",
                           "normalizers", "pretokenizers", "decoders", "NFC", "NFKC", "NFD",
                           "NFKD", "Lowercase", "Prepend", "Replace", "Strip", "ByteLevel",
                           "Split", "Metaspace", "Digits", "Whitespace", "WhitespaceSplit",
                           "Punctuation", "ByteFallback", "Fuse", "TemplateProcessing",
                           "SpecialToken", "pattern", "Regex", "String", "content", "behavior",
                           "Isolated", "Removed", "MergedWithPrevious", "MergedWithNext",
                           "Contiguous", "invert", "add_prefix_space", "use_regex",
                           "trim_offsets", "byte_fallback", "ignore_merges", "fuse_unk",
                           "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "id",
                           "special", "single_word", "lstrip", "rstrip", "normalized", "single",
                           "pair", "special_tokens", "ids", "tokens", "replacement",
                           "prepend_scheme", "first", "always", "never", "split",
                           "individual_digits", "bos_token", "eos_token", "chat_template"],
        "lora_request": ["lora_name", "lora_path", "load_inplace", "peft_type", "LORA",
                         "base_model_name_or_path", "smollm2"],
        "openai_request": ["model", "prompt", "messages", "role", "content", "system", "user",
                           "assistant", "tool", "developer", "type", "text", "n", "best_of",
                           "stream", "stream_options", "include_usage", "echo", "logprobs",
                           "top_logprobs", "max_tokens", "max_completion_tokens", "temperature",
                           "top_p", "top_k", "seed", "stop", "ignore_eos", "min_tokens",
                           "merged_adapters", "ids", "weights", "merge_strategy", "linear", "ties",
                           "dare_linear", "density", "majority_sign_method", "total",
                           "presence_penalty", "frequency_penalty", "repetition_penalty",
                           "logit_bias", "suffix", "tools", "functions", "tool_choice",
                           "response_format", "chat_template"],
    }
    # Regex pieces as they appear inside JSON strings (backslashes escaped once for JSON).
    regex = [".*", "\\\\.", "(", ")", "|", "\\\\d+", "[0-9]", "{2,}", "(?:", "(?=", "(?!", "*?",
             "^", "$", "\\\\p{L}", "\\\\s+", "(?i:", "\\\\", "\u2581"]
    extra = {"peft_config": regex, "tokenizer_json": regex}
    for target, words in keys.items():
        lines = JSON_TOKENS + [f'"{w}"' for w in words] + extra.get(target, [])
        write(out / f"{target}.dict", "\n".join(dict_entry(w) for w in lines) + "\n")
    jinja = ["{{", "}}", "{%", "%}", "{%-", "-%}", "{#", "#}", "for", "in", "endfor", "if", "elif",
             "else", "endif", "set", "endset", "macro", "endmacro", "call", "not", "and", "or",
             "is", "defined", "none", "true", "false", "loop.index", "loop.first", "loop.last",
             "namespace(", "range(", "messages", "message['role']", "message['content']",
             "add_generation_prompt", "bos_token", "eos_token", "raise_exception(", "|length",
             "|trim", "|tojson", "|join(", "|upper", "|lower", "|first", "|last", "|list",
             "|map(attribute=", "|selectattr(", "|reverse", "|default(", ".strip()",
             ".split(", ".startswith(", ".endswith(", ".items()", ".get(", "[::-1]", "~", "//",
             "**", "==", "!=", "break", "continue", "strftime_now(", "\x1e"]
    write(out / "chat_template.dict", "\n".join(dict_entry(w) for w in jinja) + "\n")


def main() -> None:
    tokenizers = load_tokenizers()
    tokenizer_data(tokenizers)
    tokenizer_corpora(tokenizers)
    chat_corpus(tokenizers)
    safetensors_corpus()
    peft_corpus()
    model_config_corpus()
    upload_corpus()
    openai_corpus()
    lora_corpus()
    dicts()


if __name__ == "__main__":
    main()
