"""Bad input, everywhere (hypothesis): random well-typed requests (strategies built from the
protobuf descriptors, field by field) and random malformed bytes (raw gRPC frames through a
generic channel call) to every method of loraserve.v1.Inference and loraserve.v1.Admin, the
methods listed from the service descriptors so a new RPC is fuzzed the day it exists; and random
JSON and bytes to the HTTP routes. Every answer must be OK or a status docs/api.md and
docs/openai_api.md document (never UNKNOWN, INTERNAL or a dropped connection), and after each
batch a known-good greedy request gives the tokens it gave before the fuzzing."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import httpx
import pytest
from google.protobuf import descriptor as pbd
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, loraserve_bin
from test_grpc_server import free_port, stubs  # noqa: F401  (the gRPC stubs fixture)

TOKEN = "fuzz-admin-token"
C = grpc.StatusCode
# docs/api.md "Status codes". UNAVAILABLE is documented for loading and draining only, neither
# of which happens here, so it would mean a dropped connection.
DOCUMENTED = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS, C.RESOURCE_EXHAUSTED,
              C.UNAUTHENTICATED, C.PERMISSION_DENIED, C.DEADLINE_EXCEEDED, C.CANCELLED,
              C.FAILED_PRECONDITION}
# docs/api.md: bytes that do not parse as the method's message are refused by gRPC's C++
# callback API itself, before any handler runs, with UNIMPLEMENTED and no message.
UNPARSEABLE = {C.UNIMPLEMENTED}
# docs/openai_api.md "Errors"; 503 is for loading and draining, neither of which happens here.
HTTP_DOCUMENTED = {200, 400, 401, 403, 404, 413, 429}
SETTINGS = dict(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CALL_TIMEOUT = 10
KNOWN_GOOD = {"token_ids": [5, 9, 33, 71, 2, 8], "max_tokens": 12}


@pytest.fixture(scope="module")
def fuzz_server(stubs, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("fuzz")
    model = str(root / "model")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_model.py"), "--out", model,
                    "--seed", "1"], check=True, capture_output=True)
    load_root = root / "load"
    adapter = load_root / "ok"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_adapter.py"), "--model",
                    model, "--out", str(adapter), "--seed", "3", "--rank", "4", "--b-std", "0.3"],
                   check=True, capture_output=True)
    port, http_port = free_port(), free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [loraserve_bin(), "serve", "--model", model, "--listen", f"127.0.0.1:{port}",
         "--http-listen", f"127.0.0.1:{http_port}", "--served-model-name", "tiny",
         "--metrics-listen", "", "--store", str(root / "store"), "--load-root", str(load_root),
         "--admin-token", TOKEN, "--pool-bytes", str(64 << 20), "--max-upload-bytes",
         str(4 << 20), "--max-message-bytes", str(8 << 20)],
        stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "OMP_NUM_THREADS": "1"})
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=60)
        admin = stubs["admin_pb2_grpc"].AdminStub(channel)
        apb = stubs["admin_pb2"]
        admin.LoadAdapter(apb.LoadAdapterRequest(adapter_id="fz", path=str(adapter)),
                          metadata=auth(), timeout=60)
        server = {"channel": channel, "proc": proc, "load_root": str(load_root),
                  "http": f"http://127.0.0.1:{http_port}", "stubs": stubs}
        server["methods"] = methods(stubs)
        server["baseline"] = known_good(server)
        yield server
    finally:
        channel.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def auth():
    return (("authorization", f"Bearer {TOKEN}"),)


def methods(stubs):  # noqa: F811
    """Every method of both services, from the descriptors: (descriptor, message class)."""
    out = []
    for module, name in ((stubs["inference_pb2"], "Inference"), (stubs["admin_pb2"], "Admin")):
        for method in module.DESCRIPTOR.services_by_name[name].methods:
            out.append((method, message_factory.GetMessageClass(method.input_type)))
    assert len(out) >= 12
    return out


def known_good(server):
    """Greedy tokens of one fixed request over gRPC and over HTTP."""
    ipb = server["stubs"]["inference_pb2"]
    inference = server["stubs"]["inference_pb2_grpc"].InferenceStub(server["channel"])
    reply = inference.Generate(ipb.GenerateRequest(
        token_ids=ipb.TokenIds(ids=KNOWN_GOOD["token_ids"]), max_tokens=KNOWN_GOOD["max_tokens"],
        ignore_eos=True), timeout=60)
    http = httpx.post(server["http"] + "/v1/completions", timeout=60, json={
        "model": "tiny", "prompt": KNOWN_GOOD["token_ids"], "max_tokens": KNOWN_GOOD["max_tokens"],
        "temperature": 0, "ignore_eos": True})
    assert http.status_code == 200, http.text
    return list(reply.token_ids), http.json()["choices"][0]["text"]


def check_still_serving(server):
    assert server["proc"].poll() is None, "the server died"
    assert known_good(server) == server["baseline"], "greedy tokens changed after the batch"


# --- well-typed requests, built from the descriptors ----------------------------------------

FD = pbd.FieldDescriptor
INT32 = st.one_of(st.integers(-3, 40), st.integers(-2**31, 2**31 - 1))
ADAPTER_IDS = st.one_of(st.sampled_from(["fz", "", "nope", "../x", "a/b", ".hidden", "x" * 200,
                                         "a\x00b", "é", "fz2"]), st.text(max_size=12))
TEXT = st.one_of(st.sampled_from(["", "the model", "<|im_start|>", "\x00", "a" * 2000]),
                 st.text(max_size=40))


def field_strategy(field, server, depth):
    """A value for one field (a list for repeated ones); names steer values toward the
    interesting range, the rest of the type's range stays reachable."""
    name = field.name
    if field.type == FD.TYPE_MESSAGE:
        element = message_strategy(field.message_type, server, depth + 1)
    elif field.type == FD.TYPE_ENUM:
        element = st.one_of(st.sampled_from([v.number for v in field.enum_type.values]),
                            st.integers(-5, 50))
    elif field.type == FD.TYPE_BOOL:
        element = st.booleans()
    elif field.type == FD.TYPE_STRING:
        if name.endswith("adapter_id"):
            element = ADAPTER_IDS
        elif name == "path":
            root = server["load_root"]
            element = st.one_of(st.sampled_from([root + "/ok", root, "/", root + "/../x",
                                                 "relative", "", root + "/ok/.."]),
                                st.text(max_size=20))
        elif name == "file_name":
            element = st.one_of(st.sampled_from(["adapter_config.json",
                                                 "adapter_model.safetensors", "README.md",
                                                 "../x", ""]), st.text(max_size=12))
        else:
            element = TEXT
    elif field.type == FD.TYPE_BYTES:
        element = st.binary(max_size=256)
    elif field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        element = st.one_of(st.floats(-2, 2, width=32), st.floats(width=32))
    elif field.type in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        element = st.one_of(st.integers(0, 64), st.integers(0, 2**64 - 1))
    elif field.type in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        element = st.integers(-2**63, 2**63 - 1)
    elif field.type in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        element = st.integers(0, 2**32 - 1)
    elif name == "ids":
        element = st.one_of(st.integers(-2, 600), st.integers(-2**31, 2**31 - 1))
    elif name in ("max_tokens", "min_tokens"):
        # Long generations are valid but slow; most draws stay short.
        element = st.one_of(st.integers(-3, 24), st.integers(-2**31, 2**31 - 1))
    else:
        element = INT32
    if field.label == FD.LABEL_REPEATED:
        return st.lists(element, max_size=20 if name in ("ids", "stop") else 4)
    return element


