#!/usr/bin/env python3
"""Open-loop load generator for loraserve: Poisson arrivals over many adapters with Zipf
popularity, every request streamed (GenerateStream), a JSON report plus a text table.

Requests are sent on a schedule fixed up front (workload.py), never waiting for replies; when
--max-in-flight requests are outstanding a due request is not sent and is counted as dropped,
so neither the run time nor the client's memory grows with a slow server. All requests go to
the one address given by --server.
"""
import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from protos import load_stubs  # noqa: E402
from report import BASE_LABEL, format_table, summarize, write_plot  # noqa: E402
from workload import expected_shares, plan_arrivals  # noqa: E402

STATS_DELTA_FIELDS = ("adapter_loads", "adapter_evictions", "adapter_hits", "adapter_misses",
                      "preemptions", "generated_tokens", "steps", "merge_switches")


@dataclass
class RequestRecord:
    index: int
    adapter: Optional[str]
    sent_at_s: float  # actual send time, seconds after the test start
    status: str = "OK"  # gRPC status code name
    error: str = ""
    completion_tokens: int = 0
    finish_reason: str = ""
    client_ttft_s: Optional[float] = None  # send -> first message carrying a token
    client_total_s: Optional[float] = None  # send -> end of stream
    # Gap between consecutive token-carrying messages, divided evenly over the tokens the later
    # message carries (the server coalesces tokens sampled while a write is in flight).
    itl_s: list = field(default_factory=list)
    server_queued_s: Optional[float] = None
    server_ttft_s: Optional[float] = None
    server_total_s: Optional[float] = None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="HOST:PORT of `loraserve serve`")
    p.add_argument("--adapters", default="", help="comma list, most popular first")
    p.add_argument("--adapter-count", type=int, default=0,
                   help="use the first N adapters (of --adapters, or of the server's sorted "
                        "ListAdapters when --adapters is empty; needs --admin-token)")
    p.add_argument("--admin-token", default=os.environ.get("LORASERVE_ADMIN_TOKEN", ""),
                   help="admin bearer token: adapter discovery and engine stats (default env "
                        "LORASERVE_ADMIN_TOKEN)")
    p.add_argument("--inference-token", default=os.environ.get("LORASERVE_INFERENCE_TOKEN", ""),
                   help="inference bearer token, when the server requires one")
    p.add_argument("--rate", type=float, required=True, help="offered load, requests/s")
    p.add_argument("--duration", type=float, required=True,
                   help="seconds during which requests are sent")
    p.add_argument("--zipf-s", type=float, default=1.1, help="adapter popularity exponent")
    p.add_argument("--base-fraction", type=float, default=0.0,
                   help="share of requests for the bare base model")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=32,
                   help="tokens generated per request (ignore_eos, so exactly this many)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-in-flight", type=int, default=256,
                   help="outstanding requests at most; due requests beyond it are dropped")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request deadline, seconds")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="after --duration, seconds to wait for in-flight requests before "
                        "cancelling them")
    p.add_argument("--ready-timeout", type=float, default=60.0,
                   help="seconds to wait for the server to connect and finish loading")
    p.add_argument("--out", default="", help="JSON report path")
    p.add_argument("--plot", default="", help="PNG path (needs gnuplot)")
    p.add_argument("--stub-cache", default="", help="where generated gRPC stubs are cached")
    args = p.parse_args(argv)
    if args.max_in_flight < 1 or args.max_tokens < 1 or args.timeout <= 0:
        p.error("--max-in-flight, --max-tokens and --timeout must be positive")
    return args


def metadata(token: str):
    return (("authorization", f"Bearer {token}"),) if token else None


async def resolve_adapters(args, stubs, channel) -> list:
    adapters = [a for a in args.adapters.split(",") if a]
    if not adapters and args.adapter_count > 0:
        if not args.admin_token:
            raise SystemExit("--adapter-count without --adapters needs --admin-token to list "
                             "the server's adapters")
        admin = stubs.admin_pb2_grpc.AdminStub(channel)
        listed = await admin.ListAdapters(stubs.admin_pb2.ListAdaptersRequest(),
                                          metadata=metadata(args.admin_token), timeout=30)
        adapters = [a.id for a in listed.adapters]
    if args.adapter_count > 0:
        if len(adapters) < args.adapter_count:
            raise SystemExit(f"--adapter-count {args.adapter_count} but only {len(adapters)} "
                             f"adapters available: {', '.join(adapters) or 'none'}")
        adapters = adapters[:args.adapter_count]
    return adapters


async def engine_stats(args, stubs, channel) -> Optional[dict]:
    if not args.admin_token:
        return None
    admin = stubs.admin_pb2_grpc.AdminStub(channel)
    stats = await admin.GetStats(stubs.admin_pb2.GetStatsRequest(),
                                 metadata=metadata(args.admin_token), timeout=30)
    return {name: getattr(stats, name) for name in STATS_DELTA_FIELDS}


