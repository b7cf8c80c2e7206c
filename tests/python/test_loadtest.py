"""loadtest/ against the real `loraserve serve` on loopback (a tiny generated model, four PEFT
adapters registered with --adapter-dir): open-loop Zipf traffic over gRPC, a closed loop over
the OpenAI HTTP API with generated adapters uploaded and removed, weighted mixes, Ctrl-C, and a
small sweep with its report and plots. The server is stopped in the fixture's finally."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, loraserve_bin

sys.path.insert(0, os.path.join(ROOT, "loadtest"))

LOADTEST = os.path.join(ROOT, "loadtest", "loadtest.py")
TOKEN = "loadtest-admin-token"
API_KEY = "loadtest-api-key"
SWEEP = os.path.join(ROOT, "loadtest", "sweep.py")
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
    port, http_port = free_port(), free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [loraserve_bin(), "serve", "--model", model, "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", "", "--http-listen", f"127.0.0.1:{http_port}", "--api-key", API_KEY,
         "--adapter-dir", adapters, "--admin-token", TOKEN, "--store", str(root / "store"),
         "--log-format", "json", "--drain-seconds", "5"],
        stdout=subprocess.DEVNULL, stderr=log,
        # One kernel thread: CI and dev machines are small and shared, and OpenMP barriers
        # spin badly when their threads are descheduled; this test measures the client.
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        yield {"address": f"127.0.0.1:{port}", "url": f"http://127.0.0.1:{http_port}",
               "proc": proc, "root": root}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_loadtest(server, name, *args, timeout=90, grpc=True):
    out = str(server["root"] / f"{name}.json")
    target = ["--server", server["address"]] if grpc else \
        ["--url", server["url"], "--api-key", API_KEY, "--admin-server", server["address"]]
    proc = subprocess.run(
        [sys.executable, LOADTEST, *target, "--out", out,
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
    assert summary["requests"] == len(report["requests"]) >= 20
    assert report["dropped_at_cap"] == 0
    assert summary["ok"] == summary["requests"] and not summary["errors_by_status"], summary
    assert all(r["status"] == "OK" and r["completion_tokens"] == 12 for r in report["requests"])

    counts = {name: e["requests"] for name, e in summary["per_target"].items()}
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
    # gnuplot-nox is one of scripts/install.sh's packages.
    assert "plot written" in table and os.path.getsize(server["root"] / "plot.png") > 0, table


def test_adapter_count_discovers_ids_through_the_admin_api(server):
    report, _ = run_loadtest(server, "discovery", "--adapter-count", 2, "--admin-token", TOKEN,
                             "--rate", 4, "--duration", 1.5, "--prompt-tokens", 4,
                             "--max-tokens", 2)
    # ListAdapters is sorted by id; the first two become the popularity order.
    assert report["config"]["adapters"] == ["lt-a", "lt-b"]
    assert set(report["summary"]["per_target"]) <= {"lt-a", "lt-b"}
    assert report["summary"]["ok"] == report["summary"]["requests"]




def list_ids(server):
    proc = subprocess.run([loraserve_bin(), "adapters", "--server", server["address"],
                           "--token", TOKEN, "list"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "lt-a" in proc.stdout, proc.stdout  # the registered ones are listed
    return proc.stdout


def test_closed_loop_over_openai_http_with_created_adapters_and_mixes(server):
    out_dir = server["root"] / "http-closed"
    report, table = run_loadtest(
        server, "http-closed", "--concurrency", 6, "--count", 60, "--warmup", 0.5,
        "--create-adapters", 6, "--admin-token", TOKEN, "--popularity", "uniform",
        "--mix-fraction", 0.25, "--base-fraction", 0.15, "--prompt-tokens", "uniform:3:9",
        "--max-tokens", 7, "--vocab-size", 500, "--seed", 4, "--out-dir", out_dir,
        "--ttft-slo-ms", 10000, "--tpot-slo-ms", 10000, grpc=False)
    s = report["summary"]
    assert s["requests"] == 60 and s["ok"] == 60, s["errors_by_status"]
    assert report["config"]["created_adapters"] == 6
    created = [a for a in report["config"]["adapters"] if a.startswith("lt-gen-")]
    assert len(created) == 6
    measured = [r for r in report["requests"] if not r["warmup"]]
    assert all(r["completion_tokens"] == 7 for r in measured)
    assert {r["prompt_tokens"] for r in report["requests"]} <= set(range(3, 10))
    labels = {r["label"] for r in measured}
    assert "<mix>" in labels and "<base>" in labels and labels & set(created)
    # Every request had an answer and the SLOs are loose: all of them are goodput.
    assert s["slo_attainment"] == 1.0 and s["goodput_requests_per_s"] == pytest.approx(
        s["throughput_requests_per_s"])
    assert 0 < s["client_ttft_s"]["p50"] <= s["client_total_s"]["p50"]
    # The generated adapters were uploaded over gRPC and removed after the run.
    assert "lt-gen-" not in list_ids(server)
    with open(out_dir / "summary.json") as f:
        summary = json.load(f)
    assert summary["summary"]["ok"] == 60 and "requests" not in summary
    rows = (out_dir / "requests.csv").read_text().splitlines()
    assert len(rows) == 1 + len(report["requests"])
    assert "closed loop, 6 users" in table


def test_ctrl_c_prints_the_partial_summary(server):
    out_dir = server["root"] / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, LOADTEST, "--server", server["address"], "--adapters", "lt-a,lt-b",
         "--concurrency", "2", "--duration", "60", "--prompt-tokens", "4", "--max-tokens", "64",
         "--out-dir", str(out_dir), "--stub-cache", str(server["root"] / "stubs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)  # a few seconds of load, far from the 60 s bound
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout + stderr
    assert "INTERRUPTED" in stdout and "throughput:" in stdout
    with open(out_dir / "summary.json") as f:
        summary = json.load(f)
    assert summary["interrupted"] and summary["summary"]["ok"] > 0


def test_small_sweep_writes_the_report_and_plots(server):
    out_dir = server["root"] / "sweep"
    proc = subprocess.run(
        [sys.executable, SWEEP, "--server", server["address"], "--admin-token", TOKEN,
         "--out-dir", str(out_dir), "--adapter-counts", "1,8", "--concurrencies", "1,4",
         "--users", "4", "--rate-adapters", "8", "--rate-factors", "0.5", "--duration", "1.5",
         "--warmup", "0.3", "--prompt-tokens", "4", "--max-tokens", "6",
         "--stub-cache", str(server["root"] / "stubs")],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out_dir / "sweep.json") as f:
        sweep = json.load(f)
    names = [p["name"] for p in sweep["points"]]
    assert names == ["adapters-1-zipf", "adapters-8-zipf", "adapters-8-uniform", "users-1",
                     "users-4", "rate-0.5x"]
    assert all(p["ok"] == p["requests"] > 0 and p["tokens_per_s"] > 0 for p in sweep["points"])
    # users-4 over 8 adapters is the adapters-8-zipf point: measured once, listed in both.
    assert sweep["points"][1]["requests"] == sweep["points"][4]["requests"]
    assert sweep["uploaded_adapters"] == 8 and "sweep-" not in list_ids(server)
    report = (out_dir / "REPORT.md").read_text()
    assert "Throughput relative to the one-adapter run" in report and "| rate-0.5x |" in report
    for png in ("throughput-vs-adapters.png", "ttft-cdf-adapters.png", "throughput-vs-users.png",
                "throughput-vs-rate.png", "throughput-over-time.png"):
        assert (out_dir / png).stat().st_size > 1000, png
        assert f"]({png})" in report
