"""Shared helpers for the tokenizer pytest files: where the real tokenizers and the loraserve
binary are, and how to run `loraserve tokenize` on a batch of JSON lines."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
NAMES = ["llama2", "llama3", "qwen3"]


def tokenizers_dir():
    path = pathlib.Path(os.environ.get("LORASERVE_TOKENIZERS", REPO.parent / "shared" / "tokenizers"))
    missing = [n for n in NAMES if not (path / n / "tokenizer.json").is_file()]
    if missing:
        pytest.fail(
            f"tokenizer test data missing: {path}/{{{','.join(missing)}}}/tokenizer.json not found. "
            "Set LORASERVE_TOKENIZERS to a folder holding llama2/, llama3/ and qwen3/ "
            "(each with tokenizer.json and tokenizer_config.json).")
    return path


# Real tokenizers checked for parity: the three shared test files, plus the tokenizer.json of
# the embedded default model (SmolLM2), which tools/convert_gguf.py builds from the GGUF.
PARITY_NAMES = NAMES + ["smollm2"]


def tokenizer_path(name):
    if name == "smollm2":
        sys.path.insert(0, str(REPO / "tools"))
        from default_model import default_model_dir  # noqa: E402
        return pathlib.Path(default_model_dir())
    return tokenizers_dir() / name


def loraserve_bin():
    path = pathlib.Path(os.environ.get("LORASERVE_BIN", REPO / "build" / "loraserve"))
    if not path.is_file():
        pytest.fail(f"loraserve binary not found at {path}: build it "
                    "(cmake --build --preset default) or set LORASERVE_BIN")
    return path


def run_cli(args, inputs):
    """Feeds `inputs` (JSON-serialisable) one per line; returns the parsed output lines."""
    stdin = "".join(json.dumps(x) + "\n" for x in inputs)
    proc = subprocess.run([str(loraserve_bin()), "tokenize", *args], input=stdin.encode(),
                          capture_output=True, timeout=600)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
    assert proc.returncode == 0, f"loraserve tokenize {args} exited with {proc.returncode}"
    lines = proc.stdout.decode().split("\n")[:-1]
    assert len(lines) == len(inputs), f"expected {len(inputs)} output lines, got {len(lines)}"
    return [json.loads(line) for line in lines]


def load_corpus():
    sys.path.insert(0, str(REPO / "tools"))
    import tokenizer_corpus  # noqa: E402
    return tokenizer_corpus.generate()
