"""/metrics read the way the Gateway API Inference Extension's endpoint picker reads it
(GAIE <= v1.5 / llm-d-router; ../shared/PROTOCOLS.md 1.1): a strict text-format parse (a
duplicated or split family fails the whole scrape), the gauge-only value extraction, the
first-matching-series rule for queue and KV gauges, and both LoRA readers (the new extractor's
largest-value series with trimmed names; the legacy client's skip of all-empty series, untrimmed).
Under a load fixture the parsed values must track the engine's real state: the running batch is
capped by --max-running, the rest wait, the adapters of running requests are resident, and a
queued request's adapter that is not resident is listed as waiting."""
import math
import re
import statistics
import threading
import time

import httpx
import pytest

from test_openai_api import BASE, start_server, stop_server

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_exposition(text):
    """Prometheus text format -> {family: {"type": str, "samples": [(labels, value)]}}, failing
    like expfmt.TextParser does on a second TYPE line, a family whose samples are split by
    another family, or a malformed line."""
    families, order = {}, []
    current = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name not in families or families[name]["type"] is None, \
                f"second TYPE line for {name}"
            assert kind in ("gauge", "counter", "histogram", "summary", "untyped"), line
            families.setdefault(name, {"type": None, "samples": []})["type"] = kind
            order.append(name)
            current = name
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"malformed sample line: {line!r}"
        name, _, labels_text, value = m.group(1), m.group(2), m.group(3), m.group(4)
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in families and \
                    families[name[: -len(suffix)]]["type"] in ("histogram", "summary"):
                family = name[: -len(suffix)]
        if family != current:
            assert family not in families, f"samples of {family} are not kept together"
            families[family] = {"type": None, "samples": []}
            order.append(family)
            current = family
        labels = {}
        if labels_text:
            consumed = 0
            for lm in LABEL.finditer(labels_text):
                assert lm.start() == consumed, f"bad labels in {line!r}"
                labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace("\\\\", "\\")
                consumed = lm.end()
            assert consumed == len(labels_text), f"bad labels in {line!r}"
        families[family]["samples"].append((labels, float(value)))
    return families


def gauge_value(families, spec_name, spec_labels=None):
    """getLatestMetric: the first series whose labels include the spec's; gauges only (the
    legacy client reads GetGauge(), so an untyped family reads as 0)."""
    family = families.get(spec_name)
    if family is None:
        return None
    for labels, value in family["samples"]:
        if all(labels.get(k) == v for k, v in (spec_labels or {}).items()):
            return value if family["type"] == "gauge" else 0.0
    return None


def lora_new(families, name):
    """The v1.5 datalayer extractor: the series with the largest value; names split on ',' and
    trimmed."""
    samples = families[name]["samples"]
    labels, _ = max(samples, key=lambda s: s[1])
    split = lambda v: [x.strip() for x in v.split(",") if x.strip()]  # noqa: E731
    return (split(labels["running_lora_adapters"]), split(labels["waiting_lora_adapters"]),
            int(labels["max_lora"]))


def lora_legacy(families, name):
    """The legacy client (default in GAIE v1.0-v1.4): skips series whose running and waiting
    labels are both empty, takes the newest, splits on ',' without trimming."""
    best = None
    for labels, value in families[name]["samples"]:
        if labels["running_lora_adapters"] == "" and labels["waiting_lora_adapters"] == "":
            continue
        if best is None or value > best[1]:
            best = (labels, value)
    if best is None:
        return None
    labels = best[0]
    split = lambda v: [x for x in v.split(",") if x != ""]  # noqa: E731
    return split(labels["running_lora_adapters"]), split(labels["waiting_lora_adapters"]), \
        int(labels["max_lora"])


def scrape(url):
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_exposition(r.text)


def check_protocol_invariants(families, name):
    assert families[name]["type"] == "gauge"
    samples = families[name]["samples"]
    assert len(samples) == 1, samples  # one current series: bounded cardinality
    labels, value = samples[0]
    assert set(labels) == {"max_lora", "running_lora_adapters", "waiting_lora_adapters"}
    assert re.fullmatch(r"[0-9]+", labels["max_lora"])
    assert abs(time.time() - value) < 5, value
    running, waiting, max_lora = lora_new(families, name)
    for names in (running, waiting):
        assert all(" " not in n and n for n in names)
    assert len(running) <= max_lora
    assert not set(running) & set(waiting)
    return running, waiting, max_lora


@pytest.fixture(scope="module")
def loaded_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("picker")
    proc, _, http_port = start_server(str(root), ["--max-running", "2", "--max-lora", "2",
                                                  "--api-key", "k", "--vllm-metric-names"])
    try:
        yield f"http://127.0.0.1:{http_port}"
    finally:
        stop_server(proc)


