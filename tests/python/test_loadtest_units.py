"""loadtest/ without a server: the arrival and popularity generators (statistical checks with
fixed seeds), lengths and traces, the open- and closed-loop drivers against a fake target
whose timing the test controls, and the percentile, TPOT, goodput and window math."""
import asyncio
import json
import math
import os
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "loadtest"))
import adapters_setup  # noqa: E402
from drivers import run_closed_loop, run_open_loop  # noqa: E402
from report import (distribution, measurement_window, meets_slo, percentile,  # noqa: E402
                    summarize, token_times, tpot, write_csv)
from workload import (BASE_LABEL, MIX_LABEL, LengthSpec, Workload, plan_from_trace,  # noqa: E402
                      plan_open_loop, poisson_times, read_trace, zipf_probabilities)


def workload(**kw):
    args = dict(adapters=("a", "b", "c", "d"), prompt_tokens=LengthSpec(4, 4),
                output_tokens=LengthSpec(8, 8), vocab_size=100, seed=3)
    args.update(kw)
    return Workload(**args)


def take(w, n):
    out = []
    for r in w.requests():
        out.append(r)
        if len(out) == n:
            return out


# ---------------------------------------------------------------- generators

def test_poisson_arrivals_have_the_rate_and_exponential_gaps():
    times = poisson_times(200.0, seed=11, duration=50.0)
    # Poisson(10000): sd 100, so 5 sd is 500.
    assert abs(len(times) - 10000) < 500
    gaps = np.diff([0.0] + times)
    assert abs(gaps.mean() - 1 / 200) < 0.05 / 200
    # An exponential has coefficient of variation 1 and P(gap > mean) = 1/e.
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05
    assert abs((gaps > gaps.mean()).mean() - math.exp(-1)) < 0.02
    assert times == sorted(times) and times[-1] < 50.0
    assert poisson_times(200.0, seed=11, duration=50.0) == times
    assert poisson_times(200.0, seed=12, duration=50.0) != times
    assert len(poisson_times(5.0, seed=1, count=37)) == 37


def test_zipf_probabilities():
    p = zipf_probabilities(4, 1.0)
    assert sum(p) == pytest.approx(1.0)
    assert p[0] / p[1] == pytest.approx(2.0) and p[0] / p[3] == pytest.approx(4.0)
    assert zipf_probabilities(3, 0.0) == pytest.approx([1 / 3] * 3)
    assert zipf_probabilities(0, 1.0) == []


@pytest.mark.parametrize("kind,s", [("zipf", 1.0), ("zipf", 1.5), ("uniform", 1.0)])
def test_popularity_matches_its_distribution_chi_square(kind, s):
    n, draws = 20, 40000
    adapters = tuple(f"x{i}" for i in range(n))
    w = workload(adapters=adapters, popularity=kind, zipf_s=s, base_fraction=0.1, seed=5)
    counts = {}
    for r in take(w, draws):
        counts[r.label] = counts.get(r.label, 0) + 1
    expected = w.expected_shares()
    assert sum(expected.values()) == pytest.approx(1.0)
    chi2 = sum((counts.get(k, 0) - draws * p) ** 2 / (draws * p) for k, p in expected.items())
    # 20 degrees of freedom: the 99.9% quantile of chi-square(20) is 45.3.
    assert chi2 < 45.3, (chi2, counts)
    if kind == "zipf":
        assert counts["x0"] > counts["x1"] > counts["x5"]


def test_mixes_are_two_distinct_adapters_with_weights_summing_to_one():
    w = workload(mix_fraction=0.5, base_fraction=0.2)
    requests = take(w, 4000)
    mixes = [r for r in requests if r.mix]
    assert abs(len(mixes) / len(requests) - 0.5) < 0.03
    assert abs(sum(r.label == BASE_LABEL for r in requests) / len(requests) - 0.2) < 0.03
    for r in mixes:
        (a, wa), (b, wb) = r.mix
        assert a != b and r.adapter is None and r.label == MIX_LABEL
        assert 0.25 <= wa <= 0.75 and wa + wb == pytest.approx(1.0)
    assert w.expected_shares()[MIX_LABEL] == 0.5