def message_strategy(descriptor, server, depth=0):
    """Random messages of `descriptor`: each field set or not, at most one member per oneof."""
    if depth > 3:
        return st.just({})
    plain = {f.name: field_strategy(f, server, depth) for f in descriptor.fields
             if f.containing_oneof is None or f.containing_oneof.name.startswith("_")}
    oneofs = [st.one_of(st.none(), *[st.tuples(st.just(f.name), field_strategy(f, server, depth))
                                     for f in o.fields])
              for o in descriptor.oneofs if not o.name.startswith("_")]
    return st.tuples(st.fixed_dictionaries({}, optional=plain), st.tuples(*oneofs)).map(
        lambda parts: {**parts[0], **dict(p for p in parts[1] if p is not None)})


def build(cls, values):
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        if field.type == FD.TYPE_MESSAGE:
            sub = message_factory.GetMessageClass(field.message_type)
            if field.label == FD.LABEL_REPEATED:
                for v in value:
                    getattr(message, name).add().CopyFrom(build(sub, v))
            else:
                getattr(message, name).CopyFrom(build(sub, value))
        elif field.label == FD.LABEL_REPEATED:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def call(server, method, payloads, metadata):
    """Sends serialized messages on a generic stream (any RPC kind); returns (code, details)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    stream = server["channel"].stream_stream(path)
    try:
        for _ in stream(iter(payloads), timeout=CALL_TIMEOUT, metadata=metadata):
            pass
        return C.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details() or ""


def check_answer(method, code, details, allowed):
    assert code in allowed, f"{method.full_name}: {code} {details!r}"
    if code not in (C.OK, C.CANCELLED, C.DEADLINE_EXCEEDED) and code not in UNPARSEABLE:
        assert details, f"{method.full_name}: {code} without a message"


def parses(cls, payload):
    try:
        cls.FromString(payload)
        return True
    except DecodeError:
        return False


def plausible_generate(server):
    """GenerateRequests that mostly pass validation, so sampling, stops, logprobs, mixes and
    streaming run under random values too (the descriptor strategy mostly meets field checks)."""
    ipb = server["stubs"]["inference_pb2"]

    def make(ids, text, adapter, max_tokens, sampling, stop, logprobs, top, min_tokens):
        request = ipb.GenerateRequest(max_tokens=max_tokens, stop=stop, logprobs=logprobs,
                                      top_logprobs=top if logprobs else 0,
                                      min_tokens=min(min_tokens, max_tokens))
        if text is not None:
            request.text = text
        else:
            request.token_ids.ids.extend(ids)
        if adapter == "mix":
            request.mix.adapters.add(adapter_id="fz", weight=0.5)
        elif adapter:
            request.adapter_id = adapter
        if sampling is not None:
            request.sampling.CopyFrom(ipb.SamplingParams(
                temperature=sampling[0], top_k=sampling[1], top_p=sampling[2], seed=sampling[3]))
        return request
    return st.builds(
        make, st.lists(st.integers(0, 511), min_size=1, max_size=12),
        st.one_of(st.none(), st.text(min_size=1, max_size=30)),
        st.sampled_from(["", "", "fz", "mix", "nope"]), st.integers(1, 10),
        st.one_of(st.none(), st.tuples(st.floats(0, 2, width=32), st.integers(0, 50),
                                       st.floats(0.0625, 1, width=32), st.integers(0, 2**64 - 1))),
        st.lists(st.text(min_size=1, max_size=3), max_size=3), st.booleans(), st.integers(0, 20),
        st.integers(0, 3))


@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_well_typed_requests_to_every_rpc(fuzz_server, data):
    for method, cls in fuzz_server["methods"]:
        strategy = message_strategy(method.input_type, fuzz_server).map(lambda v, c=cls: build(c, v))
        if method.name in ("Generate", "GenerateStream"):
            strategy = st.one_of(strategy, plausible_generate(fuzz_server))
        messages = (data.draw(st.lists(strategy, min_size=1, max_size=4), label=method.name)
                    if method.client_streaming else [data.draw(strategy, label=method.name)])
        for metadata in (auth(), ()):
            code, details = call(fuzz_server, method, [m.SerializeToString() for m in messages],
                                 metadata)
            check_answer(method, code, details, DOCUMENTED)
    check_still_serving(fuzz_server)


def upload_stream(server):
    """Structured uploads: a header, then chunks with random names, offsets and bytes."""
    apb = server["stubs"]["admin_pb2"]
    header = st.builds(lambda i, n: apb.UploadAdapterRequest(
        header=apb.UploadHeader(adapter_id=i, total_bytes=n)), ADAPTER_IDS,
        st.one_of(st.just(0), st.integers(0, 2**64 - 1)))
    chunk = st.builds(lambda f, o, d: apb.UploadAdapterRequest(
        chunk=apb.FileChunk(file_name=f, offset=o, data=d)),
        st.sampled_from(["adapter_config.json", "adapter_model.safetensors", "README.md", "x"]),
        st.one_of(st.just(0), st.integers(0, 300)), st.binary(max_size=300))
    return st.tuples(st.lists(header, min_size=0, max_size=2), st.lists(chunk, max_size=6)).map(
        lambda p: p[0] + p[1])


@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_upload_sequences(fuzz_server, data):
    method = next(m for m, _ in fuzz_server["methods"] if m.name == "UploadAdapter")
    messages = data.draw(upload_stream(fuzz_server))
    code, details = call(fuzz_server, method, [m.SerializeToString() for m in messages], auth())
    check_answer(method, code, details, DOCUMENTED)
    if code == C.OK:  # random bytes are never a valid adapter
        raise AssertionError(f"a random upload was accepted: {messages!r}")


def mutated(server, cls):
    """Valid messages' bytes with random flips, truncation and appended garbage."""
    def mutate(args):
        base, flips, cut, tail = args
        payload = bytearray(base)
        for at, value in flips:
            if payload:
                payload[at % len(payload)] = value
        return bytes(payload[:cut] if cut is not None else payload) + tail
    base = message_strategy(cls.DESCRIPTOR, server).map(lambda v: build(cls, v).SerializeToString())
    return st.tuples(base, st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)),
                                    max_size=4),
                     st.one_of(st.none(), st.integers(0, 64)), st.binary(max_size=8)).map(mutate)


