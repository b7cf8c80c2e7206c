"""loadtest/peers/peft_server.py: one static batch mixing the base model, a LoRA adapter and a
DoRA adapter gives each request the same greedy tokens as the request alone, `ignore_eos` runs to
max_tokens, and the stream carries one chunk per token plus the usage chunk.

Needs the peers venv that scripts/compare_peers.sh installs (torch >= 2 for PEFT's mixed batches)
and the SmolLM2 model; skipped without them.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # loadtest/peers/ -> the repository
PEERS_PY = Path(os.environ.get("PEERS_HOME", Path.home() / ".cache/loraserve-peers")) / "venv/bin/python"
MODEL = ROOT / ".cache/models/smollm2-135m-instruct"
ADAPTERS = ROOT / "assets/adapters"

# Not part of CI's tests/python: it needs the peers venv, which only compare_peers.sh installs.
# compare_peers.sh runs it before measuring, so a broken PEFT server fails the comparison early.
if not PEERS_PY.exists() or not (MODEL / "config.json").exists() or not (ADAPTERS / "kjv").exists():
    raise RuntimeError(f"needs the peers venv at {PEERS_PY} (scripts/compare_peers.sh installs "
                       f"it) and the SmolLM2 model")


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _port()
    proc = subprocess.Popen(
        [str(PEERS_PY), str(ROOT / "loadtest/peers/peft_server.py"), "--model", str(MODEL), "--port", str(port),
         "--window-ms", "300", "--threads", "2", "--lora-modules",
         f"devil={ADAPTERS / 'devil'}", f"kjv={ADAPTERS / 'kjv'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            pytest.fail(proc.stderr.read().decode()[-2000:])
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(30)


def _post(url, body):
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.read().decode()


PROMPT = [504, 3767, 314, 253]


def _text(url, model, max_tokens=10, **kw):
    return json.loads(_post(url, {"model": model, "prompt": PROMPT, "max_tokens": max_tokens,
                                  "temperature": 0, **kw}))["choices"][0]


def test_models_lists_base_and_adapters(server):
    ids = [m["id"] for m in json.load(urllib.request.urlopen(server + "/v1/models"))["data"]]
    assert ids == ["smollm2", "devil", "kjv"]


def test_mixed_batch_matches_solo(server):
    models = ["smollm2", "devil", "kjv"]
    solo = {m: _text(server, m)["text"] for m in models}
    assert len(set(solo.values())) == 3, solo  # the adapters change the output
    batches0 = json.load(urllib.request.urlopen(server + "/health"))["batches"]
    got = {}
    threads = [threading.Thread(target=lambda m=m: got.__setitem__(m, _text(server, m)["text"])) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == solo
    # gathered into one batch (the DoRA rows run as a group of their own inside it)
    assert json.load(urllib.request.urlopen(server + "/health"))["batches"] == batches0 + 1


def test_ignore_eos_and_stream(server):
    body = _post(server, {"model": "devil", "prompt": PROMPT, "max_tokens": 40, "temperature": 0,
                          "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}})
    events = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 40
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is None]) == 40


def test_rejects_sampling_and_unknown_model(server):
    for body, code in (({"model": "smollm2", "prompt": PROMPT, "temperature": 0.7}, 400),
                       ({"model": "nope", "prompt": PROMPT}, 404)):
        with pytest.raises(urllib.error.HTTPError) as e:
            _post(server, body)
        assert e.value.code == code
