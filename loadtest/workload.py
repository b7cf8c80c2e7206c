"""What a load test sends: the requests, decided from a seed before anything is sent.

A Workload says how one request is drawn: its target (the base model, one adapter chosen by
uniform or Zipf(s) popularity, or a weighted mix of two adapters), its prompt length and its
output length (each fixed or uniform over a range). Prompts are random token ids, so no
tokenizer is needed and every prompt has exactly the drawn length.

Open loop (plan_open_loop): arrival times are a Poisson process at the given rate, fixed up
front, so a slow server cannot slow the offered load down. Closed loop: requests are drawn in
order (Workload.request(i)) as users become free; the i-th request is the same whatever the
timing, so runs with the same seed send the same requests. A trace (read_trace) fixes arrival,
adapter and both lengths per request.

Everything here is pure: same arguments, same requests.
"""
import bisect
import csv
import itertools
import json
import random
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

BASE_LABEL = "<base>"
MIX_LABEL = "<mix>"


@dataclass(frozen=True)
class LengthSpec:
    """A token count: fixed ("32") or uniform over [low, high] ("uniform:8:64")."""
    low: int
    high: int

    @staticmethod
    def parse(text, name: str = "length") -> "LengthSpec":
        text = str(text).strip()
        try:
            if text.startswith("uniform:"):
                _, low, high = text.split(":")
                spec = LengthSpec(int(low), int(high))
            else:
                spec = LengthSpec(int(text), int(text))
        except ValueError:
            raise ValueError(f"{name}: '{text}' is neither N nor uniform:LOW:HIGH") from None
        if spec.low < 1 or spec.high < spec.low:
            raise ValueError(f"{name}: '{text}' needs 1 <= LOW <= HIGH")
        return spec

    def draw(self, rng: random.Random) -> int:
        return self.low if self.low == self.high else rng.randint(self.low, self.high)

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"uniform:{self.low}:{self.high}"


@dataclass(frozen=True)
class RequestSpec:
    index: int
    at: Optional[float]  # seconds after the start (open loop, trace); None in a closed loop
    adapter: Optional[str]  # one adapter; None = the base model or a mix
    mix: Tuple[Tuple[str, float], ...]  # ((id, weight), ...) for a weighted mix, else ()
    prompt_ids: Tuple[int, ...]
    max_tokens: int

    @property
    def label(self) -> str:
        if self.mix:
            return MIX_LABEL
        return self.adapter or BASE_LABEL


