"""The OpenAI-compatible HTTP API, driven by the official `openai` client (and raw HTTP where the
client hides the wire), on the embedded default model (SmolLM2-135M-Instruct) with its demo
adapters: completions and chat, streaming and not, adapters by `model`, request-time merges,
logprobs, errors, auth, vLLM's LoRA endpoints and resolver, bad input; greedy tokens over HTTP
equal those over gRPC for the same request."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import httpx
import openai
import pytest

from conftest import ROOT, loraserve_bin
from test_grpc_server import free_port, stubs  # noqa: F401  (the gRPC stubs fixture)

sys.path.insert(0, os.path.join(ROOT, "tools"))
from default_model import default_model_dir  # noqa: E402

ADMIN = "py-admin-token"
API_KEY = "sk-loraserve-test"
BASE = "smollm2"
DEMO = os.path.join(ROOT, "assets", "adapters")
ADAPTERS = ["devil", "jargon", "kjv"]


def start_server(root, extra=(), http_port=None):
    grpc_port, http_port = free_port(), http_port or free_port()
    log = open(os.path.join(root, "server.log"), "w")
    proc = subprocess.Popen(
        [loraserve_bin(), "serve", "--model", default_model_dir(), "--listen",
         f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
         "--metrics-listen", "", "--served-model-name", BASE, "--adapter-dir", DEMO,
         "--admin-token", ADMIN, "--log-format", "json", *extra],
        stdout=subprocess.DEVNULL, stderr=log,
        env={**os.environ, "OMP_NUM_THREADS": "2"})
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert proc.poll() is None, open(os.path.join(root, "server.log")).read()
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("server never became healthy")
    return proc, grpc_port, http_port


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    store, load_root, resolver = root / "store", root / "load", root / "resolver"
    for d in (store, load_root, resolver):
        d.mkdir()
    proc, grpc_port, http_port = start_server(
        str(root), ["--store", str(store), "--load-root", str(load_root), "--api-key", API_KEY,
                    "--lora-resolver-dir", str(resolver), "--max-waiting", "64"])
    try:
        yield {"url": f"http://127.0.0.1:{http_port}", "port": http_port,
               "grpc": f"127.0.0.1:{grpc_port}", "load_root": load_root,
               "resolver": resolver, "proc": proc, "root": root}
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0,
                       timeout=120) as c:
        yield c


def post(server, path, body, token=API_KEY, raw=None, headers=None):
    h = {"Authorization": f"Bearer {token}"} if token else {}
    h.update(headers or {})
    content = raw if raw is not None else json.dumps(body)
    return httpx.post(server["url"] + path, content=content, headers=h, timeout=120)


def metrics(server):
    return httpx.get(server["url"] + "/metrics", timeout=30).text


# --- models, health, metrics -------------------------------------------------------------


def test_models_lists_base_and_every_adapter(client, server):
    models = client.models.list().data
    ids = [m.id for m in models]
    assert ids[0] == BASE and sorted(ids[1:]) == ADAPTERS
    raw = httpx.get(server["url"] + "/v1/models",
                    headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert raw["object"] == "list"
    base, lora = raw["data"][0], raw["data"][1]
    assert base["parent"] is None and base["max_model_len"] == 8192
    assert lora["parent"] == BASE and lora["max_model_len"] is None
    assert lora["root"].endswith(os.path.join("adapters", lora["id"]))
    for card in raw["data"]:
        assert card["object"] == "model" and isinstance(card["created"], int)
        perm = card["permission"][0]
        assert perm["object"] == "model_permission" and perm["allow_logprobs"] is True
    assert client.models.retrieve("kjv").parent == BASE
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_health_and_metrics_are_open_and_metrics_are_prometheus_text(server):
    assert httpx.get(server["url"] + "/health").status_code == 200
    r = httpx.get(server["url"] + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "loraserve_requests_total" in r.text
    assert "vllm:" not in r.text  # vLLM's names are opt-in (--vllm-metric-names)
    check = subprocess.run(["promtool", "check", "metrics"], input=r.text,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_api_key_guards_v1_only(server):
    for token in (None, "wrong", ADMIN):
        r = post(server, "/v1/completions", {"model": BASE, "prompt": "hi", "max_tokens": 1},
                 token=token)
        assert r.status_code == 401, token
        assert r.json()["error"]["type"] == "AuthenticationError"
    with openai.OpenAI(base_url=server["url"] + "/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


# --- completions and chat ------------------------------------------------------------------


def test_chat_non_streaming(client):
    r = client.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == BASE
    choice = r.choices[0]
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 24


def test_chat_content_parts_equal_a_plain_string(client):
    kwargs = dict(model=BASE, max_tokens=8, temperature=0)
    plain = client.chat.completions.create(
        messages=[{"role": "user", "content": "Name a color."}], **kwargs)
    parts = client.chat.completions.create(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Name a "},
                                               {"type": "text", "text": "color."}]}], **kwargs)
    assert parts.choices[0].message.content == plain.choices[0].message.content


def test_completion_prompt_forms(client, server):
    kwargs = dict(model=BASE, max_tokens=6, temperature=0)
    one = client.completions.create(prompt="The capital of France is", **kwargs)
    assert one.object == "text_completion" and one.id.startswith("cmpl-")
    assert one.choices[0].finish_reason == "length"
    assert one.usage.completion_tokens == 6
    many = client.completions.create(prompt=["The capital of France is", "One, two,"], **kwargs)
    assert [c.index for c in many.choices] == [0, 1]
    assert many.choices[0].text == one.choices[0].text
    assert many.usage.prompt_tokens > one.usage.prompt_tokens
    # Token ids: the same ids the text encodes to give the same completion.
    ids = tokenize(server, "The capital of France is")
    by_ids = client.completions.create(prompt=ids, **kwargs)
    assert by_ids.choices[0].text == one.choices[0].text
    nested = client.completions.create(prompt=[ids, ids[:3]], **kwargs)
    assert len(nested.choices) == 2 and nested.choices[0].text == one.choices[0].text
    echo = client.completions.create(prompt="The capital of France is", echo=True, **kwargs)
    assert echo.choices[0].text == "The capital of France is" + one.choices[0].text


def tokenize(server, text):
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(os.path.join(default_model_dir(), "tokenizer.json"))
    return tokenizer.encode(text).ids  # special tokens added, as a text prompt is encoded


def test_streaming_chat_frames(client, server):
    messages = [{"role": "user", "content": "Count from one to five."}]
    plain = client.chat.completions.create(model=BASE, messages=messages, max_tokens=16,
                                           temperature=0)
    for include_usage in (False, True):
        extra = {"stream_options": {"include_usage": True}} if include_usage else {}
        chunks = list(client.chat.completions.create(model=BASE, messages=messages,
                                                     max_tokens=16, temperature=0, stream=True,
                                                     **extra))
        assert all(c.object == "chat.completion.chunk" and c.model == BASE for c in chunks)
        assert chunks[0].choices[0].delta.role == "assistant"
        body = chunks[:-1] if include_usage else chunks
        text = "".join(c.choices[0].delta.content or "" for c in body)
        assert text == plain.choices[0].message.content
        assert body[-1].choices[0].finish_reason == plain.choices[0].finish_reason
        assert all(c.choices[0].finish_reason is None for c in body[:-1])
        if include_usage:
            assert chunks[-1].choices == [] and chunks[-1].usage is not None
            assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
            assert all(c.usage is None for c in body)
    # The wire itself: every frame is exactly "data: ...", and the stream ends with [DONE].
    with httpx.stream("POST", server["url"] + "/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"},
                      json={"model": BASE, "messages": messages, "max_tokens": 4,
                            "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in r.read().decode().split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    assert frames[-1] == "data: [DONE]"


def test_streaming_completion_equals_unary(client):
    kwargs = dict(model="kjv", prompt="In the beginning", max_tokens=10, temperature=0)
    plain = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.model == "kjv" for c in chunks)


def test_adapter_selected_by_model_changes_output(client):
    prompt = [{"role": "user", "content": "Tell me about the weather today."}]
    outputs = {}
    for model in [BASE, *ADAPTERS]:
        r = client.chat.completions.create(model=model, messages=prompt, max_tokens=16,
                                           temperature=0)
        assert r.model == model
        outputs[model] = r.choices[0].message.content
    assert len(set(outputs.values())) == len(outputs), outputs


def test_sampling_seed_reproducible_and_n_choices_differ(client):
    kwargs = dict(model=BASE, prompt="Once upon a time", max_tokens=12, temperature=1.0,
                  top_p=0.95, seed=7, n=3, extra_body={"ignore_eos": True})
    a = client.completions.create(**kwargs)
    b = client.completions.create(**kwargs)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert len({c.text for c in a.choices}) > 1
    assert a.usage.completion_tokens == 36


def test_vllm_extra_sampling_fields(client):
    # min_tokens holds EOS off; ignore_eos runs to max_tokens; top_k 1 is greedy.
    greedy = client.completions.create(model=BASE, prompt="Hi", max_tokens=8, temperature=0)
    top1 = client.completions.create(model=BASE, prompt="Hi", max_tokens=8, temperature=1.0,
                                     seed=3, extra_body={"top_k": 1})
    assert top1.choices[0].text == greedy.choices[0].text
    r = client.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "Say yes."}], max_tokens=12,
        temperature=0, extra_body={"min_tokens": 12})
    assert r.usage.completion_tokens == 12
    r = client.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "Say yes."}], max_tokens=30,
        temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 30 and r.choices[0].finish_reason == "length"


def test_stop_strings(client):
    base = client.completions.create(model=BASE, prompt="1, 2, 3, 4,", max_tokens=12,
                                     temperature=0)
    text = base.choices[0].text
    cut = text.strip()[:2].strip()
    assert cut
    stopped = client.completions.create(model=BASE, prompt="1, 2, 3, 4,", max_tokens=12,
                                        temperature=0, stop=[cut])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == text[:text.index(cut)]


# --- request-time merges -----------------------------------------------------------------


def test_merged_adapters_blend_like_grpc_mix(client, server, stubs):  # noqa: F811
    # (kjv is a DoRA adapter: weighted DoRA fusion is not defined, so it is refused below.)
    merged = {"ids": ["jargon", "devil"], "weights": [0.6, 0.4], "merge_strategy": "linear"}
    prompt = [{"role": "user", "content": "Describe a storm."}]
    r = client.chat.completions.create(model=BASE, messages=prompt, max_tokens=12,
                                       temperature=0, logprobs=True,
                                       extra_body={"merged_adapters": merged})
    assert r.model == BASE
    http_tokens = [t.token for t in r.choices[0].logprobs.content]
    ipb = stubs["inference_pb2"]
    with grpc.insecure_channel(server["grpc"]) as channel:
        inference = stubs["inference_pb2_grpc"].InferenceStub(channel)
        mix = ipb.AdapterMix(adapters=[ipb.WeightedAdapter(adapter_id="jargon", weight=0.6),
                                       ipb.WeightedAdapter(adapter_id="devil", weight=0.4)])
        g = inference.Generate(ipb.GenerateRequest(
            chat=ipb.ChatMessages(messages=[ipb.ChatMessage(role="user",
                                                            content="Describe a storm.")]),
            mix=mix, max_tokens=12), timeout=120)
    assert r.choices[0].message.content == g.text
    assert len(http_tokens) == len(g.token_ids)
    single = client.chat.completions.create(model="jargon", messages=prompt, max_tokens=12,
                                            temperature=0)
    assert single.choices[0].message.content != r.choices[0].message.content


@pytest.mark.parametrize("merged,model,needle", [
    ({"ids": [], "weights": []}, BASE, "merged_adapters.ids"),
    ({"ids": ["kjv", "devil"], "weights": [1.0]}, BASE, "merged_adapters.weights"),
    ({"ids": ["kjv"], "weights": [1.0], "merge_strategy": "magic"}, BASE, "merge_strategy"),
    ({"ids": ["kjv"], "weights": [1.0], "merge_strategy": "ties", "density": 0.5}, BASE,
     "merge_strategy"),
    ({"ids": ["kjv"], "weights": [1.0]}, "devil", "conflicts"),
    ({"ids": ["kjv"]}, BASE, "merged_adapters.weights"),
    ({"ids": ["kjv", "devil"], "weights": [0.5, 0.5]}, BASE, "DoRA"),
])
def test_merged_adapters_validation(client, merged, model, needle):
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model=model, prompt="x", max_tokens=2,
                                  extra_body={"merged_adapters": merged})
    assert needle in error.value.message


def test_merged_adapters_unknown_id_is_404(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.completions.create(model=BASE, prompt="x", max_tokens=2, extra_body={
            "merged_adapters": {"ids": ["kjv", "ghost"], "weights": [0.5, 0.5]}})
    assert error.value.body["param"] == "merged_adapters.ids[1]"


# --- logprobs ------------------------------------------------------------------------------


def test_chat_logprobs(client):
    r = client.chat.completions.create(
        model="jargon", messages=[{"role": "user", "content": "Explain rain."}], max_tokens=8,
        temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token  # greedy: the chosen token is the best
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6
        assert [a.logprob for a in t.top_logprobs] == sorted(
            [a.logprob for a in t.top_logprobs], reverse=True)
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
    streamed = client.chat.completions.create(
        model="jargon", messages=[{"role": "user", "content": "Explain rain."}], max_tokens=8,
        temperature=0, logprobs=True, top_logprobs=3, stream=True)
    stream_lp = [t for c in streamed if c.choices and c.choices[0].logprobs
                 for t in c.choices[0].logprobs.content]
    # Equal tokens; log-probabilities to fp32 rounding (single-adapter traffic may be running
    # merged into the base weights for one of the two calls, which rounds differently).
    assert [t.token for t in stream_lp] == [t.token for t in content]
    assert [t.logprob for t in stream_lp] == pytest.approx([t.logprob for t in content],
                                                           abs=1e-4)


def test_completion_logprobs_legacy_shape(client):
    r = client.completions.create(model=BASE, prompt="The sky is", max_tokens=5,
                                  temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == 0
    assert lp.text_offset == [sum(len(t.encode()) for t in lp.tokens[:i]) for i in range(5)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) <= 2 and max(top.values()) == pytest.approx(logprob, abs=1e-6)


def test_http_greedy_and_logprobs_equal_grpc(client, server, stubs):  # noqa: F811
    """The same request over both transports: the same tokens and the same log-probabilities."""
    ipb = stubs["inference_pb2"]
    ids = tokenize(server, "My favourite food is")
    with grpc.insecure_channel(server["grpc"]) as channel:
        inference = stubs["inference_pb2_grpc"].InferenceStub(channel)
        for model in (BASE, "devil"):
            g = inference.Generate(ipb.GenerateRequest(
                token_ids=ipb.TokenIds(ids=ids), max_tokens=10, ignore_eos=True,
                logprobs=True, top_logprobs=1,
                **({} if model == BASE else {"adapter_id": model})), timeout=120)
            r = client.completions.create(model=model, prompt=ids, max_tokens=10,
                                          temperature=0, logprobs=1,
                                          extra_body={"ignore_eos": True})
            assert r.choices[0].text == g.text
            grpc_lp = [e.chosen.logprob for e in g.logprobs]
            # fp32 rounding only (auto merge may have folded the adapter in for one of them).
            assert r.choices[0].logprobs.token_logprobs == pytest.approx(grpc_lp, abs=1e-4)


# --- errors and bad input ------------------------------------------------------------------


def test_unknown_model_is_404_in_openai_shape(client, server):
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="no-such-adapter",
                                       messages=[{"role": "user", "content": "hi"}])
    body = error.value.body
    assert body["type"] == "NotFoundError" and body["param"] == "model"
    assert body["code"] == 404 and "no-such-adapter" in body["message"]


@pytest.mark.parametrize("body,param", [
    ({"model": BASE, "prompt": "x", "temperature": "hot"}, "temperature"),
    ({"model": BASE, "prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"model": BASE, "prompt": "x", "max_tokens": 1.5}, "max_tokens"),
    ({"model": BASE, "prompt": "x", "top_p": 0}, None),
    ({"model": BASE, "prompt": ""}, "prompt"),
    ({"model": BASE, "prompt": []}, "prompt"),
    ({"model": BASE, "prompt": [1, "a"]}, "prompt[1]"),
    ({"model": BASE, "prompt": [[1, 2], []]}, "prompt[1]"),
    ({"model": BASE, "prompt": [99999999]}, "prompt[0]"),
    ({"model": BASE, "prompt": "x", "n": 0}, "n"),
    ({"model": BASE, "prompt": "x", "logprobs": 50}, "logprobs"),
    ({"model": BASE, "prompt": "x", "stop": 7}, "stop"),
    ({"model": BASE, "prompt": "x", "stream_options": {"include_usage": True}},
     "stream_options"),
    ({"model": BASE, "prompt": "x", "presence_penalty": 0.5}, "presence_penalty"),
    ({"model": 5, "prompt": "x"}, "model"),
    ({"prompt": "x"}, "model"),
    ({"model": BASE, "prompt": "x", "min_tokens": 9, "max_tokens": 4}, "min_tokens"),
    ({"model": BASE, "prompt": "x " * 9000, "max_tokens": 4}, "prompt"),
    ({"model": BASE, "prompt": "hello", "max_tokens": 8192}, "max_tokens"),
])
def test_bad_completion_fields_are_400_naming_the_field(server, body, param):
    r = post(server, "/v1/completions", body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    if param is not None:
        assert error["param"] == param, error


@pytest.mark.parametrize("body,param", [
    ({"model": BASE, "messages": []}, "messages"),
    ({"model": BASE, "messages": "hi"}, "messages"),
    ({"model": BASE, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": BASE, "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": BASE, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content[0]"),
    ({"model": BASE, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
     "top_logprobs"),
    ({"model": BASE, "messages": [{"role": "user", "content": "x"}], "tools": [{"x": 1}]},
     "tools"),
])
def test_bad_chat_fields_are_400_naming_the_field(server, body, param):
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_bad_field_raises_openai_bad_request(client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=BASE, prompt="x", max_tokens=-3)


def test_unknown_fields_are_ignored(server):
    r = post(server, "/v1/completions", {"model": BASE, "prompt": "Hi", "max_tokens": 2,
                                         "temperature": 0, "user": "u1", "x_custom": {"a": 1}})
    assert r.status_code == 200, r.text


def test_malformed_bodies_and_routes(server):
    for raw in (b"{", b"[1, 2]", b"\xff\xfe", b""):
        r = post(server, "/v1/chat/completions", None, raw=raw)
        assert r.status_code == 400, (raw, r.text)
        assert r.json()["error"]["type"] == "BadRequestError"
    # A body over --http-max-body-bytes (8 MiB): 413 from the declared length, before the
    # server reads it.
    with socket.create_connection(("127.0.0.1", server["port"])) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nContent-Length: " + str(9 << 20).encode() + b"\r\n\r\n{\"model\"")
        s.settimeout(30)
        status_line = s.recv(4096).split(b"\r\n", 1)[0]
    assert b" 413 " in status_line, status_line
    r = httpx.get(server["url"] + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFoundError"
    assert post(server, "/v1/completions", {"model": BASE, "prompt": "ok", "max_tokens": 1},
                ).status_code == 200


def test_slow_and_half_sent_requests_leave_the_server_serving(server):
    port = server["port"]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    idle[0].sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # headers never finish
    idle[1].sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                    b"Authorization: Bearer " + API_KEY.encode() + b"\r\n\r\n{\"model\"")
    idle[2].sendall(b"GARBAGE\r\n\r\n")
    try:
        # While those hang, real requests are served.
        for _ in range(3):
            r = post(server, "/v1/completions", {"model": BASE, "prompt": "Hi", "max_tokens": 2})
            assert r.status_code == 200
        idle[1].close()  # the half-sent body's client gives up
        assert httpx.get(server["url"] + "/health").status_code == 200
    finally:
        for s in idle:
            s.close()
    assert server["proc"].poll() is None


def test_client_disconnect_mid_stream_cancels_the_request(server):
    before = cancelled_count(server)
    with httpx.stream("POST", server["url"] + "/v1/completions", timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"},
                      json={"model": BASE, "prompt": "Write a long story.", "max_tokens": 2000,
                            "ignore_eos": True, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break
    deadline = time.time() + 30
    while cancelled_count(server) == before and time.time() < deadline:
        time.sleep(0.1)
    assert cancelled_count(server) == before + 1
    running = [line for line in metrics(server).splitlines()
               if line.startswith("loraserve_num_requests_running ")]
    assert running == ["loraserve_num_requests_running 0"]


def cancelled_count(server):
    total = 0.0
    for line in metrics(server).splitlines():
        if line.startswith("loraserve_requests_total{") and 'status="CANCELLED"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_queue_full_is_429_with_retry_after(tmp_path):
    proc, _, http_port = start_server(str(tmp_path), ["--max-waiting", "1", "--max-running",
                                                      "1"])
    url = f"http://127.0.0.1:{http_port}"
    try:
        body = {"model": BASE, "prompt": "Story:", "max_tokens": 400, "ignore_eos": True,
                "stream": True}
        streams = []
        statuses = []
        with httpx.Client(timeout=60) as h:
            for _ in range(4):
                req = h.build_request("POST", url + "/v1/completions", json=body)
                resp = h.send(req, stream=True)
                statuses.append(resp.status_code)
                streams.append(resp)
            assert 429 in statuses, statuses
            refused = streams[statuses.index(429)]
            refused.read()
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["type"] == "RateLimitError"
            for s in streams:
                s.close()
        # Still serving after the overload: the closed streams are cancelled at their next
        # write, and the client's retries (it honours retry-after) then get through.
        with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=8) as c:
            assert c.completions.create(model=BASE, prompt="Hi", max_tokens=2).choices
    finally:
        stop_server(proc)


def test_sigterm_health_503_and_stream_finishes(tmp_path):
    proc, _, http_port = start_server(str(tmp_path), ["--drain-seconds", "20"])
    url = f"http://127.0.0.1:{http_port}"
    try:
        with httpx.stream("POST", url + "/v1/completions", timeout=60,
                          json={"model": BASE, "prompt": "Story:", "max_tokens": 60,
                                "ignore_eos": True, "stream": True}) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert httpx.get(url + "/health").status_code == 503
            refused = httpx.post(url + "/v1/completions", json={"model": BASE, "prompt": "x"})
            assert refused.status_code == 503
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        finish = json.loads(rest[-2][6:])
        assert finish["choices"][0]["finish_reason"] == "length"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# --- vLLM's runtime LoRA endpoints and resolver --------------------------------------------


def test_vllm_load_unload_lora_adapter(client, server):
    target = server["load_root"] / "kjv-copy"
    shutil.copytree(os.path.join(DEMO, "kjv"), target, dirs_exist_ok=True)
    body = {"lora_name": "kjv2", "lora_path": str(target), "base_model_name": "ignored"}
    for token in (None, "wrong", API_KEY):
        assert post(server, "/v1/load_lora_adapter", body, token=token).status_code == 401
    r = post(server, "/v1/load_lora_adapter", body, token=ADMIN)
    assert r.status_code == 200, r.text
    assert r.text == "Success: LoRA adapter 'kjv2' added successfully."
    assert r.headers["content-type"].startswith("text/plain")
    again = post(server, "/v1/load_lora_adapter", body, token=ADMIN)
    assert again.status_code == 400
    assert again.json()["error"]["message"] == (
        "The lora adapter 'kjv2' has already been loaded. If you want to load the adapter in "
        "place, set 'load_inplace' to True.")
    assert post(server, "/v1/load_lora_adapter", {**body, "load_inplace": True},
                token=ADMIN).status_code == 200
    missing = post(server, "/v1/load_lora_adapter", {"lora_name": "x"}, token=ADMIN)
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == \
        "Both 'lora_name' and 'lora_path' must be provided."
    nowhere = post(server, "/v1/load_lora_adapter",
                   {"lora_name": "x", "lora_path": str(server["load_root"] / "none")},
                   token=ADMIN)
    assert nowhere.status_code == 404 and nowhere.json()["error"]["type"] == "NotFoundError"
    assert "kjv2" in [m.id for m in client.models.list().data]
    served = client.completions.create(model="kjv2", prompt="In the beginning", max_tokens=6,
                                       temperature=0)
    original = client.completions.create(model="kjv", prompt="In the beginning",
                                         max_tokens=6, temperature=0)
    assert served.choices[0].text == original.choices[0].text
    info = [line for line in metrics(server).splitlines()
            if line.startswith("vllm:lora_requests_info{")
            or line.startswith("loraserve_lora_requests_info{")]
    assert info and any("kjv2" in line for line in info), info

    assert post(server, "/v1/unload_lora_adapter", {"lora_name": "kjv2"}).status_code == 401
    r = post(server, "/v1/unload_lora_adapter", {"lora_name": "kjv2"}, token=ADMIN)
    assert r.status_code == 200 and r.text == "Success: LoRA adapter 'kjv2' removed successfully."
    assert "kjv2" not in [m.id for m in client.models.list().data]
    gone = post(server, "/v1/unload_lora_adapter", {"lora_name": "kjv2"}, token=ADMIN)
    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == "The lora adapter 'kjv2' cannot be found."
    assert post(server, "/v1/unload_lora_adapter", {}, token=ADMIN).status_code == 400
    assert not any("kjv2" in line for line in metrics(server).splitlines()
                   if "lora_requests_info{" in line)


def test_lora_resolver_loads_on_first_use(client, server):
    folder = server["resolver"] / "devil-resolved"
    shutil.copytree(os.path.join(DEMO, "devil"), folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = BASE
    (folder / "adapter_config.json").write_text(json.dumps(config))
    r = client.completions.create(model="devil-resolved", prompt="Hello", max_tokens=5,
                                  temperature=0)
    want = client.completions.create(model="devil", prompt="Hello", max_tokens=5, temperature=0)
    assert r.choices[0].text == want.choices[0].text and r.model == "devil-resolved"
    assert "devil-resolved" in [m.id for m in client.models.list().data]
    other = server["resolver"] / "other-base"
    shutil.copytree(os.path.join(DEMO, "devil"), other)
    config["base_model_name_or_path"] = "meta-llama/Llama-3-8B"
    (other / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other-base", prompt="Hello", max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="../escape", prompt="Hello", max_tokens=2)


def syncer_reconcile(url, ensure_exist, ensure_not_exist):
    """One reconcile pass of GAIE's LoRA syncer sidecar (tools/dynamic-lora-sidecar, v1.4.0),
    as it talks on the wire: no token anywhere; GET /health until 200; GET /v1/models for the
    loaded ids; load what is missing (with its extra base_model_name), unload what is listed;
    any 4xx/5xx is a failure (raise_for_status)."""
    assert httpx.get(url + "/health").status_code == 200
    calls = 0
    for adapter_id, source in ensure_exist.items():
        loaded = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        if adapter_id in loaded:
            continue
        httpx.post(url + "/v1/load_lora_adapter", json={
            "lora_name": adapter_id, "lora_path": source,
            "base_model_name": "HuggingFaceTB/SmolLM2-135M-Instruct"}).raise_for_status()
        calls += 1
    for adapter_id in ensure_not_exist:
        loaded = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        if adapter_id not in loaded:
            continue
        httpx.post(url + "/v1/unload_lora_adapter",
                   json={"lora_name": adapter_id}).raise_for_status()
        calls += 1
    return calls


def test_loopback_opt_in_lets_the_lora_syncer_converge(tmp_path):
    load_root = tmp_path / "load"
    for name in ("jargon", "devil"):
        shutil.copytree(os.path.join(DEMO, name), load_root / name)
    store = tmp_path / "store"
    proc, _, http_port = start_server(str(tmp_path), [
        "--store", str(store), "--load-root", str(load_root), "--allow-loopback-lora-updates",
        "--api-key", API_KEY])
    try:
        url = f"http://127.0.0.1:{http_port}"
        exist = {"sql-v1": str(load_root / "jargon"), "sql-v2": str(load_root / "devil")}
        assert syncer_reconcile(url, exist, []) == 2
        assert syncer_reconcile(url, exist, []) == 0  # converged: nothing more to do
        ids = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        assert {"sql-v1", "sql-v2"} <= ids
        # The next config rolls sql-v1 out.
        assert syncer_reconcile(url, {"sql-v2": exist["sql-v2"]}, ["sql-v1"]) == 1
        ids = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        assert "sql-v1" not in ids and "sql-v2" in ids
        # Inference still needs the key, from loopback too.
        assert httpx.post(url + "/v1/completions", json={"model": "sql-v2", "prompt": "x"}
                          ).status_code == 401
    finally:
        stop_server(proc)