@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_malformed_bytes_to_every_rpc(fuzz_server, data):
    for method, cls in fuzz_server["methods"]:
        payload = st.one_of(st.binary(max_size=200), mutated(fuzz_server, cls))
        payloads = data.draw(st.lists(payload, min_size=1, max_size=3 if method.client_streaming
                                      else 1), label=method.name)
        code, details = call(fuzz_server, method, payloads, auth())
        allowed = DOCUMENTED | (UNPARSEABLE if not all(parses(cls, p) for p in payloads) else set())
        check_answer(method, code, details, allowed)
    check_still_serving(fuzz_server)


# --- HTTP ---------------------------------------------------------------------------------

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=False), st.text(max_size=20))
JSON_ANY = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
MESSAGES = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "wizard", 5])},
    optional={"content": st.one_of(st.text(max_size=30), JSON_ANY)}), max_size=3)
OPENAI_FIELDS = {
    "model": st.one_of(st.sampled_from(["tiny", "fz", "nope", "../x", ""]), JSON_ANY),
    "prompt": st.one_of(st.text(max_size=30), st.lists(st.integers(-5, 600), max_size=8),
                        st.lists(st.text(max_size=8), max_size=3), JSON_ANY),
    "messages": st.one_of(MESSAGES, JSON_ANY),
    # Not null: a chat without max_tokens runs to the end of the context, valid but slow.
    "max_tokens": st.one_of(st.integers(-3, 24), JSON_ANY.filter(lambda v: v is not None)),
    "max_completion_tokens": st.one_of(st.integers(-3, 24), JSON_ANY),
    "temperature": st.one_of(st.floats(-1, 3), JSON_ANY),
    "top_p": st.one_of(st.floats(-1, 2), JSON_ANY),
    "top_k": st.one_of(st.integers(-3, 600), JSON_ANY),
    "seed": st.one_of(st.integers(-2**64, 2**64), JSON_ANY),
    "n": st.one_of(st.integers(-1, 70), JSON_ANY),
    "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=300), max_size=20), JSON_ANY),
    "stream": st.one_of(st.booleans(), JSON_ANY),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), JSON_ANY),
    "logprobs": st.one_of(st.booleans(), st.integers(-1, 25), JSON_ANY),
    "top_logprobs": st.one_of(st.integers(-1, 25), JSON_ANY),
    "echo": st.one_of(st.booleans(), JSON_ANY),
    "ignore_eos": st.one_of(st.booleans(), JSON_ANY),
    "min_tokens": st.one_of(st.integers(-3, 30), JSON_ANY),
    "merged_adapters": st.one_of(st.fixed_dictionaries(
        {"ids": st.lists(st.sampled_from(["fz", "nope", "fz2"]), max_size=20),
         "weights": st.lists(st.floats(-2, 2), max_size=20)},
        optional={"merge_strategy": st.sampled_from(["linear", "ties", "x"]),
                  "density": st.floats(-1, 2)}), JSON_ANY),
    "lora_name": st.one_of(ADAPTER_IDS, JSON_ANY),
    "lora_path": st.one_of(st.sampled_from(["/", "relative", ""]), st.text(max_size=20),
                           JSON_ANY),
    "load_inplace": st.one_of(st.booleans(), JSON_ANY),
}
# Mostly well-formed bodies: each route's fields with the right types and mostly valid values,
# so generation, streaming, stops, logprobs and merges run too, not only the 400 paths.
MODEL = st.sampled_from(["tiny", "tiny", "tiny", "fz", "nope"])
WELL_TYPED = {
    "/v1/completions": {
        "model": MODEL,
        "prompt": st.one_of(st.text(min_size=1, max_size=30),
                            st.lists(st.integers(0, 520), min_size=1, max_size=8),
                            st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3)),
        "max_tokens": st.one_of(st.integers(1, 12), st.integers(-1, 0))},
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": st.lists(st.fixed_dictionaries({
            "role": st.sampled_from(["user", "user", "system", "assistant", "wizard"]),
            "content": st.text(max_size=30)}), min_size=1, max_size=3),
        "max_tokens": st.one_of(st.integers(1, 12), st.integers(-1, 0))},
    "/v1/load_lora_adapter": {"lora_name": ADAPTER_IDS,
                              "lora_path": st.sampled_from(["/", "relative", "", "/tmp"])},
    "/v1/unload_lora_adapter": {"lora_name": ADAPTER_IDS},
}
SAMPLING = {
    "temperature": st.floats(0, 2), "top_p": st.floats(0.05, 1), "top_k": st.integers(-1, 50),
    "seed": st.integers(0, 2**63), "n": st.integers(1, 4),
    "stop": st.lists(st.text(min_size=1, max_size=4), max_size=3), "stream": st.booleans(),
    "logprobs": st.one_of(st.booleans(), st.integers(0, 5)), "ignore_eos": st.booleans(),
    "min_tokens": st.integers(0, 3), "echo": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "merged_adapters": st.fixed_dictionaries({"ids": st.just(["fz"]), "weights": st.just([0.5])}),
}
ROUTES = list(WELL_TYPED)