def test_requests_are_deterministic_and_prompts_avoid_eos():
    w = workload(prompt_tokens=LengthSpec(2, 9), output_tokens=LengthSpec(1, 5),
                 avoid_ids=(0, 1, 2), seed=9)
    a, b = take(w, 500), take(w, 500)
    assert a == b
    assert take(workload(seed=10), 50) != take(workload(seed=3), 50)
    lengths = {len(r.prompt_ids) for r in a}
    assert lengths == set(range(2, 10))
    assert {r.max_tokens for r in a} == set(range(1, 6))
    assert all(min(r.prompt_ids) >= 3 and max(r.prompt_ids) < 100 for r in a)
    assert [r.index for r in a] == list(range(500))


def test_open_loop_plan_pairs_times_with_the_same_requests():
    w = workload()
    plan = plan_open_loop(w, rate=50.0, duration=10.0)
    closed = take(w, len(plan))
    assert [(p.adapter, p.prompt_ids) for p in plan] == [(c.adapter, c.prompt_ids)
                                                         for c in closed]
    assert all(p.at is not None for p in plan) and plan == plan_open_loop(w, 50.0, 10.0)
    assert len(plan_open_loop(w, rate=50.0, count=25)) == 25


def test_length_spec_parsing():
    assert LengthSpec.parse("32") == LengthSpec(32, 32)
    assert LengthSpec.parse("uniform:8:64") == LengthSpec(8, 64)
    assert str(LengthSpec(8, 64)) == "uniform:8:64" and str(LengthSpec(5, 5)) == "5"
    for bad in ("0", "x", "uniform:9:3", "uniform:1", "-4"):
        with pytest.raises(ValueError, match="--max-tokens"):
            LengthSpec.parse(bad, "--max-tokens")


def test_workload_refuses_what_cannot_run():
    with pytest.raises(ValueError, match="no adapters"):
        workload(adapters=())
    with pytest.raises(ValueError, match="sum to at most 1"):
        workload(base_fraction=0.7, mix_fraction=0.5)
    with pytest.raises(ValueError, match="at least two adapters"):
        workload(adapters=("a",), mix_fraction=0.1)
    with pytest.raises(ValueError, match="--popularity"):
        workload(popularity="pareto")
    assert workload(adapters=(), base_fraction=1.0).expected_shares() == {BASE_LABEL: 1.0}


def test_trace_files_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("arrival,adapter,prompt_tokens,output_tokens\n"
                        "0.5,a,4,8\n0.1,,3,2\n0.3,<base>,5,1\n")
    rows = read_trace(str(csv_path))
    assert [r.arrival for r in rows] == [0.1, 0.3, 0.5]
    assert [r.adapter for r in rows] == [None, None, "a"]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps({"arrival": t, "adapter": "b", "prompt_tokens": 2,
                                           "output_tokens": 3}) for t in (0, 1)) + "\n")
    assert [r.adapter for r in read_trace(str(jsonl))] == ["b", "b"]
    plan = plan_from_trace(rows, vocab_size=50, avoid_ids=[0], seed=1, time_scale=0.5)
    assert [p.at for p in plan] == [0.05, 0.15, 0.25]
    assert [len(p.prompt_ids) for p in plan] == [3, 5, 4]
    assert [p.max_tokens for p in plan] == [2, 1, 8]
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival,adapter,prompt_tokens\n0,a,3\n")
    with pytest.raises(ValueError, match="row 1"):
        read_trace(str(bad))
    bad.write_text("arrival,adapter,prompt_tokens,output_tokens\n0,a,0,3\n")
    with pytest.raises(ValueError, match="token counts"):
        read_trace(str(bad))


# ---------------------------------------------------------------- drivers

class FakeTarget:
    """Answers each request after `service_s`, one token per `token_s`; records concurrency."""

    def __init__(self, service_s=0.02, tokens=4, fail_every=0):
        self.service_s, self.tokens, self.fail_every = service_s, tokens, fail_every
        self.active = 0
        self.max_active = 0
        self.sent = []
        self.cancelled = 0

    async def send(self, spec, record, sent):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.sent.append((time.perf_counter(), spec.index))
        try:
            await asyncio.sleep(self.service_s)
            if self.fail_every and spec.index % self.fail_every == self.fail_every - 1:
                record.status, record.error = "RESOURCE_EXHAUSTED", "fake"
                return
            record.client_ttft_s = time.perf_counter() - sent
            record.completion_tokens = self.tokens
            record.itl_s = [0.001] * (self.tokens - 1)
            record.client_total_s = time.perf_counter() - sent
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


def test_closed_loop_never_exceeds_its_users_and_sends_exactly_count():
    target = FakeTarget(service_s=0.01)
    result = asyncio.run(run_closed_loop(target, workload().requests(), concurrency=5,
                                         count=60))
    assert target.max_active == 5
    assert len(result.records) == 60 and all(r.status == "OK" for r in result.records)
    assert [r.index for r in sorted(result.records, key=lambda r: r.index)] == list(range(60))
    assert not result.interrupted