def stream_forever(url, model, started, stop):
    """A long streamed completion that holds its place in the batch until `stop`."""
    with httpx.stream("POST", url + "/v1/completions", timeout=120,
                      headers={"Authorization": "Bearer k"},
                      json={"model": model, "prompt": "Tell a long story.", "max_tokens": 4000,
                            "ignore_eos": True, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            started.set()
            if stop.is_set():
                return


def test_idle_scrape_parses_and_reads_zero(loaded_server):
    families = scrape(loaded_server)
    for prefix in ("vllm:", "loraserve_"):
        waiting = "vllm:num_requests_waiting" if prefix == "vllm:" else \
            "loraserve_num_requests_waiting"
        running = waiting.replace("waiting", "running")
        kv = "vllm:kv_cache_usage_perc" if prefix == "vllm:" else "loraserve_kv_cache_usage_ratio"
        assert gauge_value(families, waiting) == 0
        assert gauge_value(families, running) == 0
        assert gauge_value(families, kv) == 0
    for name in ("vllm:lora_requests_info", "loraserve_lora_requests_info"):
        running, waiting, max_lora = check_protocol_invariants(families, name)
        assert running == [] and waiting == [] and max_lora == 2
        assert lora_legacy(families, name) is None  # all-empty: the legacy EPP skips it
    info = families["vllm:cache_config_info"]["samples"][0][0]
    assert int(info["block_size"]) == 16 and int(info["num_gpu_blocks"]) > 0
    # The spec selects with labels too ("vllm:num_requests_waiting{model_name=smollm2}").
    assert gauge_value(families, "vllm:num_requests_waiting", {"model_name": BASE}) == 0


def test_scrape_tracks_the_engine_under_load(loaded_server):
    url = loaded_server
    stop = threading.Event()
    threads, started = [], []
    # Two running (devil, jargon: --max-running 2 and --max-lora 2 hold both), then three that
    # wait: two more for devil and one for kjv, which cannot be resident while both slots are
    # held by running requests.
    for model in ("devil", "jargon", "devil", "devil", "kjv"):
        event = threading.Event()
        t = threading.Thread(target=stream_forever, args=(url, model, event, stop), daemon=True)
        t.start()
        threads.append(t)
        started.append(event)
        if model in ("devil", "jargon") and len(threads) <= 2:
            assert event.wait(60), "the first requests never started streaming"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            families = scrape(url)
            if gauge_value(families, "vllm:num_requests_waiting") == 3:
                break
            time.sleep(0.05)
        for name in ("vllm:lora_requests_info", "loraserve_lora_requests_info"):
            running, waiting, max_lora = check_protocol_invariants(families, name)
            assert sorted(running) == ["devil", "jargon"], running
            assert waiting == ["kjv"], waiting
            assert lora_legacy(families, name) == (running, waiting, max_lora)
        assert gauge_value(families, "vllm:num_requests_running") == 2
        assert gauge_value(families, "loraserve_num_requests_waiting") == 3
        kv = gauge_value(families, "vllm:kv_cache_usage_perc")
        assert 0 < kv < 1
        assert kv == gauge_value(families, "loraserve_kv_cache_usage_ratio")

        # While the engine works: /metrics is cheap and open (the picker scrapes every 50 ms and
        # calls a pod saturated when its metrics are older than 200 ms).
        latencies = []
        with httpx.Client() as h:
            for _ in range(60):
                t0 = time.perf_counter()
                r = h.get(url + "/metrics", timeout=5)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
                time.sleep(0.05)
        latencies.sort()
        p99 = latencies[int(math.ceil(0.99 * len(latencies))) - 1]
        print(f"/metrics under load: median {statistics.median(latencies) * 1e3:.1f} ms, "
              f"p99 {p99 * 1e3:.1f} ms")
        # Measured on 2 AMD EPYC cores: 2 ms median, 9 ms p99 with this test alone; 28 ms p99
        # with two more CPU-bound processes running. No engine lock is held across a forward
        # pass (a step here takes longer than the bound), so the bound catches that regression
        # while allowing a shared CI machine.
        assert p99 < 0.05, latencies
    finally:
        stop.set()
    for t in threads:
        t.join(timeout=60)
    # Everything drained: nothing waits or runs, and the adapters stay listed as resident.
    deadline = time.time() + 30
    while time.time() < deadline:
        families = scrape(url)
        if gauge_value(families, "vllm:num_requests_running") == 0 and \
                gauge_value(families, "vllm:num_requests_waiting") == 0:
            break
        time.sleep(0.1)
    assert gauge_value(families, "vllm:num_requests_running") == 0
    running, waiting, _ = check_protocol_invariants(families, "vllm:lora_requests_info")
    assert running and waiting == []
