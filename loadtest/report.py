"""Turns per-request records of a load test into the JSON summary, the text table and the plot.

Records are plain dicts (see loadtest.py: RequestRecord.to_dict); everything here is pure
except write_plot, which runs gnuplot when it is installed.
"""
import math
import os
import shutil
import subprocess
import tempfile
from collections import Counter

QUANTILES = (50, 90, 99)
BASE_LABEL = "<base>"


def percentile(values, q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    data = sorted(values)
    if not data:
        return None
    position = (len(data) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return data[low] + (data[high] - data[low]) * (position - low)


def distribution(values) -> dict:
    values = list(values)
    out = {f"p{q}": percentile(values, q) for q in QUANTILES}
    out["mean"] = sum(values) / len(values) if values else None
    out["max"] = max(values) if values else None
    out["count"] = len(values)
    return out


def summarize(records: list, elapsed_s: float, expected_shares: dict) -> dict:
    """Throughput, latency distributions (seconds), errors and per-adapter counts.

    expected_shares maps each target (adapter id or BASE_LABEL), in popularity order, to the
    share of requests the workload gives it; per_adapter keeps that order."""
    ok = [r for r in records if r["status"] == "OK"]
    tokens = sum(r["completion_tokens"] for r in ok)
    per_adapter = {label: {"requests": 0, "ok": 0, "expected_share": share, "ttft": []}
                   for label, share in expected_shares.items()}
    for r in records:
        label = r["adapter"] or BASE_LABEL
        entry = per_adapter.setdefault(label, {"requests": 0, "ok": 0, "expected_share": 0.0,
                                               "ttft": []})
        entry["requests"] += 1
        if r["status"] == "OK":
            entry["ok"] += 1
            entry["ttft"].append(r["client_ttft_s"])
    for entry in per_adapter.values():
        entry["share"] = entry["requests"] / len(records) if records else 0.0
        entry["client_ttft_p50_s"] = percentile(entry.pop("ttft"), 50)

    def of_ok(key):
        return distribution(r[key] for r in ok if r.get(key) is not None)

    return {
        "requests": len(records),
        "ok": len(ok),
        "errors_by_status": dict(Counter(r["status"] for r in records if r["status"] != "OK")),
        "elapsed_s": elapsed_s,
        "throughput_requests_per_s": len(ok) / elapsed_s if elapsed_s > 0 else 0.0,
        "throughput_generated_tokens_per_s": tokens / elapsed_s if elapsed_s > 0 else 0.0,
        "generated_tokens": tokens,
        "client_ttft_s": of_ok("client_ttft_s"),
        "client_itl_s": distribution(x for r in ok for x in r["itl_s"]),
        "client_total_s": of_ok("client_total_s"),
        "server_queued_s": of_ok("server_queued_s"),
        "server_ttft_s": of_ok("server_ttft_s"),
        "server_total_s": of_ok("server_total_s"),
        "per_adapter": per_adapter,
    }


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def format_table(report: dict) -> str:
    c, s = report["config"], report["summary"]
    adapters = c["adapters"]
    lines = [
        f"loraserve load test: {c['server']}, {c['duration_s']:g} s at {c['rate']:g} req/s "
        f"(Poisson), {len(adapters)} adapters (zipf s={c['zipf_s']:g}), "
        f"base fraction {c['base_fraction']:g}, {c['prompt_tokens']} prompt + "
        f"{c['max_tokens']} generated tokens",
        f"requests: {s['requests']} sent, {s['ok']} ok, "
        f"{s['requests'] - s['ok']} failed, {report['dropped_at_cap']} not sent "
        f"(in-flight cap {c['max_in_flight']})",
        f"throughput: {s['throughput_requests_per_s']:.2f} req/s, "
        f"{s['throughput_generated_tokens_per_s']:.1f} generated tokens/s "
        f"over {s['elapsed_s']:.2f} s",
        "",
        f"{'latency (ms)':<16}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'n':>7}",
    ]
    for label, key in (("client TTFT", "client_ttft_s"), ("client ITL", "client_itl_s"),
                       ("client total", "client_total_s"), ("server queue", "server_queued_s"),
                       ("server TTFT", "server_ttft_s"), ("server total", "server_total_s")):
        d = s[key]
        lines.append(f"{label:<16}{_ms(d['p50']):>9}{_ms(d['p90']):>9}{_ms(d['p99']):>9}"
                     f"{_ms(d['max']):>9}{d['count']:>7}")
    errors = s["errors_by_status"]
    lines += ["", "errors by status: " +
              (", ".join(f"{k} {v}" for k, v in sorted(errors.items())) if errors else "none"),
              "", f"{'adapter (by popularity)':<26}{'requests':>9}{'ok':>6}{'share':>8}"
                  f"{'expected':>10}{'TTFT p50 ms':>13}"]
    for name, entry in s["per_adapter"].items():
        lines.append(f"{name:<26}{entry['requests']:>9}{entry['ok']:>6}{entry['share']:>8.1%}"
                     f"{entry['expected_share']:>10.1%}{_ms(entry['client_ttft_p50_s']):>13}")
    if report.get("server_stats_delta"):
        lines += ["", "server stats during the test: " + ", ".join(
            f"{k} {v:g}" for k, v in report["server_stats_delta"].items())]
    return "\n".join(lines)


def write_plot(report: dict, path: str) -> str:
    """Renders TTFT/total latency over time and per-adapter counts with gnuplot; returns a
    message saying what happened (a missing gnuplot is not an error)."""
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        return f"plot skipped: gnuplot not found (apt-get install gnuplot-nox); {path} not written"
    with tempfile.TemporaryDirectory(prefix="loadtest-plot-") as tmp:
        latency = os.path.join(tmp, "latency.dat")
        with open(latency, "w") as f:
            for r in report["requests"]:
                if r["status"] == "OK":
                    f.write(f"{r['sent_at_s']:.4f} {r['client_ttft_s'] * 1000:.3f} "
                            f"{r['client_total_s'] * 1000:.3f}\n")
        counts = os.path.join(tmp, "adapters.dat")
        with open(counts, "w") as f:
            total = report["summary"]["requests"]
            for i, (name, entry) in enumerate(report["summary"]["per_adapter"].items()):
                f.write(f'{i} "{name}" {entry["requests"]} {entry["expected_share"] * total}\n')
        script = "\n".join([
            "set terminal pngcairo size 1000,800 noenhanced",
            f"set output '{path}'",
            "set multiplot layout 2,1",
            "set title 'latency per request (ms) vs send time (s)'",
            "set xlabel 'send time (s)'", "set ylabel 'ms'", "set key top left",
            f"plot '{latency}' using 1:3 with points pt 7 ps 0.6 title 'total', "
            f"'{latency}' using 1:2 with points pt 7 ps 0.6 title 'TTFT'",
            "set title 'requests per adapter, most popular first'", "set xlabel ''",
            "set ylabel 'requests'",
            "set style fill solid 0.6", "set boxwidth 0.7", "set yrange [0:*]",
            "set xtics rotate by -30", "set key top right",
            f"plot '{counts}' using 1:3:xtic(2) with boxes title 'sent', "
            f"'{counts}' using 1:4 with points pt 5 ps 1.2 title 'expected (Zipf)'",
            "unset multiplot", ""])
        proc = subprocess.run([gnuplot], input=script, capture_output=True, text=True,
                              timeout=60)
    if proc.returncode != 0:
        return f"plot failed: gnuplot exited {proc.returncode}: {proc.stderr.strip()}"
    return f"plot written to {path}"
