"""Token-for-token parity of `loraserve tokenize` with Hugging Face `tokenizers` (the Rust
reference) on the >=3000-string corpus of tools/tokenizer_corpus.py, for the real llama2,
llama3 and qwen3 tokenizer.json files: encode with and without special tokens, and decode."""
import random

import pytest
from tokenizers import Tokenizer

from tokenizer_harness import PARITY_NAMES, load_corpus, run_cli, tokenizer_path

MAX_REPORTED = 8


def describe(mismatches, total, what):
    lines = [f"{len(mismatches)}/{total} {what} differ from the reference; first ones:"]
    for item in mismatches[:MAX_REPORTED]:
        lines.append("  " + " | ".join(repr(x) for x in item))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def corpus():
    texts = load_corpus()
    assert len(texts) >= 3000
    return texts


@pytest.mark.parametrize("name", PARITY_NAMES)
@pytest.mark.parametrize("add_special", [False, True])
def test_encode_matches_reference(name, add_special, corpus):
    path = tokenizer_path(name)
    reference = Tokenizer.from_file(str(path / "tokenizer.json"))
    expected = [e.ids for e in reference.encode_batch(corpus, add_special_tokens=add_special)]
    args = ["--tokenizer", str(path)] + (["--add-special-tokens"] if add_special else [])
    actual = run_cli(args, corpus)
    mismatches = [(text, exp, act) for text, exp, act in zip(corpus, expected, actual) if exp != act]
    assert not mismatches, describe(mismatches, len(corpus), f"{name} encodings")


def id_sequences(reference, corpus, seed):
    """Reference encodings of the corpus plus random id runs (which split UTF-8 sequences)."""
    sequences = [e.ids for e in reference.encode_batch(corpus, add_special_tokens=True)]
    rng = random.Random(seed)
    vocab = reference.get_vocab_size()
    for _ in range(500):
        sequences.append([rng.randrange(vocab) for _ in range(rng.randint(1, 12))])
    return sequences


@pytest.mark.parametrize("name", PARITY_NAMES)
@pytest.mark.parametrize("skip_special", [False, True])
def test_decode_matches_reference(name, skip_special, corpus):
    path = tokenizer_path(name)
    reference = Tokenizer.from_file(str(path / "tokenizer.json"))
    sequences = id_sequences(reference, corpus, seed=7)
    expected = reference.decode_batch(sequences, skip_special_tokens=skip_special)
    args = ["--tokenizer", str(path), "--decode"] + (["--skip-special-tokens"] if skip_special else [])
    actual = run_cli(args, sequences)
    mismatches = [(ids, exp, act) for ids, exp, act in zip(sequences, expected, actual) if exp != act]
    assert not mismatches, describe(mismatches, len(sequences), f"{name} decodes")
