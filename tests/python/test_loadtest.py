"""loadtest/loadtest.py against the real `loraserve serve` on loopback: a tiny generated model,
four PEFT adapters registered with --adapter-dir, ~8 s of Poisson traffic with Zipf popularity.
The server is stopped in the fixture's finally, whatever the test's outcome."""
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, loraserve_bin

sys.path.insert(0, os.path.join(ROOT, "loadtest"))
from report import percentile  # noqa: E402
from workload import expected_shares, plan_arrivals  # noqa: E402

LOADTEST = os.path.join(ROOT, "loadtest", "loadtest.py")
TOKEN = "loadtest-admin-token"
# Listed most popular first, deliberately not in id order: popularity follows the list.
POPULARITY = ["lt-c", "lt-a", "lt-d", "lt-b"]

# One interpreter for the model and every adapter: torch is imported once.
GENERATE = """
import sys
sys.path.insert(0, sys.argv[1])
import gen_adapter, gen_model
model, adapters = sys.argv[2], sys.argv[3]
assert gen_model.main(["--out", model, "--seed", "1"]) == 0
for i, name in enumerate(sys.argv[4:]):
    assert gen_adapter.main(["--model", model, "--out", f"{adapters}/{name}", "--seed", str(10 + i),
                             "--rank", "4", "--b-std", "0.3"]) == 0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("loadtest")
    model, adapters = str(root / "model"), str(root / "adapters")
    # In a subprocess: torch and grpcio in one process abort at thread creation.
    subprocess.run([sys.executable, "-c", GENERATE, os.path.join(ROOT, "tools"), model, adapters,
                    *POPULARITY], check=True, capture_output=True, timeout=300)
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [loraserve_bin(), "serve", "--model", model, "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", "", "--http-listen", "", "--adapter-dir", adapters, "--admin-token", TOKEN,
         "--log-format", "json", "--drain-seconds", "5"],
        stdout=subprocess.DEVNULL, stderr=log,
        # One kernel thread: CI and dev machines are small and shared, and OpenMP barriers
        # spin badly when their threads are descheduled; this test measures the client.
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        yield {"address": f"127.0.0.1:{port}", "proc": proc, "root": root}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_loadtest(server, name, *args, timeout=90):
    out = str(server["root"] / f"{name}.json")
    proc = subprocess.run(
        [sys.executable, LOADTEST, "--server", server["address"], "--out", out,
         "--stub-cache", str(server["root"] / "stubs"), *map(str, args)],
        capture_output=True, text=True, timeout=timeout)
    server_log = (server["root"] / "server.log").read_text()[-4000:]
    assert server["proc"].poll() is None, "loraserve exited during the load test: " + server_log
    assert proc.returncode == 0, proc.stdout + proc.stderr + server_log
    with open(out) as f:
        return json.load(f), proc.stdout


def test_zipf_load_over_four_adapters(server):
    report, table = run_loadtest(
        server, "zipf", "--adapters", ",".join(POPULARITY), "--admin-token", TOKEN, "--rate", 5,
        "--duration", 8, "--zipf-s", 1.1, "--base-fraction", 0.1, "--prompt-tokens", 16,
        "--max-tokens", 12, "--seed", 7, "--plot", str(server["root"] / "plot.png"))
    summary = report["summary"]
    assert summary["requests"] == report["planned"] >= 20
    assert report["dropped_at_cap"] == 0
    assert summary["ok"] == summary["requests"] and not summary["errors_by_status"], summary
    assert all(r["status"] == "OK" and r["completion_tokens"] == 12 for r in report["requests"])

    counts = {name: e["requests"] for name, e in summary["per_adapter"].items()}
    assert set(counts) <= set(POPULARITY) | {"<base>"}
    assert counts[POPULARITY[0]] == max(counts.values()), counts
    assert counts[POPULARITY[0]] > counts.get(POPULARITY[-1], 0), counts

    assert summary["throughput_requests_per_s"] > 0
    assert summary["throughput_generated_tokens_per_s"] > 0
    for key in ("client_ttft_s", "client_itl_s", "server_queued_s", "server_ttft_s",
                "server_total_s"):
        d = summary[key]
        assert d["count"] > 0 and 0 <= d["p50"] <= d["p90"] <= d["p99"] <= d["max"], (key, d)
    # Server-side TTFT excludes the network and the client, so it cannot exceed the client's.
    assert summary["server_ttft_s"]["p50"] <= summary["client_ttft_s"]["p50"]
    assert report["server_stats_delta"]["generated_tokens"] >= summary["generated_tokens"]

    assert "client TTFT" in table and POPULARITY[0] in table
    assert ("plot written" in table and os.path.getsize(server["root"] / "plot.png") > 0) or \
        "plot skipped: gnuplot not found" in table, table


def test_adapter_count_discovers_ids_through_the_admin_api(server):
    report, _ = run_loadtest(server, "discovery", "--adapter-count", 2, "--admin-token", TOKEN,
                             "--rate", 4, "--duration", 1.5, "--prompt-tokens", 4,
                             "--max-tokens", 2)
    # ListAdapters is sorted by id; the first two become the popularity order.
    assert report["config"]["adapters"] == ["lt-a", "lt-b"]
    assert set(report["summary"]["per_adapter"]) <= {"lt-a", "lt-b"}
    assert report["summary"]["ok"] == report["summary"]["requests"]


def test_plan_is_poisson_with_zipf_shares_and_deterministic():
    kwargs = dict(rate=500.0, duration=20.0, adapters=["x", "y", "z"], zipf_s=1.1,
                  base_fraction=0.2, prompt_tokens=3, vocab_size=50, avoid_ids=[0, 1], seed=5)
    plan = plan_arrivals(**kwargs)
    assert plan == plan_arrivals(**kwargs)
    assert abs(len(plan) - 10000) < 400  # Poisson(10000): sd 100
    gaps = np.diff([a.at for a in plan])
    assert abs(gaps.mean() - 1 / 500) < 1e-4 and abs(gaps.std() / gaps.mean() - 1) < 0.05
    shares = expected_shares(["x", "y", "z"], 1.1, 0.2, None)
    assert abs(sum(shares.values()) - 1) < 1e-12
    for target, share in shares.items():
        got = sum(a.adapter == target for a in plan) / len(plan)
        assert abs(got - share) < 0.02, (target, got, share)
    assert all(len(a.prompt_ids) == 3 and min(a.prompt_ids) >= 2 for a in plan)


def test_percentile_matches_numpy():
    values = np.random.default_rng(0).exponential(size=101).tolist()
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert percentile([], 50) is None
