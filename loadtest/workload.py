"""The request schedule of a load test, decided entirely up front from the seed.

Open loop: arrival times are a Poisson process (exponential gaps at the target rate), fixed
before the first request is sent, so a slow server cannot slow the offered load down. Each
arrival picks the base model with probability base_fraction, otherwise an adapter by Zipf
popularity (the i-th adapter of the list, from 1, has weight 1 / i**s). Prompts are random
token ids, so the test needs no tokenizer and every prompt has exactly prompt_tokens tokens.
"""
import bisect
import itertools
import random
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds after the start of the test
    adapter: Optional[str]  # None = the base model
    prompt_ids: tuple


def zipf_probabilities(n: int, s: float) -> list:
    """P(rank i) for i = 1..n, proportional to 1 / i**s (s = 0 is uniform)."""
    if n < 1:
        return []
    weights = [1.0 / (i ** s) for i in range(1, n + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def expected_shares(adapters: Sequence[str], zipf_s: float, base_fraction: float,
                    base_label: str) -> dict:
    """Share of requests each target gets in expectation, most popular adapter first."""
    shares = {a: (1.0 - base_fraction) * p
              for a, p in zip(adapters, zipf_probabilities(len(adapters), zipf_s))}
    if base_fraction > 0:
        shares[base_label] = base_fraction
    return shares


def plan_arrivals(*, rate: float, duration: float, adapters: Sequence[str], zipf_s: float,
                  base_fraction: float, prompt_tokens: int, vocab_size: int,
                  avoid_ids: Sequence[int] = (), seed: int = 0) -> list:
    """Every request of the test, in send order. Same arguments, same plan."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"--rate ({rate}) and --duration ({duration}) must be positive")
    if not 0.0 <= base_fraction <= 1.0:
        raise ValueError(f"--base-fraction {base_fraction} must lie in [0, 1]")
    if not adapters and base_fraction < 1.0:
        raise ValueError("no adapters to send to: give --adapters, --adapter-count with "
                         "--admin-token, or --base-fraction 1")
    avoid = set(avoid_ids)
    token_pool = [t for t in range(vocab_size) if t not in avoid]
    if prompt_tokens < 1 or not token_pool:
        raise ValueError(f"--prompt-tokens {prompt_tokens} must be >= 1 and the vocabulary "
                         f"({vocab_size} ids) must have non-EOS ids")
    cumulative = list(itertools.accumulate(zipf_probabilities(len(adapters), zipf_s)))
    rng = random.Random(seed)
    plan, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return plan
        adapter = None
        if rng.random() >= base_fraction:
            index = bisect.bisect_left(cumulative, rng.random() * cumulative[-1])
            adapter = adapters[min(index, len(adapters) - 1)]
        prompt = tuple(rng.choice(token_pool) for _ in range(prompt_tokens))
        plan.append(Arrival(at=t, adapter=adapter, prompt_ids=prompt))
