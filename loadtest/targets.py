"""The servers a load test can drive, behind one interface: send one RequestSpec, fill one
RequestRecord.

- GrpcTarget: loraserve's gRPC API (GenerateStream), with the server's own timings.
- OpenAiTarget: any OpenAI-compatible HTTP server (loraserve's, vLLM's, llama.cpp's
  llama-server, LoRAX) through streamed /v1/completions. The adapter goes in `model` (vLLM,
  loraserve, LoRAX), or as llama-server's per-request `lora` list (adapter i of the list = the
  i-th --lora the server was started with). A weighted mix is LoRAX's `merged_adapters`
  (loraserve) or two `lora` entries with the weights as scales (llama-server).

Every request is greedy and runs to its max_tokens (`ignore_eos`), so all systems do the same
work. A record's status is "OK", a gRPC code name, "HTTP_<code>", or a client-side outcome
(TIMEOUT, CONNECTION_ERROR, CANCELLED, PROTOCOL_ERROR).
"""
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import List, Optional

from workload import RequestSpec


@dataclass
class RequestRecord:
    index: int
    label: str  # adapter id, "<base>" or "mix:a+b"
    sent_at_s: float = 0.0  # seconds after the start of the run
    warmup: bool = False  # sent during the warm-up: not in the summary
    status: str = "OK"
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    client_ttft_s: Optional[float] = None  # send -> first token
    client_total_s: Optional[float] = None  # send -> end of the stream
    # Gaps between token-carrying messages, each split evenly over the tokens it carries.
    itl_s: List[float] = field(default_factory=list)
    server_queued_s: Optional[float] = None  # gRPC only: the server's own timings
    server_ttft_s: Optional[float] = None
    server_total_s: Optional[float] = None

    @property
    def tpot_s(self) -> Optional[float]:
        """Mean time per output token after the first (vLLM's TPOT)."""
        if self.client_total_s is None or self.client_ttft_s is None or \
                self.completion_tokens < 2:
            return None
        return (self.client_total_s - self.client_ttft_s) / (self.completion_tokens - 1)


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),) if token else None


class GrpcTarget:
    kind = "grpc"

    def __init__(self, address: str, stubs, inference_token: str = "", timeout: float = 120.0):
        import grpc

        self._grpc = grpc
        self.address = address
        self.stubs = stubs
        self.token = inference_token
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = stubs.inference_pb2_grpc.InferenceStub(self.channel)

    async def close(self):
        await self.channel.close()

    async def model_info(self, ready_timeout: float):
        """GetModelInfo once the server serves (UNAVAILABLE while the model loads)."""
        grpc = self._grpc
        deadline = time.monotonic() + ready_timeout
        while True:
            left = max(deadline - time.monotonic(), 0.01)
            try:
                await asyncio.wait_for(self.channel.channel_ready(), timeout=left)
                return await self.stub.GetModelInfo(
                    self.stubs.inference_pb2.GetModelInfoRequest(), metadata=bearer(self.token),
                    timeout=left)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.2)

    async def describe(self, ready_timeout: float) -> dict:
        info = await self.model_info(ready_timeout)
        return {"vocab_size": info.vocab_size, "eos_token_ids": list(info.eos_token_ids),
                "model": info.model_path, "architecture": info.architecture}

    async def send(self, spec: RequestSpec, record: RequestRecord, sent: float):
        pb = self.stubs.inference_pb2
        request = pb.GenerateRequest(token_ids=pb.TokenIds(ids=spec.prompt_ids),
                                     max_tokens=spec.max_tokens, ignore_eos=True)
        if spec.mix:
            request.mix.CopyFrom(pb.AdapterMix(adapters=[
                pb.WeightedAdapter(adapter_id=a, weight=w) for a, w in spec.mix]))
        elif spec.adapter is not None:
            request.adapter_id = spec.adapter
        record.prompt_tokens = len(spec.prompt_ids)
        last, call = None, None
        try:
            call = self.stub.GenerateStream(request, timeout=self.timeout,
                                            metadata=bearer(self.token))
            async for message in call:
                now = time.perf_counter()
                n = len(message.token_ids)
                if n:
                    if last is None:
                        record.client_ttft_s = now - sent
                    else:
                        record.itl_s.extend([(now - last) / n] * n)
                    last = now
                if message.HasField("final"):
                    final = message.final
                    record.completion_tokens = final.usage.completion_tokens
                    record.finish_reason = pb.FinishReason.Name(final.finish_reason)
                    record.server_queued_s = final.timings.queued_seconds
                    record.server_ttft_s = final.timings.first_token_seconds
                    record.server_total_s = final.timings.total_seconds
            record.client_total_s = time.perf_counter() - sent
        except self._grpc.aio.AioRpcError as error:
            record.status, record.error = error.code().name, error.details() or ""
        except asyncio.CancelledError:
            if call is not None:
                call.cancel()
            record.status, record.error = "CANCELLED", "cancelled by the load generator"
            raise