def body_strategy(route):
    # max_tokens is always there (see OPENAI_FIELDS).
    well_typed = st.fixed_dictionaries(WELL_TYPED[route], optional=SAMPLING).map(json.dumps)
    return st.one_of(
        well_typed, well_typed,
        st.fixed_dictionaries({"max_tokens": OPENAI_FIELDS["max_tokens"]},
                              optional={k: v for k, v in OPENAI_FIELDS.items()
                                        if k != "max_tokens"}).map(json.dumps),
        JSON_ANY.map(json.dumps), st.binary(max_size=100))


def check_http(route, response):
    assert response.status_code in HTTP_DOCUMENTED, (route, response.status_code, response.text)
    if response.status_code >= 400:
        body = json.loads(response.text)  # always OpenAI's error shape, never a bare page
        assert body["error"]["message"] and body["error"]["code"] == response.status_code, body


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_http_routes_with_random_bodies(fuzz_server, data):
    with httpx.Client(base_url=fuzz_server["http"], timeout=CALL_TIMEOUT * 3) as client:
        for route in ROUTES:
            body = data.draw(body_strategy(route), label=route)
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            check_http(route, client.post(route, content=body, headers=headers))
        model = data.draw(st.text(max_size=20), label="model id")
        check_http("/v1/models/{id}", client.get("/v1/models/" + urllib.request.quote(model)))
    check_still_serving(fuzz_server)
