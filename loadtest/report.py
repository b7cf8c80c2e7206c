"""Turns the records of one run into its summary (JSON), its per-request CSV and its text table.

Pure functions over RequestRecord-shaped dicts (targets.RequestRecord via dataclasses.asdict);
nothing here touches the network. Throughput is what happened inside the measurement window;
latencies are those of the requests sent after the warm-up (see summarize).
"""
import csv
import math
from collections import Counter

from workload import BASE_LABEL

QUANTILES = (50, 90, 99)
CSV_FIELDS = ("index", "label", "warmup", "sent_at_s", "status", "prompt_tokens",
              "completion_tokens", "finish_reason", "client_ttft_s", "client_tpot_s",
              "client_total_s", "server_queued_s", "server_ttft_s", "server_total_s", "error")


def percentile(values, q: float):
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    data = sorted(values)
    if not data:
        return None
    position = (len(data) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return data[low] + (data[high] - data[low]) * (position - low)


def distribution(values) -> dict:
    values = [v for v in values if v is not None]
    out = {f"p{q}": percentile(values, q) for q in QUANTILES}
    out["mean"] = sum(values) / len(values) if values else None
    out["max"] = max(values) if values else None
    out["count"] = len(values)
    return out


def tpot(r: dict):
    """Mean time per output token after the first, of one request (vLLM's TPOT)."""
    if r.get("client_total_s") is None or r.get("client_ttft_s") is None or \
            r.get("completion_tokens", 0) < 2:
        return None
    return (r["client_total_s"] - r["client_ttft_s"]) / (r["completion_tokens"] - 1)


def meets_slo(r: dict, ttft_slo_s=None, tpot_slo_s=None) -> bool:
    """A successful request whose TTFT and TPOT are within the SLOs (unset = no bound)."""
    if r["status"] != "OK":
        return False
    if ttft_slo_s is not None and (r.get("client_ttft_s") is None or
                                   r["client_ttft_s"] > ttft_slo_s):
        return False
    if tpot_slo_s is not None:
        t = tpot(r)
        if t is not None and t > tpot_slo_s:
            return False
    return True


def measurement_window(records: list, start_s: float, end_s=None) -> tuple:
    """(start, end) in seconds from the run's start: from the end of the warm-up until end_s
    (a duration-bound run: the bound) or, without one, until the last measured request ended."""
    if end_s is None:
        ends = [r["sent_at_s"] + r["client_total_s"] for r in records
                if not r.get("warmup") and r.get("client_total_s") is not None]
        sends = [r["sent_at_s"] for r in records if not r.get("warmup")]
        end_s = max(ends + sends, default=start_s)
    return (start_s, max(end_s, start_s))


def _ended_at(r: dict):
    return None if r.get("client_total_s") is None else r["sent_at_s"] + r["client_total_s"]


def summarize(records: list, window: tuple, expected_shares: dict = None,
              ttft_slo_s=None, tpot_slo_s=None) -> dict:
    """The run's numbers over its measurement window (start, end).

    Throughput counts what happened inside the window, whoever sent it: tokens that reached the
    client in it and requests that completed in it (a closed loop's users run in waves, so
    counting only the requests sent after the warm-up would charge the window for tokens of
    requests sent before it). Latencies, errors and targets describe the requests sent after
    the warm-up (the measured ones); goodput is the window's completions within the SLOs."""
    start, end = window
    span = end - start
    measured = [r for r in records if not r.get("warmup")]
    ok = [r for r in measured if r["status"] == "OK"]

    def inside(t):
        return t is not None and start <= t <= end

    completed = [r for r in records if r["status"] == "OK" and inside(_ended_at(r))]
    good = [r for r in completed if meets_slo(r, ttft_slo_s, tpot_slo_s)]
    tokens = sum(1 for t in token_times(records) if inside(t))

    def rate(x):
        return x / span if span > 0 else 0.0

    per_target = {label: {"requests": 0, "ok": 0, "expected_share": share, "ttft": []}
                  for label, share in (expected_shares or {}).items()}
    for r in measured:
        entry = per_target.setdefault(r["label"], {"requests": 0, "ok": 0, "expected_share": None,
                                                   "ttft": []})
        entry["requests"] += 1
        if r["status"] == "OK":
            entry["ok"] += 1
            entry["ttft"].append(r["client_ttft_s"])
    for entry in per_target.values():
        entry["share"] = entry["requests"] / len(measured) if measured else 0.0
        entry["client_ttft_p50_s"] = percentile([t for t in entry.pop("ttft") if t is not None],
                                                50)

    def of_ok(key):
        return distribution(r.get(key) for r in ok)

    return {
        "requests": len(measured),
        "ok": len(ok),
        "warmup_requests": len(records) - len(measured),
        "errors_by_status": dict(Counter(r["status"] for r in measured if r["status"] != "OK")),
        "window_s": [start, end],
        "elapsed_s": span,
        "completed_in_window": len(completed),
        "throughput_requests_per_s": rate(len(completed)),
        "throughput_generated_tokens_per_s": rate(tokens),
        "generated_tokens": tokens,
        "slo": {"ttft_s": ttft_slo_s, "tpot_s": tpot_slo_s},
        "goodput_requests_per_s": rate(len(good)),
        "goodput_generated_tokens_per_s": rate(sum(r["completion_tokens"] for r in good)),
        "slo_attainment": (sum(meets_slo(r, ttft_slo_s, tpot_slo_s) for r in measured) /
                           len(measured)) if measured else None,
        "client_ttft_s": of_ok("client_ttft_s"),
        "client_tpot_s": distribution(tpot(r) for r in ok),
        "client_itl_s": distribution(x for r in ok for x in r.get("itl_s") or ()),
        "client_total_s": of_ok("client_total_s"),
        "server_queued_s": of_ok("server_queued_s"),
        "server_ttft_s": of_ok("server_ttft_s"),
        "server_total_s": of_ok("server_total_s"),
        "per_target": per_target,
    }


def write_csv(records: list, path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            row = dict(r)
            row["client_tpot_s"] = tpot(r)
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})