async def one_request(stub, pb, args, arrival, record: RequestRecord, start: float):
    request = pb.GenerateRequest(token_ids=pb.TokenIds(ids=arrival.prompt_ids),
                                 max_tokens=args.max_tokens, ignore_eos=True)
    if arrival.adapter is not None:
        request.adapter_id = arrival.adapter
    sent = time.perf_counter()
    record.sent_at_s = sent - start
    last_token_at, call = None, None
    try:
        call = stub.GenerateStream(request, timeout=args.timeout,
                                   metadata=metadata(args.inference_token))
        async for message in call:
            now = time.perf_counter()
            n = len(message.token_ids)
            if n:
                if last_token_at is None:
                    record.client_ttft_s = now - sent
                else:
                    record.itl_s.extend([(now - last_token_at) / n] * n)
                last_token_at = now
            if message.HasField("final"):
                final = message.final
                record.completion_tokens = final.usage.completion_tokens
                record.finish_reason = pb.FinishReason.Name(final.finish_reason)
                record.server_queued_s = final.timings.queued_seconds
                record.server_ttft_s = final.timings.first_token_seconds
                record.server_total_s = final.timings.total_seconds
        record.client_total_s = time.perf_counter() - sent
    except grpc.aio.AioRpcError as error:
        record.status, record.error = error.code().name, error.details() or ""
    except asyncio.CancelledError:
        if call is not None:
            call.cancel()
        record.status, record.error = "CANCELLED", "cancelled by the load generator at drain"


async def drive(args, stubs, channel, plan) -> tuple:
    """Sends the plan on schedule; returns (records, dropped, elapsed seconds)."""
    stub = stubs.inference_pb2_grpc.InferenceStub(channel)
    pb = stubs.inference_pb2
    records, in_flight, dropped = [], set(), 0
    start = time.perf_counter()
    for i, arrival in enumerate(plan):
        delay = arrival.at - (time.perf_counter() - start)
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= args.max_in_flight:
            dropped += 1
            continue
        record = RequestRecord(index=i, adapter=arrival.adapter, sent_at_s=arrival.at)
        records.append(record)
        task = asyncio.create_task(one_request(stub, pb, args, arrival, record, start))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    remaining = args.duration - (time.perf_counter() - start)
    if remaining > 0:
        await asyncio.sleep(remaining)
    if in_flight:
        _, pending = await asyncio.wait(set(in_flight), timeout=args.drain_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    ends = [r.sent_at_s + r.client_total_s for r in records if r.client_total_s is not None]
    elapsed = max([args.duration, *ends])
    return records, dropped, elapsed


async def wait_ready(args, stubs, channel):
    """GetModelInfo once the server serves: it is UNAVAILABLE while the model loads."""
    stub = stubs.inference_pb2_grpc.InferenceStub(channel)
    deadline = time.monotonic() + args.ready_timeout
    while True:
        left = deadline - time.monotonic()
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=max(left, 0.01))
            return await stub.GetModelInfo(stubs.inference_pb2.GetModelInfoRequest(),
                                           metadata=metadata(args.inference_token),
                                           timeout=max(left, 0.01))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(0.2)


async def run(args) -> dict:
    stubs = load_stubs(args.stub_cache)
    async with grpc.aio.insecure_channel(args.server) as channel:
        info = await wait_ready(args, stubs, channel)
        adapters = await resolve_adapters(args, stubs, channel)
        plan = plan_arrivals(rate=args.rate, duration=args.duration, adapters=adapters,
                             zipf_s=args.zipf_s, base_fraction=args.base_fraction,
                             prompt_tokens=args.prompt_tokens, vocab_size=info.vocab_size,
                             avoid_ids=info.eos_token_ids, seed=args.seed)
        before = await engine_stats(args, stubs, channel)
        records, dropped, elapsed = await drive(args, stubs, channel, plan)
        after = await engine_stats(args, stubs, channel)
    config = {k: v for k, v in vars(args).items() if k not in ("admin_token", "inference_token")}
    config.update(adapters=adapters, duration_s=args.duration, model_path=info.model_path,
                  model_architecture=info.architecture)
    as_dicts = [asdict(r) for r in records]
    report = {"config": config, "planned": len(plan), "dropped_at_cap": dropped,
              "summary": summarize(as_dicts, elapsed, expected_shares(
                  adapters, args.zipf_s, args.base_fraction, BASE_LABEL)),
              "requests": as_dicts}
    if before is not None and after is not None:
        report["server_stats_delta"] = {k: after[k] - before[k] for k in STATS_DELTA_FIELDS}
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = asyncio.run(run(args))
    except asyncio.TimeoutError:
        print(f"error: no loraserve answered at {args.server} within --ready-timeout "
              f"{args.ready_timeout:g} s: is it running and listening there?", file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as error:
        print(f"error: {args.server} answered {error.code().name}: {error.details()}",
              file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, allow_nan=False)
        print(f"\nreport written to {args.out}")
    if args.plot:
        print(write_plot(report, os.path.abspath(args.plot)))
    failed = report["summary"]["requests"] - report["summary"]["ok"]
    return 0 if failed == 0 and report["dropped_at_cap"] == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
