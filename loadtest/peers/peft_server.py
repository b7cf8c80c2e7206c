#!/usr/bin/env python3
"""A minimal OpenAI-compatible /v1/completions server over transformers + PEFT, for
scripts/compare_peers.sh. transformers + PEFT is a library, not a server: this is the smallest
honest server over it, with STATIC batching.

One worker thread takes the first waiting request, gathers more for up to --window-ms or until
--batch-size, and runs them as one `generate()` with left padding, greedy, max_new_tokens = the
largest max_tokens in the batch. Rows on the base model or on non-DoRA LoRA adapters run
together with PEFT's mixed-batch `adapter_names=[...]` ("__base__" for base rows); PEFT refuses
`adapter_names` with DoRA adapters, so each DoRA adapter's rows run as a batch of their own
after `set_adapter()`. Requests arriving during a batch wait for the next one.

Tokens stream out as the batch decodes them (a batch streamer), so TTFT is the batch's prefill
plus its first step and includes any wait for the batch in flight. `ignore_eos` suppresses EOS
for that row (a logits processor). Greedy only: temperature must be absent or 0.

Routes: POST /v1/completions (prompt: a string or a list of token ids; stream and
stream_options.include_usage), GET /v1/models, GET /health.
Run it in the peers venv (torch >= 2): see loadtest/peers/start_peer.sh.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList,
                          StoppingCriteria, StoppingCriteriaList)
from transformers.generation.streamers import BaseStreamer

BASE = "__base__"
_END = object()


class Row:
    def __init__(self, ids: list[int], adapter: str, max_tokens: int, ignore_eos: bool):
        self.ids = ids
        self.adapter = adapter  # BASE or an adapter name
        self.max_tokens = max_tokens
        self.ignore_eos = ignore_eos
        self.out: queue.Queue = queue.Queue()  # ints, then (_END, finish_reason) or an Exception
        self.gone = False  # the client went away: the batch may stop early when all rows have
        self.enqueued = time.monotonic()


class RowStreamer(BaseStreamer):
    """Receives each decoding step's tokens for the whole batch and hands them to the rows."""

    def __init__(self, rows: list[Row], eos_ids: set[int]):
        self.rows = rows
        self.eos_ids = eos_ids
        self.prompt_seen = False
        self.count = [0] * len(rows)
        self.done = [False] * len(rows)

    def put(self, value):
        if not self.prompt_seen:  # the first call carries the prompts
            self.prompt_seen = True
            return
        toks = value.reshape(-1).tolist()
        for i, (row, t) in enumerate(zip(self.rows, toks)):
            if self.done[i]:
                continue
            if t in self.eos_ids and not row.ignore_eos:
                self.done[i] = True
                row.out.put((_END, "stop"))
                continue
            row.out.put(t)
            self.count[i] += 1
            if self.count[i] >= row.max_tokens:
                self.done[i] = True
                row.out.put((_END, "length"))

    def end(self):
        for i, row in enumerate(self.rows):
            if not self.done[i]:
                self.done[i] = True
                row.out.put((_END, "length" if self.count[i] >= row.max_tokens else "stop"))


class NoEos(LogitsProcessor):
    def __init__(self, mask: torch.Tensor, eos_ids: list[int]):
        self.mask = mask  # bool [batch]: rows whose EOS is suppressed
        self.eos_ids = eos_ids

    def __call__(self, input_ids, scores):
        if self.mask.any():
            for e in self.eos_ids:
                scores[self.mask, e] = float("-inf")
        return scores


class AllGone(StoppingCriteria):
    """Stops the batch once every row is finished or its client has gone."""

    def __init__(self, streamer: RowStreamer):
        self.streamer = streamer

    def __call__(self, input_ids, scores, **kw):
        done = all(d or r.gone for d, r in zip(self.streamer.done, self.streamer.rows))
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool)


