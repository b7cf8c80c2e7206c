#!/usr/bin/env python3
"""Soak test: the real server on loopback at a multiple of its measured capacity, with every kind
of traffic at once, checked for lost or hung requests, wrong greedy answers, unbounded queues and
memory growth.

Phases: start `loraserve serve` (SmolLM2 + demo adapters, a store, both transports); record the
solo greedy answer of a few probe requests; measure capacity (requests/s) with a closed loop;
then offer FACTOR x capacity as Poisson arrivals for the rest of the run. Traffic: gRPC unary and
streamed, HTTP chat streamed and completions unary; base, single adapters, weighted mixes and
adapters that are being uploaded and unloaded meanwhile; random client cancellations and short
deadlines; probe requests whose greedy tokens must equal their solo run. An admin thread keeps
uploading, unloading and pinning adapters and switching merge modes; a monitor samples the
server's RSS and /metrics. At the end the server is stopped with SIGTERM and must exit 0.

Checks (each failure is listed; exit status 1 if any):
  * every request ends, within its client timeout, with OK or a status its kind allows
    (RESOURCE_EXHAUSTED / HTTP 429 = shed; CANCELLED for client cancels; DEADLINE_EXCEEDED for
    short deadlines; NOT_FOUND only for adapters being churned); no hangs, no other status;
  * every probe that finished OK equals its solo answer token for token;
  * load is shed (some RESOURCE_EXHAUSTED) and the waiting gauge never exceeds --max-waiting
    plus the requests preempted back into the queue (at most --max-running);
  * RSS after warm-up stays flat: the last quarter's peak is within 5% + 16 MiB of the second
    quarter's median.

Usage: soak.py --minutes M [--factor 2] [--out DIR] [--bin build/loraserve]
"""
import argparse
import concurrent.futures
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "loadtest"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import grpc  # noqa: E402
import httpx  # noqa: E402

from default_model import default_model_dir  # noqa: E402
from protos import load_stubs  # noqa: E402

TOKEN = "soak-admin-token"
DEMO = os.path.join(ROOT, "assets", "adapters")
ADAPTERS = ["devil", "jargon", "kjv"]  # kjv is DoRA: never in a mix
MIXABLE = ["devil", "jargon"]
PROMPTS = ["Tell me about the sea.", "What is a computer?", "Name three colors.",
           "Write one line about rain.", "Why is the sky blue?"]
MAX_WAITING = 24
MAX_RUNNING = 16
CHURN_LIMIT = 6


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Server:
    def __init__(self, binary, work):
        self.grpc_port, self.http_port = free_port(), free_port()
        self.store = os.path.join(work, "store")
        self.log_path = os.path.join(work, "server.log")
        self.proc = subprocess.Popen(
            [binary, "serve", "--model", default_model_dir(), "--adapter-dir", DEMO,
             "--store", self.store, "--listen", f"127.0.0.1:{self.grpc_port}",
             "--http-listen", f"127.0.0.1:{self.http_port}", "--metrics-listen", "",
             "--served-model-name", "base", "--admin-token", TOKEN,
             "--max-waiting", str(MAX_WAITING), "--max-running", str(MAX_RUNNING),
             "--drain-seconds", "15", "--log-format", "json", "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"))
        self.url = f"http://127.0.0.1:{self.http_port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(self.url + "/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited at start:\n" + open(self.log_path).read())
            time.sleep(0.1)
        else:
            raise RuntimeError("server never became healthy")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