class OpenAiTarget:
    kind = "openai"

    def __init__(self, url: str, model: str = "", api_key: str = "", adapter_via: str = "model",
                 adapters=(), timeout: float = 120.0, max_connections: int = 512):
        import httpx

        if adapter_via not in ("model", "llamacpp"):
            raise ValueError(f"--adapter-via: '{adapter_via}' is not model or llamacpp")
        self._httpx = httpx
        self.url = url.rstrip("/")
        self.model = model
        self.adapter_via = adapter_via
        self.lora_ids = {a: i for i, a in enumerate(adapters)}
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            base_url=self.url, headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections))

    async def close(self):
        await self.client.aclose()

    async def describe(self, ready_timeout: float) -> dict:
        """Waits for GET /v1/models to answer 200; the first model is the base unless --model
        names one. The vocabulary is not in the OpenAI API: prompts use ids below 1000, which
        every tokenizer of interest has and none uses for EOS except ids 0-2 (avoided)."""
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                response = await self.client.get("/v1/models")
                if response.status_code == 200:
                    models = [m["id"] for m in response.json().get("data", [])]
                    break
                error = f"HTTP {response.status_code}: {response.text[:200]}"
            except self._httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
            if time.monotonic() >= deadline:
                raise ConnectionError(f"{self.url}/v1/models did not answer 200 within "
                                      f"{ready_timeout:g} s ({error})")
            await asyncio.sleep(0.5)
        if not self.model:
            if not models:
                raise ConnectionError(f"{self.url}/v1/models lists no model; give --model")
            self.model = models[0]
        return {"vocab_size": 1000, "eos_token_ids": [0, 1, 2], "model": self.model,
                "models_listed": models}

    def body(self, spec: RequestSpec) -> dict:
        body = {"model": self.model, "prompt": list(spec.prompt_ids),
                "max_tokens": spec.max_tokens, "temperature": 0, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}}
        if self.adapter_via == "llamacpp":
            if spec.mix:
                body["lora"] = [{"id": self.lora_ids[a], "scale": w} for a, w in spec.mix]
            elif spec.adapter is not None:
                body["lora"] = [{"id": self.lora_ids[spec.adapter], "scale": 1.0}]
            else:
                body["lora"] = []
        elif spec.mix:
            body["merged_adapters"] = {"ids": [a for a, _ in spec.mix],
                                       "weights": [w for _, w in spec.mix]}
        elif spec.adapter is not None:
            body["model"] = spec.adapter
        return body

    async def send(self, spec: RequestSpec, record: RequestRecord, sent: float):
        httpx = self._httpx
        record.prompt_tokens = len(spec.prompt_ids)
        chunks = []  # arrival times of chunks carrying text
        try:
            async with self.client.stream("POST", "/v1/completions",
                                          json=self.body(spec)) as response:
                if response.status_code != 200:
                    text = (await response.aread()).decode(errors="replace")
                    record.status = f"HTTP_{response.status_code}"
                    record.error = text[:300]
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event:
                        record.status = "STREAM_ERROR"
                        record.error = json.dumps(event["error"])[:300]
                        return
                    now = time.perf_counter()
                    for choice in event.get("choices") or []:
                        if choice.get("text"):
                            chunks.append(now)
                        if choice.get("finish_reason"):
                            record.finish_reason = choice["finish_reason"]
                    usage = event.get("usage")
                    if usage:
                        record.completion_tokens = usage.get("completion_tokens", 0)
            record.client_total_s = time.perf_counter() - sent
        except httpx.TimeoutException as error:
            record.status, record.error = "TIMEOUT", str(error)[:300]
            return
        except (httpx.HTTPError, json.JSONDecodeError) as error:
            record.status = "CONNECTION_ERROR" if isinstance(error, httpx.TransportError) \
                else "PROTOCOL_ERROR"
            record.error = f"{type(error).__name__}: {error}"[:300]
            return
        except asyncio.CancelledError:
            record.status, record.error = "CANCELLED", "cancelled by the load generator"
            raise
        if chunks:
            record.client_ttft_s = chunks[0] - sent
            if not record.completion_tokens:
                record.completion_tokens = len(chunks)
            # Servers that coalesce tokens send fewer chunks than tokens: each gap is split
            # over the tokens a chunk carries on average.
            per_chunk = max(record.completion_tokens - 1, 1) / max(len(chunks) - 1, 1)
            for before, after in zip(chunks, chunks[1:]):
                record.itl_s.extend([(after - before) / per_chunk] * max(round(per_chunk), 1))