def token_times(records: list) -> list:
    """When each token of the successful records reached the client (seconds from the start),
    rebuilt from the send time, TTFT and inter-token gaps."""
    times = []
    for r in records:
        if r["status"] != "OK" or r.get("client_ttft_s") is None:
            continue
        t = r["sent_at_s"] + r["client_ttft_s"]
        times.append(t)
        for gap in r.get("itl_s") or ():
            t += gap
            times.append(t)
    return sorted(times)


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def format_table(report: dict) -> str:
    c, s = report["config"], report["summary"]
    load = (f"closed loop, {c['concurrency']} users, think time {c['think_time']:g} s"
            if c.get("concurrency") else f"open loop, {c['rate']:g} req/s (Poisson)")
    lines = [
        f"{c.get('label') or 'load test'}: {c['target']} {c['endpoint']}, {load}, "
        f"{len(c['adapters'])} adapters ({c['popularity']}"
        f"{' s=%g' % c['zipf_s'] if c['popularity'] == 'zipf' else ''}), base "
        f"{c['base_fraction']:g}, mix {c['mix_fraction']:g}, {c['prompt_tokens']} prompt + "
        f"{c['max_tokens']} generated tokens",
        f"requests: {s['requests']} measured ({s['warmup_requests']} warm-up), {s['ok']} ok, "
        f"{s['requests'] - s['ok']} failed, {report.get('dropped_at_cap', 0)} not sent "
        f"(in-flight cap){', INTERRUPTED' if report.get('interrupted') else ''}",
        f"throughput: {s['throughput_requests_per_s']:.2f} req/s, "
        f"{s['throughput_generated_tokens_per_s']:.1f} generated tokens/s in the "
        f"{s['elapsed_s']:.2f} s window after the warm-up",
    ]
    slo = s["slo"]
    if slo["ttft_s"] is not None or slo["tpot_s"] is not None:
        lines.append(f"goodput (TTFT <= {_ms(slo['ttft_s'])} ms, TPOT <= {_ms(slo['tpot_s'])} "
                     f"ms): {s['goodput_requests_per_s']:.2f} req/s, "
                     f"{s['goodput_generated_tokens_per_s']:.1f} tokens/s, "
                     f"{(s['slo_attainment'] or 0):.1%} of requests")
    lines += ["", f"{'latency (ms)':<16}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'n':>7}"]
    for label, key in (("client TTFT", "client_ttft_s"), ("client TPOT", "client_tpot_s"),
                       ("client ITL", "client_itl_s"), ("client total", "client_total_s"),
                       ("server queue", "server_queued_s"), ("server TTFT", "server_ttft_s"),
                       ("server total", "server_total_s")):
        d = s[key]
        if d["count"]:
            lines.append(f"{label:<16}{_ms(d['p50']):>9}{_ms(d['p90']):>9}{_ms(d['p99']):>9}"
                         f"{_ms(d['max']):>9}{d['count']:>7}")
    errors = s["errors_by_status"]
    lines += ["", "errors by status: " +
              (", ".join(f"{k} {v}" for k, v in sorted(errors.items())) if errors else "none")]
    targets = list(s["per_target"].items())
    if targets:
        lines += ["", f"{'target (by popularity)':<26}{'requests':>9}{'ok':>7}{'share':>8}"
                      f"{'expected':>10}{'TTFT p50 ms':>13}"]
        for name, e in targets[:12]:
            expected = "-" if e["expected_share"] is None else f"{e['expected_share']:.1%}"
            lines.append(f"{name[:25]:<26}{e['requests']:>9}{e['ok']:>7}{e['share']:>8.1%}"
                         f"{expected:>10}{_ms(e['client_ttft_p50_s']):>13}")
        if len(targets) > 12:
            lines.append(f"... and {len(targets) - 12} more (in the JSON summary)")
    if report.get("server_stats_delta"):
        lines += ["", "server stats during the run: " + ", ".join(
            f"{k} {v:g}" for k, v in report["server_stats_delta"].items())]
    return "\n".join(lines)


__all__ = ["BASE_LABEL", "percentile", "distribution", "summarize", "write_csv", "token_times",
           "format_table", "meets_slo", "measurement_window", "tpot"]
