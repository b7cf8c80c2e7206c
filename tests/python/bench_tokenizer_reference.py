#!/usr/bin/env python3
"""Encode throughput of Hugging Face tokenizers (one thread) on the same ~1 MB of documents as
tests/bench/tokenizer_bench.cc, and, when the bench binary is given, ours in the same run.

    TOKENIZERS_PARALLELISM=false .venv/bin/python tests/python/bench_tokenizer_reference.py \\
        [--bench build/bench/tokenizer_bench]

Reports MB/s over UTF-8 bytes per second of process CPU time (Google Benchmark's default too,
so a busy machine does not skew the comparison), best of --repeat passes after one warm-up
pass (both implementations keep a per-word cache, so this is the steady state a server sees)."""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

from tokenizers import Tokenizer  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import tokenizer_corpus  # noqa: E402


def best_mbps(fn, total_bytes, repeat):
    fn()  # warm-up: fills the per-word cache
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return total_bytes / best / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizers", default=str(REPO.parent / "shared" / "tokenizers"))
    parser.add_argument("--bench", help="path of the tokenizer_bench binary to run alongside")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    path = pathlib.Path(args.tokenizers) / "llama3" / "tokenizer.json"
    if not path.is_file():
        sys.exit(f"missing {path}: pass --tokenizers DIR holding llama3/tokenizer.json")
    docs = tokenizer_corpus.bench_documents()
    total = sum(len(d.encode()) for d in docs)
    tok = Tokenizer.from_file(str(path))
    one_by_one = best_mbps(lambda: [tok.encode(d, add_special_tokens=False) for d in docs], total,
                           args.repeat)
    batch = best_mbps(lambda: tok.encode_batch(docs, add_special_tokens=False), total, args.repeat)
    print(f"documents: {len(docs)}, {total / 1e6:.2f} MB UTF-8")
    print(f"HF tokenizers encode (one at a time, 1 thread): {one_by_one:.2f} MB/s (CPU time)")
    print(f"HF tokenizers encode_batch (1 thread):          {batch:.2f} MB/s (CPU time)")

    if args.bench:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.writelines(json.dumps(d) + "\n" for d in docs)
        env = dict(os.environ, LORASERVE_BENCH_TEXT=f.name,
                   LORASERVE_TOKENIZERS=str(args.tokenizers))
        out = subprocess.run([args.bench, "--benchmark_format=json"], env=env, check=True,
                             capture_output=True, text=True).stdout
        os.unlink(f.name)
        for b in json.loads(out)["benchmarks"]:
            print(f"loraserve {b['name']}: {b['bytes_per_second'] / 1e6:.2f} MB/s "
                  "(CPU time)")


if __name__ == "__main__":
    main()