def test_closed_loop_think_time_spaces_a_users_requests():
    target = FakeTarget(service_s=0.005)
    asyncio.run(run_closed_loop(target, workload().requests(), concurrency=1, count=6,
                                think_time=0.05))
    starts = [t for t, _ in target.sent]
    gaps = np.diff(starts)
    assert len(starts) == 6 and gaps.min() >= 0.05


def test_closed_loop_duration_and_warmup():
    target = FakeTarget(service_s=0.02)
    t0 = time.perf_counter()
    result = asyncio.run(run_closed_loop(target, workload().requests(), concurrency=2,
                                         duration=0.3, warmup_s=0.1))
    wall = time.perf_counter() - t0
    assert 0.4 <= wall < 1.5
    warm = [r for r in result.records if r.warmup]
    measured = [r for r in result.records if not r.warmup]
    assert warm and measured
    assert max(r.sent_at_s for r in warm) < 0.1 <= min(r.sent_at_s for r in measured)
    assert max(r.sent_at_s for r in measured) < 0.4


def test_closed_loop_stop_interrupts_and_cancels_in_flight():
    target = FakeTarget(service_s=5.0)

    async def scenario():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        return await run_closed_loop(target, workload().requests(), concurrency=3, count=100,
                                     stop=stop)

    t0 = time.perf_counter()
    result = asyncio.run(scenario())
    assert time.perf_counter() - t0 < 2.0
    assert result.interrupted and len(result.records) == 3
    assert all(r.status == "CANCELLED" for r in result.records) and target.cancelled == 3


def test_closed_loop_drain_timeout_bounds_a_hung_server():
    target = FakeTarget(service_s=30.0)
    t0 = time.perf_counter()
    result = asyncio.run(run_closed_loop(target, workload().requests(), concurrency=2,
                                         duration=0.1, drain_timeout=0.3))
    assert time.perf_counter() - t0 < 2.0
    assert [r.status for r in result.records] == ["CANCELLED", "CANCELLED"]


def test_open_loop_follows_the_plan_and_drops_at_the_cap():
    plan = plan_open_loop(workload(), rate=200.0, duration=0.5)
    target = FakeTarget(service_s=0.3)
    result = asyncio.run(run_open_loop(target, plan, duration=0.5, max_in_flight=10,
                                       drain_timeout=5.0))
    assert target.max_active <= 10
    assert len(result.records) + result.dropped == len(plan) and result.dropped > 0
    # Sends follow the schedule: none early, and (on a quiet loop) none much late.
    for record, spec in zip(result.records, [p for p in plan if p.index in
                                             {r.index for r in result.records}]):
        assert record.sent_at_s >= spec.at - 1e-3


def test_open_loop_errors_are_recorded_not_raised():
    plan = plan_open_loop(workload(), rate=100.0, count=20)
    result = asyncio.run(run_open_loop(FakeTarget(service_s=0.001, fail_every=4), plan,
                                       duration=None, max_in_flight=100, drain_timeout=5.0))
    statuses = [r.status for r in sorted(result.records, key=lambda r: r.index)]
    assert statuses.count("RESOURCE_EXHAUSTED") == 5 and statuses.count("OK") == 15


# ---------------------------------------------------------------- math