def zipf_probabilities(n: int, s: float) -> List[float]:
    """P(rank i) for i = 1..n, proportional to 1 / i**s (s = 0 is uniform)."""
    if n < 1:
        return []
    weights = [1.0 / (i ** s) for i in range(1, n + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def popularity(n: int, kind: str, zipf_s: float) -> List[float]:
    if kind == "uniform":
        return zipf_probabilities(n, 0.0)
    if kind == "zipf":
        return zipf_probabilities(n, zipf_s)
    raise ValueError(f"--popularity: '{kind}' is not uniform or zipf")


@dataclass(frozen=True)
class Workload:
    adapters: Tuple[str, ...]  # most popular first
    prompt_tokens: LengthSpec
    output_tokens: LengthSpec
    vocab_size: int
    popularity: str = "zipf"
    zipf_s: float = 1.0
    base_fraction: float = 0.0
    mix_fraction: float = 0.0  # share sent as a weighted mix of two distinct adapters
    avoid_ids: Tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.base_fraction <= 1.0 or not 0.0 <= self.mix_fraction <= 1.0 or \
                self.base_fraction + self.mix_fraction > 1.0:
            raise ValueError(f"--base-fraction {self.base_fraction} and --mix-fraction "
                             f"{self.mix_fraction} must lie in [0, 1] and sum to at most 1")
        if self.base_fraction < 1.0 and not self.adapters:
            raise ValueError("no adapters to send to: give --adapters, --adapter-count, "
                             "--create-adapters, or --base-fraction 1")
        if self.mix_fraction > 0 and len(self.adapters) < 2:
            raise ValueError("--mix-fraction needs at least two adapters")
        if self.vocab_size <= len(set(self.avoid_ids)):
            raise ValueError(f"the vocabulary ({self.vocab_size} ids) has no non-EOS ids")
        popularity(len(self.adapters), self.popularity, self.zipf_s)  # validates the kind

    def expected_shares(self) -> dict:
        """Share of requests each target gets in expectation: adapters most popular first, then
        the base model and the mixes (all pairs together)."""
        single = 1.0 - self.base_fraction - self.mix_fraction
        shares = {a: single * p for a, p in zip(
            self.adapters, popularity(len(self.adapters), self.popularity, self.zipf_s))}
        if self.base_fraction > 0:
            shares[BASE_LABEL] = self.base_fraction
        if self.mix_fraction > 0:
            shares[MIX_LABEL] = self.mix_fraction
        return shares

    def _tokens(self) -> List[int]:
        avoid = set(self.avoid_ids)
        return [t for t in range(self.vocab_size) if t not in avoid]

    def requests(self) -> Iterable[RequestSpec]:
        """The endless stream of requests, index 0, 1, ...; arrival times are not set."""
        tokens = self._tokens()
        cumulative = list(itertools.accumulate(
            popularity(len(self.adapters), self.popularity, self.zipf_s)))
        rng = random.Random(self.seed)

        def pick() -> str:
            i = bisect.bisect_left(cumulative, rng.random() * cumulative[-1])
            return self.adapters[min(i, len(self.adapters) - 1)]

        for index in itertools.count():
            u = rng.random()
            adapter, mix = None, ()
            if u < self.base_fraction:
                pass
            elif u < self.base_fraction + self.mix_fraction:
                first = pick()
                second = pick()
                while second == first:
                    second = pick()
                w = round(rng.uniform(0.25, 0.75), 3)
                mix = ((first, w), (second, round(1.0 - w, 3)))
            else:
                adapter = pick()
            prompt = tuple(rng.choice(tokens) for _ in range(self.prompt_tokens.draw(rng)))
            yield RequestSpec(index=index, at=None, adapter=adapter, mix=mix, prompt_ids=prompt,
                              max_tokens=self.output_tokens.draw(rng))


def poisson_times(rate: float, seed: int, duration: Optional[float] = None,
                  count: Optional[int] = None) -> List[float]:
    """Arrival times of a Poisson process at `rate` per second, until duration or count."""
    if rate <= 0:
        raise ValueError(f"--rate {rate} must be positive")
    if duration is None and count is None:
        raise ValueError("an open loop needs --duration or --count")
    rng = random.Random(seed ^ 0x5EED)
    times, t = [], 0.0
    while count is None or len(times) < count:
        t += rng.expovariate(rate)
        if duration is not None and t >= duration:
            break
        times.append(t)
    return times


def plan_open_loop(workload: Workload, rate: float, duration: Optional[float] = None,
                   count: Optional[int] = None) -> List[RequestSpec]:
    times = poisson_times(rate, workload.seed, duration, count)
    return [RequestSpec(index=r.index, at=t, adapter=r.adapter, mix=r.mix,
                        prompt_ids=r.prompt_ids, max_tokens=r.max_tokens)
            for t, r in zip(times, workload.requests())]


@dataclass(frozen=True)
class TraceRow:
    arrival: float  # seconds after the start
    adapter: Optional[str]  # "" or "<base>" in the file = the base model
    prompt_tokens: int
    output_tokens: int


def read_trace(path: str) -> List[TraceRow]:
    """A CSV (header: arrival,adapter,prompt_tokens,output_tokens) or JSONL of the same keys."""
    with open(path, newline="") as f:
        if path.endswith((".jsonl", ".ndjson")):
            rows = [json.loads(line) for line in f if line.strip()]
        else:
            rows = list(csv.DictReader(f))
    out = []
    for n, row in enumerate(rows, start=1):
        try:
            adapter = (row.get("adapter") or "").strip() or None
            out.append(TraceRow(arrival=float(row["arrival"]),
                                adapter=None if adapter == BASE_LABEL else adapter,
                                prompt_tokens=int(row["prompt_tokens"]),
                                output_tokens=int(row["output_tokens"])))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: row {n}: needs arrival, adapter, prompt_tokens, "
                             f"output_tokens ({error})") from None
        r = out[-1]
        if r.arrival < 0 or r.prompt_tokens < 1 or r.output_tokens < 1:
            raise ValueError(f"{path}: row {n}: arrival must be >= 0 and token counts >= 1")
    out.sort(key=lambda r: r.arrival)
    return out


def plan_from_trace(rows: Sequence[TraceRow], vocab_size: int, avoid_ids: Sequence[int] = (),
                    seed: int = 0, time_scale: float = 1.0) -> List[RequestSpec]:
    """The trace's requests with random prompts of the given lengths; time_scale < 1 replays
    it faster."""
    avoid = set(avoid_ids)
    tokens = [t for t in range(vocab_size) if t not in avoid]
    rng = random.Random(seed)
    return [RequestSpec(index=i, at=r.arrival * time_scale, adapter=r.adapter, mix=(),
                        prompt_ids=tuple(rng.choice(tokens) for _ in range(r.prompt_tokens)),
                        max_tokens=r.output_tokens) for i, r in enumerate(rows)]