class Soak:
    def __init__(self, server, stubs, factor, seed):
        self.server, self.pb, self.factor = server, stubs, factor
        self.inference = stubs.inference_pb2_grpc.InferenceStub(server.channel)
        self.admin = stubs.admin_pb2_grpc.AdminStub(server.channel)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.outcomes = {}  # (kind, status) -> count
        self.failures = []
        self.probes_checked = 0
        self.churn = []  # ids currently uploaded
        self.churn_ever = set()
        self.next_churn = 0
        self.rss = []  # (t, bytes)
        self.max_waiting_seen = 0
        self.submitted = 0
        self.finished = 0
        self.admin_ops = {}
        self.stop = threading.Event()
        self.golden = {}

    # --- requests ---------------------------------------------------------------------------

    def grpc_request(self, prompt, adapters, max_tokens, greedy=True):
        ipb = self.pb.inference_pb2
        req = ipb.GenerateRequest(chat=ipb.ChatMessages(
            messages=[ipb.ChatMessage(role="user", content=prompt)]), max_tokens=max_tokens)
        if len(adapters) == 1:
            req.adapter_id = adapters[0][0]
        elif adapters:
            req.mix.CopyFrom(ipb.AdapterMix(adapters=[
                ipb.WeightedAdapter(adapter_id=a, weight=w) for a, w in adapters]))
        if not greedy:
            req.sampling.CopyFrom(ipb.SamplingParams(temperature=0.8, top_p=0.95,
                                                     seed=self.rng.randrange(1 << 30)))
        return req

    def record(self, kind, status, allowed, detail=""):
        with self.lock:
            self.outcomes[(kind, status)] = self.outcomes.get((kind, status), 0) + 1
            self.finished += 1
            if status != "OK" and status not in allowed:
                self.failures.append(f"{kind}: {status} {detail[:200]}")

    def probe_key(self, prompt, adapters):
        return (prompt, tuple(adapters))

    def run_one(self, spec):
        kind, prompt, adapters, cancel, probe = spec
        allowed = {"RESOURCE_EXHAUSTED"}
        if cancel:
            allowed |= {"CANCELLED", "DEADLINE_EXCEEDED"}
        if any(a.startswith("churn-") for a, _ in adapters):
            allowed.add("NOT_FOUND")
        try:
            if kind == "grpc-unary":
                req = self.grpc_request(prompt, adapters, 16)
                timeout = 0.3 if cancel else 180
                try:
                    r = self.inference.Generate(req, timeout=timeout)
                    if probe:
                        self.check_probe(prompt, adapters, list(r.token_ids))
                    self.record(kind, "OK", allowed)
                except grpc.RpcError as e:
                    self.record(kind, e.code().name, allowed, e.details() or "")
            elif kind == "grpc-stream":
                req = self.grpc_request(prompt, adapters, 16)
                call = self.inference.GenerateStream(req, timeout=180)
                tokens = []
                try:
                    for message in call:
                        tokens.extend(message.token_ids)
                        if cancel:
                            call.cancel()
                            break
                        if message.HasField("final"):
                            tokens = list(message.final.token_ids)
                    if cancel:
                        self.record(kind, "CANCELLED", allowed)
                    else:
                        if probe:
                            self.check_probe(prompt, adapters, tokens)
                        self.record(kind, "OK", allowed)
                except grpc.RpcError as e:
                    code = e.code().name
                    self.record(kind, code, allowed, e.details() or "")
            else:
                self.run_http(kind, prompt, adapters, cancel, allowed)
        except Exception as e:  # a client-side surprise is a failure too
            self.record(kind, "CLIENT_EXCEPTION", set(), repr(e))

    def run_http(self, kind, prompt, adapters, cancel, allowed):
        body = {"max_tokens": 16, "temperature": 0}
        if len(adapters) == 1:
            body["model"] = adapters[0][0]
        else:
            body["model"] = "base"
            if adapters:
                body["merged_adapters"] = {"ids": [a for a, _ in adapters],
                                           "weights": [w for _, w in adapters]}
        http_status = {200: "OK", 429: "RESOURCE_EXHAUSTED", 404: "NOT_FOUND", 503: "UNAVAILABLE"}
        if kind == "http-chat-stream":
            body.update(messages=[{"role": "user", "content": prompt}], stream=True)
            with httpx.stream("POST", self.server.url + "/v1/chat/completions", json=body,
                              timeout=180) as r:
                if r.status_code != 200:
                    r.read()
                    return self.record(kind, http_status.get(r.status_code, str(r.status_code)),
                                       allowed, r.text)
                done = False
                for line in r.iter_lines():
                    if cancel and line.startswith("data: "):
                        return self.record(kind, "CANCELLED", allowed)
                    if line.startswith("data: {\"error\""):
                        return self.record(kind, "STREAM_ERROR", allowed, line)
                    if line == "data: [DONE]":
                        done = True
                self.record(kind, "OK" if done else "TRUNCATED", allowed)
        else:
            body.update(prompt=prompt)
            try:
                r = httpx.post(self.server.url + "/v1/completions", json=body,
                               timeout=0.3 if cancel else 180)
            except httpx.TimeoutException:
                if not cancel:
                    raise
                return self.record(kind, "CANCELLED", allowed)  # the client gave up
            self.record(kind, http_status.get(r.status_code, str(r.status_code)), allowed,
                        r.text)

    def check_probe(self, prompt, adapters, tokens):
        want = self.golden[self.probe_key(prompt, adapters)]
        with self.lock:
            self.probes_checked += 1
            if tokens != want:
                self.failures.append(f"probe {prompt!r} {adapters}: {tokens} != solo {want}")

    def random_spec(self):
        r = self.rng.random
        kind = self.rng.choices(["grpc-unary", "grpc-stream", "http-chat-stream",
                                 "http-completion"], weights=[45, 20, 20, 15])[0]
        prompt = self.rng.choice(PROMPTS)
        pick = r()
        if pick < 0.2:
            adapters = []
        elif pick < 0.65:
            adapters = [(self.rng.choice(ADAPTERS), 1.0)]
        elif pick < 0.9:
            w = round(0.2 + 0.6 * r(), 2)
            adapters = [("devil", w), ("jargon", round(1 - w, 2))]
        else:
            with self.lock:
                churn = list(self.churn_ever)
            adapters = [(self.rng.choice(churn), 1.0)] if churn else []
        probe = False
        if r() < 0.08:  # a probe: greedy, gRPC unary, known answer
            kind, probe = "grpc-unary", True
            prompt, adapters = self.rng.choice(list(self.golden))
            adapters = list(adapters)
        cancel = not probe and r() < 0.1
        return (kind, prompt, adapters, cancel, probe)

    # --- phases -----------------------------------------------------------------------------

    def record_golden(self):
        for prompt in PROMPTS[:3]:
            for adapters in ([], [("devil", 1.0)], [("kjv", 1.0)],
                             [("devil", 0.5), ("jargon", 0.5)]):
                r = self.inference.Generate(self.grpc_request(prompt, adapters, 16), timeout=120)
                self.golden[self.probe_key(prompt, adapters)] = list(r.token_ids)

    def measure_capacity(self, seconds, workers=8):
        done = [0]
        end = time.time() + seconds
        lock = threading.Lock()

        def loop():
            rng = random.Random(threading.get_ident())
            while time.time() < end:
                adapters = [(rng.choice(ADAPTERS), 1.0)] if rng.random() < 0.7 else []
                self.inference.Generate(
                    self.grpc_request(rng.choice(PROMPTS), adapters, 16), timeout=180)
                with lock:
                    done[0] += 1
        threads = [threading.Thread(target=loop) for _ in range(workers)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return done[0] / (time.time() - t0)

    def admin_loop(self):
        apb = self.pb.admin_pb2
        auth = (("authorization", f"Bearer {TOKEN}"),)
        while not self.stop.wait(1.5):
            op = self.rng.choice(["upload", "upload", "unload", "pin", "merge"])
            try:
                if op == "upload" and len(self.churn) < CHURN_LIMIT:
                    adapter_id = f"churn-{self.next_churn}"
                    self.next_churn += 1
                    src = os.path.join(DEMO, self.rng.choice(MIXABLE))

                    def messages():
                        yield apb.UploadAdapterRequest(header=apb.UploadHeader(
                            adapter_id=adapter_id, format=apb.ADAPTER_FORMAT_PEFT))
                        for name in ("adapter_config.json", "adapter_model.safetensors"):
                            data = open(os.path.join(src, name), "rb").read()
                            for off in range(0, len(data), 1 << 20):
                                yield apb.UploadAdapterRequest(chunk=apb.FileChunk(
                                    file_name=name, offset=off, data=data[off:off + (1 << 20)]))
                    self.admin.UploadAdapter(messages(), metadata=auth, timeout=60)
                    with self.lock:
                        self.churn.append(adapter_id)
                        self.churn_ever.add(adapter_id)
                elif op == "unload" and self.churn:
                    with self.lock:
                        adapter_id = self.churn.pop(0)
                    self.admin.UnloadAdapter(apb.UnloadAdapterRequest(adapter_id=adapter_id),
                                             metadata=auth, timeout=60)
                elif op == "pin":
                    self.admin.PinAdapter(apb.PinAdapterRequest(
                        adapter_id=self.rng.choice(ADAPTERS), pinned=self.rng.random() < 0.5),
                        metadata=auth, timeout=60)
                elif op == "merge":
                    mode = self.rng.choice([apb.MERGE_MODE_AUTO, apb.MERGE_MODE_NEVER,
                                            apb.MERGE_MODE_FORCED])
                    self.admin.SetMergeMode(apb.SetMergeModeRequest(
                        mode=mode, adapter_id="jargon" if mode == apb.MERGE_MODE_FORCED else ""),
                        metadata=auth, timeout=60)
                else:
                    continue
                with self.lock:
                    self.admin_ops[op] = self.admin_ops.get(op, 0) + 1
            except grpc.RpcError as e:
                with self.lock:
                    self.failures.append(f"admin {op}: {e.code().name} {e.details()}")

    def monitor_loop(self, t0):
        while not self.stop.wait(2.0):
            self.rss.append((time.time() - t0, rss_bytes(self.server.proc.pid)))
            try:
                text = httpx.get(self.server.url + "/metrics", timeout=10).text
                for line in text.splitlines():
                    if line.startswith("loraserve_num_requests_waiting "):
                        waiting = float(line.split()[1])
                        self.max_waiting_seen = max(self.max_waiting_seen, waiting)
            except httpx.HTTPError as e:
                self.failures.append(f"/metrics: {e!r}")

    def run(self, seconds, rate):
        t0 = time.time()
        threads = [threading.Thread(target=self.admin_loop, daemon=True),
                   threading.Thread(target=self.monitor_loop, args=(t0,), daemon=True)]
        for t in threads:
            t.start()
        futures = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=192) as pool:
            next_at = t0
            while next_at < t0 + seconds:
                next_at += self.rng.expovariate(rate)
                delay = next_at - time.time()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(self.run_one, self.random_spec()))
                with self.lock:
                    self.submitted += 1
            # Every request has a client timeout (<= 180 s); one still running long after that
            # is hung.
            done, not_done = concurrent.futures.wait(futures, timeout=240)
            self.stop.set()
            for f in not_done:
                self.failures.append("a request never finished (hung)")
                f.cancel()
        for t in threads:
            t.join(timeout=10)
        return time.time() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--factor", type=float, default=2.0, help="offered load / capacity")
    parser.add_argument("--out", default="", help="folder for soak.json and server.log")
    parser.add_argument("--bin", default=os.environ.get("LORASERVE_BIN",
                                                        os.path.join(ROOT, "build", "loraserve")))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="loraserve-soak-")
    out = args.out or work
    os.makedirs(out, exist_ok=True)
    stubs = load_stubs()
    server = Server(args.bin, work)
    soak = Soak(server, stubs, args.factor, args.seed)
    total = args.minutes * 60
    capacity_seconds = min(30.0, max(10.0, total * 0.1))
    try:
        soak.record_golden()
        capacity = soak.measure_capacity(capacity_seconds)
        rate = capacity * args.factor
        print(f"soak: capacity {capacity:.2f} req/s; offering {rate:.2f} req/s for "
              f"{total - capacity_seconds:.0f} s", flush=True)
        elapsed = soak.run(max(30.0, total - capacity_seconds), rate)
    finally:
        exit_code = server.stop()
    if exit_code != 0:
        soak.failures.append(f"server exit status after SIGTERM: {exit_code}")

    # RSS after warm-up: the first quarter of the soak is warm-up.
    samples = [b for t, b in soak.rss]
    rss_ok = True
    rss_summary = {}
    if len(samples) >= 8:
        q = len(samples) // 4
        baseline = statistics.median(samples[q:2 * q])
        peak = max(samples[3 * q:])
        bound = baseline * 1.05 + (16 << 20)
        rss_ok = peak <= bound
        rss_summary = {"baseline_mib": baseline / 2**20, "last_quarter_peak_mib": peak / 2**20,
                       "bound_mib": bound / 2**20, "first_mib": samples[0] / 2**20}
        if not rss_ok:
            soak.failures.append(f"RSS grew: last-quarter peak {peak / 2**20:.1f} MiB > bound "
                                 f"{bound / 2**20:.1f} MiB (baseline {baseline / 2**20:.1f})")
    shed = sum(n for (k, s), n in soak.outcomes.items() if s == "RESOURCE_EXHAUSTED")
    if shed == 0 and args.factor > 1.2:
        soak.failures.append("no request was shed with RESOURCE_EXHAUSTED at "
                             f"{args.factor}x capacity")
    # Submit refuses beyond --max-waiting; requests preempted for memory go back to the queue on
    # top of that, at most --max-running of them.
    if soak.max_waiting_seen > MAX_WAITING + MAX_RUNNING:
        soak.failures.append(f"waiting gauge reached {soak.max_waiting_seen} > "
                             f"{MAX_WAITING} + {MAX_RUNNING}")
    if soak.finished != soak.submitted:
        soak.failures.append(f"{soak.submitted - soak.finished} requests lost "
                             f"({soak.submitted} sent, {soak.finished} ended)")
    if soak.probes_checked == 0:
        soak.failures.append("no probe request finished OK")

    summary = {
        "minutes": args.minutes, "factor": args.factor, "capacity_rps": capacity,
        "offered_rps": rate, "soak_seconds": elapsed, "submitted": soak.submitted,
        "finished": soak.finished,
        "outcomes": {f"{k} {s}": n for (k, s), n in sorted(soak.outcomes.items())},
        "probes_checked": soak.probes_checked, "admin_ops": soak.admin_ops,
        "max_waiting_seen": soak.max_waiting_seen, "rss": rss_summary,
        "server_exit": exit_code, "failures": soak.failures[:50],
        "failure_count": len(soak.failures),
    }
    with open(os.path.join(out, "soak.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if out != work:
        shutil.copy(server.log_path, os.path.join(out, "server.log"))
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=2))
    for line in soak.failures[:20]:
        print("FAIL:", line)
    print("soak:", "PASSED" if not soak.failures else f"FAILED ({len(soak.failures)})")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not soak.failures else 1


if __name__ == "__main__":
    sys.exit(main())