def test_percentile_matches_numpy():
    values = np.random.default_rng(0).exponential(size=101).tolist()
    for q in (0, 1, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert percentile([], 50) is None
    d = distribution([3.0, None, 1.0, 2.0])
    assert d["count"] == 3 and d["p50"] == 2.0 and d["max"] == 3.0 and d["mean"] == 2.0


def record(index, ttft, total, tokens=5, status="OK", sent=0.0, warmup=False, label="a"):
    return {"index": index, "label": label, "sent_at_s": sent, "warmup": warmup,
            "status": status, "client_ttft_s": ttft, "client_total_s": total,
            "completion_tokens": tokens, "itl_s": [(total - ttft) / max(tokens - 1, 1)] *
            (tokens - 1) if status == "OK" else [], "prompt_tokens": 4, "error": "",
            "finish_reason": "length", "server_queued_s": None, "server_ttft_s": None,
            "server_total_s": None}


def test_tpot_and_slo():
    r = record(0, ttft=0.1, total=0.5, tokens=5)
    assert tpot(r) == pytest.approx(0.1)
    assert tpot(record(0, 0.1, 0.1, tokens=1)) is None
    assert meets_slo(r, ttft_slo_s=0.1, tpot_slo_s=0.1)
    assert not meets_slo(r, ttft_slo_s=0.099)
    assert not meets_slo(r, tpot_slo_s=0.099)
    assert meets_slo(r) and not meets_slo(record(0, 0.1, 0.5, status="CANCELLED"))


def test_summary_goodput_window_and_warmup():
    records = [record(0, 0.05, 0.2, sent=0.0, warmup=True),  # ends before the window
               record(1, 0.05, 0.45, sent=1.0),  # meets: TPOT 0.1
               record(2, 0.50, 0.90, sent=1.5),  # TTFT too slow
               record(3, 0.05, 1.05, sent=2.0),  # TPOT 0.25 too slow
               record(4, None, None, status="RESOURCE_EXHAUSTED", sent=2.5, label="b")]
    window = measurement_window(records, 1.0)
    assert window == pytest.approx((1.0, 3.05))  # until record 3 ended
    s = summarize(records, window, {"a": 0.5, "b": 0.5}, ttft_slo_s=0.2, tpot_slo_s=0.12)
    assert s["requests"] == 4 and s["ok"] == 3 and s["warmup_requests"] == 1
    assert s["errors_by_status"] == {"RESOURCE_EXHAUSTED": 1}
    assert s["elapsed_s"] == pytest.approx(2.05)
    assert s["throughput_requests_per_s"] == pytest.approx(3 / 2.05)
    assert s["throughput_generated_tokens_per_s"] == pytest.approx(15 / 2.05)
    assert s["goodput_requests_per_s"] == pytest.approx(1 / 2.05)
    assert s["slo_attainment"] == pytest.approx(0.25)
    assert s["client_ttft_s"]["count"] == 3 and s["client_ttft_s"]["max"] == 0.5
    assert s["per_target"]["a"]["requests"] == 3 and s["per_target"]["b"]["ok"] == 0
    assert s["per_target"]["a"]["share"] == 0.75


def test_throughput_counts_what_happens_inside_the_window():
    # Closed-loop waves: a warm-up request still streaming when the window opens, and one whose
    # tokens run past a duration bound. Tokens are counted where they arrive.
    warm = record(0, 0.5, 2.5, tokens=5, sent=0.0, warmup=True)  # tokens at 0.5 1 1.5 2 2.5
    late = record(1, 0.5, 2.5, tokens=5, sent=2.0)  # tokens at 2.5 3 3.5 4 4.5
    window = measurement_window([warm, late], 1.2, end_s=4.0)
    assert window == (1.2, 4.0)
    s = summarize([warm, late], window)
    # In [1.2, 4.0]: 1.5, 2, 2.5 of the warm-up request and 2.5, 3, 3.5, 4 of the late one.
    assert s["generated_tokens"] == 7
    assert s["throughput_generated_tokens_per_s"] == pytest.approx(7 / 2.8)
    # The warm-up request completed inside the window, the late one after it.
    assert s["completed_in_window"] == 1 and s["requests"] == 1


def test_token_times_and_csv(tmp_path):
    records = [record(0, 0.1, 0.5, tokens=5, sent=1.0), record(1, None, None, status="X")]
    times = token_times(records)
    assert times == pytest.approx([1.1, 1.2, 1.3, 1.4, 1.5])
    path = tmp_path / "r.csv"
    write_csv(records, str(path))
    lines = path.read_text().splitlines()
    assert lines[0].startswith("index,label,warmup,sent_at_s,status")
    assert len(lines) == 3 and ",X," in lines[2]


def test_generated_adapter_files_are_peft_shaped(tmp_path):
    from safetensors.numpy import load_file

    config = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 172, "num_hidden_layers": 2}
    files = adapters_setup.make_adapter(config, seed=1, rank=4, targets=("q_proj", "v_proj"))
    assert files == adapters_setup.make_adapter(config, seed=1, rank=4,
                                                targets=("q_proj", "v_proj"))
    adapters_setup.write_adapter(str(tmp_path), files)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 2 * 2
    assert tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"].shape == \
        (32, 4)
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == \
        (4, 64)
    cfg = json.loads(files["adapter_config.json"])
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["target_modules"] == [
        "q_proj", "v_proj"]
    with pytest.raises(ValueError, match="--create-targets"):
        adapters_setup.make_adapter(config, 1, targets=("qkv",))