class Engine:
    def __init__(self, args):
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
        self.tok = AutoTokenizer.from_pretrained(args.model)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        eos = self.tok.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        base = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=getattr(torch, args.dtype))
        gen_eos = base.generation_config.eos_token_id
        if gen_eos is not None:
            for e in [gen_eos] if isinstance(gen_eos, int) else gen_eos:
                if e not in self.eos_ids:
                    self.eos_ids.append(e)
        self.model = base
        self.adapters: dict[str, bool] = {}  # name -> is DoRA
        if args.lora_modules:
            from peft import PeftModel

            for i, spec in enumerate(args.lora_modules):
                name, path = spec.split("=", 1)
                if i == 0:
                    self.model = PeftModel.from_pretrained(base, path, adapter_name=name)
                else:
                    self.model.load_adapter(path, adapter_name=name)
                cfg = self.model.peft_config[name]
                self.adapters[name] = bool(getattr(cfg, "use_dora", False))
        self.model.eval()
        self.batch_size = args.batch_size
        self.window = args.window_ms / 1000.0
        self.q: queue.Queue[Row] = queue.Queue()
        self.batches = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, row: Row) -> None:
        self.q.put(row)

    def _loop(self):
        while True:
            rows = [self.q.get()]
            deadline = time.monotonic() + self.window
            while len(rows) < self.batch_size:
                left = deadline - time.monotonic()
                try:
                    rows.append(self.q.get(timeout=left) if left > 0 else self.q.get_nowait())
                except queue.Empty:
                    break
            mixable = [r for r in rows if r.adapter == BASE or not self.adapters.get(r.adapter)]
            groups = [mixable] if mixable else []
            for name in sorted({r.adapter for r in rows if r not in mixable}):
                groups.append([r for r in rows if r.adapter == name])
            for g in groups:
                try:
                    self._run(g)
                except Exception as e:  # hand the error to every waiting row
                    for r in g:
                        r.out.put(e)
            self.batches += 1

    @torch.inference_mode()
    def _run(self, rows: list[Row]):
        n = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding
            ids[i, n - len(r.ids):] = torch.tensor(r.ids, dtype=torch.long)
            mask[i, n - len(r.ids):] = 1
        kw = {}
        names = {r.adapter for r in rows}
        if self.adapters:
            if any(self.adapters.get(a) for a in names):  # one DoRA adapter, alone
                self.model.set_adapter(next(iter(names)))
            else:
                kw["adapter_names"] = [r.adapter for r in rows]
        no_eos = torch.tensor([r.ignore_eos for r in rows], dtype=torch.bool)
        streamer = RowStreamer(rows, set(self.eos_ids))
        self.model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max(r.max_tokens for r in rows),
            do_sample=False, pad_token_id=self.pad_id, streamer=streamer,
            logits_processor=LogitsProcessorList([NoEos(no_eos, self.eos_ids)]),
            stopping_criteria=StoppingCriteriaList([AllGone(streamer)]), **kw)
        streamer.end()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine: Engine
    served: str
    api_key: str | None

    def log_message(self, fmt, *args):
        pass

    def _json(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, msg: str, param: str | None = None) -> None:
        self._json(code, {"error": {"message": msg, "type": "invalid_request_error", "param": param, "code": code}})

    def _authorized(self) -> bool:
        if not self.api_key or self.headers.get("Authorization") == f"Bearer {self.api_key}":
            return True
        self._error(401, "missing or wrong API key")
        return False

    def do_GET(self):
        if self.path == "/health":
            return self._json(200, {"status": "ok", "batches": self.engine.batches})
        if self.path == "/v1/models":
            if not self._authorized():
                return
            names = [self.served] + list(self.engine.adapters)
            return self._json(200, {"object": "list", "data": [
                {"id": n, "object": "model", "owned_by": "peft_server", "parent": None if n == self.served else self.served}
                for n in names]})
        self._error(404, f"no route {self.path}")

    def do_POST(self):
        if self.path != "/v1/completions":
            return self._error(404, f"no route {self.path}")
        if not self._authorized():
            return
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        except (ValueError, json.JSONDecodeError):
            return self._error(400, "body is not JSON")
        model = req.get("model", self.served)
        if model == self.served:
            adapter = BASE
        elif model in self.engine.adapters:
            adapter = model
        else:
            return self._error(404, f"model {model!r} not found", "model")
        if float(req.get("temperature") or 0) != 0:
            return self._error(400, "peft_server is greedy only: temperature must be 0", "temperature")
        prompt = req.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (list, str)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = self.engine.tok(prompt, add_special_tokens=False)["input_ids"]
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            ids = prompt
        else:
            return self._error(400, "prompt must be a string or one non-empty list of token ids", "prompt")
        if not ids:
            return self._error(400, "empty prompt", "prompt")
        max_tokens = int(req.get("max_tokens") or 16)
        if max_tokens < 1:
            return self._error(400, "max_tokens must be >= 1", "max_tokens")
        row = Row(list(ids), adapter, max_tokens, bool(req.get("ignore_eos", False)))
        self.engine.submit(row)
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        stream = bool(req.get("stream"))
        usage_wanted = bool((req.get("stream_options") or {}).get("include_usage"))
        toks: list[int] = []
        sent = ""
        if stream:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

        def chunk(obj) -> None:
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        finish = None
        while True:
            item = row.out.get()
            if isinstance(item, Exception):
                if stream:
                    chunk({"error": {"message": str(item), "type": "server_error", "code": 500}})
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                return self._json(500, {"error": {"message": str(item), "type": "server_error", "code": 500}})
            if isinstance(item, tuple):
                finish = item[1]
                break
            toks.append(item)
            if stream:
                text = self.engine.tok.decode(toks, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # half a UTF-8 character: wait for the rest
                    delta = ""
                else:
                    delta, sent = text[len(sent):], text
                try:
                    chunk({"id": cid, "object": "text_completion", "created": created, "model": model,
                           "choices": [{"index": 0, "text": delta, "logprobs": None, "finish_reason": None}]})
                except (BrokenPipeError, ConnectionResetError):
                    row.gone = True  # the batch stops early once all its rows are gone
                    return
        text = self.engine.tok.decode(toks, skip_special_tokens=True)
        usage = {"prompt_tokens": len(ids), "completion_tokens": len(toks), "total_tokens": len(ids) + len(toks)}
        if stream:
            try:
                chunk({"id": cid, "object": "text_completion", "created": created, "model": model,
                       "choices": [{"index": 0, "text": text[len(sent):], "logprobs": None, "finish_reason": finish}]})
                if usage_wanted:
                    chunk({"id": cid, "object": "text_completion", "created": created, "model": model,
                           "choices": [], "usage": usage})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        self._json(200, {"id": cid, "object": "text_completion", "created": created, "model": model,
                         "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
                         "usage": usage})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF model folder")
    p.add_argument("--served-model-name", default="smollm2")
    p.add_argument("--lora-modules", nargs="*", default=[], metavar="NAME=PATH", help="PEFT adapter folders")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--window-ms", type=float, default=20.0, help="how long to gather a batch after its first request")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--api-key", default=os.environ.get("PEFT_SERVER_API_KEY"))
    args = p.parse_args(argv)
    Handler.engine = Engine(args)
    Handler.served = args.served_model_name
    Handler.api_key = args.api_key
    ThreadingHTTPServer.request_queue_size = 1024  # the default backlog of 5 drops a burst of 64
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    print(f"peft_server: {args.served_model_name} + {dict(Handler.engine.adapters)} (name: is DoRA) on "
          f"http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
