#!/usr/bin/env python3
"""Load generator for loraserve and OpenAI-compatible servers (vLLM, llama.cpp, LoRAX):
open loop (Poisson rate) or closed loop (N users), many adapters with uniform or Zipf
popularity, streamed requests, a JSON summary, a per-request CSV and a text table.

  gRPC (loraserve):  loadtest.py --server 127.0.0.1:50051 --adapters a,b --rate 5 --duration 30
  OpenAI HTTP:       loadtest.py --url http://127.0.0.1:8000 --adapters a,b --concurrency 64 \\
                         --count 256 --out-dir out/

See loadtest/README.md for every flag and what is measured.
"""
import argparse
import asyncio
import json
import os
import signal
import sys
from dataclasses import asdict
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import adapters_setup  # noqa: E402
from drivers import Progress, run_closed_loop, run_open_loop  # noqa: E402
from protos import load_stubs  # noqa: E402
from report import format_table, measurement_window, summarize, write_csv  # noqa: E402
from targets import GrpcTarget, OpenAiTarget, bearer  # noqa: E402
from workload import (LengthSpec, Workload, plan_from_trace, plan_open_loop,  # noqa: E402
                      read_trace)

STATS_DELTA_FIELDS = ("adapter_loads", "adapter_evictions", "adapter_hits", "adapter_misses",
                      "preemptions", "generated_tokens", "steps", "merge_switches")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[3:]))
    g = p.add_argument_group("target")
    g.add_argument("--target", choices=("grpc", "openai"),
                   help="default: grpc with --server, openai with --url")
    g.add_argument("--server", default="", help="HOST:PORT of loraserve's gRPC API")
    g.add_argument("--url", default="", help="base URL of an OpenAI-compatible server")
    g.add_argument("--model", default="",
                   help="openai: the `model` of base requests (default: the first listed)")
    g.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""),
                   help="openai: bearer key (default env OPENAI_API_KEY)")
    g.add_argument("--adapter-via", default="model", choices=("model", "llamacpp"),
                   help="openai: adapter as `model` (vLLM, loraserve, LoRAX) or as "
                        "llama-server's per-request `lora` list (adapter i = its i-th --lora)")
    g.add_argument("--inference-token", default=os.environ.get("LORASERVE_INFERENCE_TOKEN", ""),
                   help="grpc: inference bearer token")
    g.add_argument("--admin-token", default=os.environ.get("LORASERVE_ADMIN_TOKEN", ""),
                   help="loraserve admin token: adapter discovery, --create-adapters, engine "
                        "stats (default env LORASERVE_ADMIN_TOKEN)")
    g.add_argument("--admin-server", default="",
                   help="loraserve gRPC HOST:PORT for admin calls (default --server)")
    g = p.add_argument_group("adapters")
    g.add_argument("--adapters", default="", help="comma list, most popular first")
    g.add_argument("--adapter-count", type=int, default=0,
                   help="the first N of --adapters, or of the server's ListAdapters by id")
    g.add_argument("--create-adapters", type=int, default=0,
                   help="loraserve: generate and upload N adapters first, remove them after")
    g.add_argument("--create-rank", type=int, default=8)
    g.add_argument("--create-targets", default="q_proj,v_proj")
    g.add_argument("--create-prefix", default="lt-gen-")
    g.add_argument("--keep-created", action="store_true",
                   help="leave the created adapters on the server (a sweep reuses them)")
    g.add_argument("--model-config", default="",
                   help="config.json of the served model, for --create-adapters (default: "
                        "the server's model folder, readable on loopback)")
    g.add_argument("--popularity", choices=("zipf", "uniform"), default="zipf")
    g.add_argument("--zipf-s", type=float, default=1.0, help="Zipf exponent (weight 1/i^s)")
    g.add_argument("--base-fraction", type=float, default=0.0,
                   help="share of requests for the bare base model")
    g.add_argument("--mix-fraction", type=float, default=0.0,
                   help="share sent as a weighted mix of two adapters")
    g = p.add_argument_group("load")
    g.add_argument("--rate", type=float, default=0.0, help="open loop: requests/s (Poisson)")
    g.add_argument("--concurrency", type=int, default=0, help="closed loop: users")
    g.add_argument("--think-time", type=float, default=0.0,
                   help="closed loop: seconds a user waits between requests")
    g.add_argument("--duration", type=float, default=None,
                   help="seconds of measured load (after the warm-up)")
    g.add_argument("--count", type=int, default=None, help="measured requests to send")
    g.add_argument("--warmup", type=float, default=0.0,
                   help="seconds of load before measuring (left out of the summary)")
    g.add_argument("--prompt-tokens", default="32", help="N or uniform:LOW:HIGH")
    g.add_argument("--max-tokens", default="32",
                   help="tokens generated per request, N or uniform:LOW:HIGH (ignore_eos)")
    g.add_argument("--trace", default="",
                   help="CSV/JSONL of arrival,adapter,prompt_tokens,output_tokens (open loop)")
    g.add_argument("--trace-time-scale", type=float, default=1.0)
    g.add_argument("--vocab-size", type=int, default=0,
                   help="prompt ids are drawn below this (default: the model's; 1000 on HTTP)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-in-flight", type=int, default=512,
                   help="open loop: a due request beyond this many outstanding is dropped")
    g.add_argument("--timeout", type=float, default=120.0, help="per-request deadline, s")
    g.add_argument("--drain-timeout", type=float, default=60.0,
                   help="after the bound, seconds for outstanding requests before cancelling")
    g.add_argument("--ready-timeout", type=float, default=60.0)
    g = p.add_argument_group("results")
    g.add_argument("--ttft-slo-ms", type=float, default=None, help="goodput: TTFT bound")
    g.add_argument("--tpot-slo-ms", type=float, default=None,
                   help="goodput: bound on a request's mean time per output token")
    g.add_argument("--label", default="", help="name of this run in tables and sweeps")
    g.add_argument("--out-dir", default="",
                   help="writes summary.json, requests.csv and requests.jsonl there")
    g.add_argument("--out", default="", help="one JSON file with the summary and every request")
    g.add_argument("--plot", default="", help="PNG of latency over time and CDFs (gnuplot)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="live progress line on stderr (default: when stderr is a terminal)")
    g.add_argument("--stub-cache", default="", help="where generated gRPC stubs are cached")
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if not args.target:
        args.target = "openai" if args.url and not args.server else "grpc"
    if args.target == "grpc" and not args.server:
        p.error("--target grpc needs --server HOST:PORT")
    if args.target == "openai" and not args.url:
        p.error("--target openai needs --url")
    if (args.rate > 0) == (args.concurrency > 0) and not args.trace:
        p.error("give exactly one of --rate (open loop) and --concurrency (closed loop)")
    if args.trace and args.concurrency:
        p.error("--trace fixes arrival times: it is open loop, not --concurrency")
    if args.duration is None and args.count is None and not args.trace:
        p.error("bound the run with --duration SECONDS or --count N")
    if (args.duration is not None and args.duration <= 0) or \
            (args.count is not None and args.count < 1) or args.warmup < 0:
        p.error("--duration and --count must be positive, --warmup non-negative")
    if args.max_in_flight < 1 or args.timeout <= 0:
        p.error("--max-in-flight and --timeout must be positive")
    try:
        args.prompt_spec = LengthSpec.parse(args.prompt_tokens, "--prompt-tokens")
        args.output_spec = LengthSpec.parse(args.max_tokens, "--max-tokens")
    except ValueError as error:
        p.error(str(error))
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    return args


class Admin:
    """loraserve's admin API, when a token is given (discovery, stats, created adapters)."""

    def __init__(self, args, stubs):
        import grpc

        self.address = args.admin_server or args.server
        self.token = args.admin_token
        self.stubs = stubs
        self.channel = grpc.aio.insecure_channel(self.address) if self.address and \
            self.token else None

    @property
    def available(self) -> bool:
        return self.channel is not None

    async def list_ids(self) -> List[str]:
        admin = self.stubs.admin_pb2_grpc.AdminStub(self.channel)
        listed = await admin.ListAdapters(self.stubs.admin_pb2.ListAdaptersRequest(),
                                          metadata=bearer(self.token), timeout=60)
        return sorted(a.id for a in listed.adapters)

    async def stats(self) -> Optional[dict]:
        if not self.available:
            return None
        admin = self.stubs.admin_pb2_grpc.AdminStub(self.channel)
        stats = await admin.GetStats(self.stubs.admin_pb2.GetStatsRequest(),
                                     metadata=bearer(self.token), timeout=30)
        return {name: getattr(stats, name) for name in STATS_DELTA_FIELDS}

    async def model_config(self, args) -> dict:
        path = args.model_config
        if not path:
            stub = self.stubs.inference_pb2_grpc.InferenceStub(self.channel)
            info = await stub.GetModelInfo(self.stubs.inference_pb2.GetModelInfoRequest(),
                                           metadata=bearer(args.inference_token), timeout=60)
            path = os.path.join(info.model_path, "config.json")
        try:
            with open(path) as f:
                return json.load(f)
        except OSError as error:
            raise ValueError(f"--create-adapters needs the model's config.json: {error}; give "
                             f"--model-config") from None

    async def close(self):
        if self.channel is not None:
            await self.channel.close()


async def resolve_adapters(args, admin: Admin) -> tuple:
    """(adapters in popularity order, ids this run created)."""
    adapters = [a for a in args.adapters.split(",") if a]
    created = []
    if args.create_adapters > 0:
        if not admin.available:
            raise ValueError("--create-adapters needs --admin-token (and --admin-server with "
                             "--url)")
        config = await admin.model_config(args)
        created, seconds = await adapters_setup.upload_generated(
            admin.channel, admin.stubs, admin.token, config, args.create_adapters,
            prefix=args.create_prefix, rank=args.create_rank,
            targets=[t for t in args.create_targets.split(",") if t], seed=args.seed)
        args.created_upload_s = seconds
        adapters += created
    if not adapters and args.adapter_count > 0:
        if not admin.available:
            raise ValueError("--adapter-count without --adapters needs --admin-token to list "
                             "the server's adapters")
        adapters = await admin.list_ids()
    if args.adapter_count > 0:
        if len(adapters) < args.adapter_count:
            raise ValueError(f"--adapter-count {args.adapter_count} but only {len(adapters)} "
                             f"adapters available")
        adapters = adapters[:args.adapter_count]
    return adapters, created


def make_target(args, stubs, adapters):
    if args.target == "grpc":
        return GrpcTarget(args.server, stubs, args.inference_token, args.timeout)
    return OpenAiTarget(args.url, args.model, args.api_key, args.adapter_via, adapters,
                        args.timeout, max_connections=max(args.concurrency, args.max_in_flight))


async def run(args, stop: Optional[asyncio.Event] = None) -> dict:
    stubs = load_stubs(args.stub_cache) if (args.target == "grpc" or args.admin_token) else None
    admin = Admin(args, stubs) if stubs else None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (NotImplementedError, RuntimeError, ValueError):
        pass  # not the main thread: the caller owns interruption
    created, target = [], None
    try:
        adapters, created = await resolve_adapters(args, admin) if admin else \
            ([a for a in args.adapters.split(",") if a][:args.adapter_count or None], [])
        target = make_target(args, stubs, adapters)
        described = await target.describe(args.ready_timeout)
        vocab = args.vocab_size or described["vocab_size"]
        workload = Workload(adapters=tuple(adapters), prompt_tokens=args.prompt_spec,
                            output_tokens=args.output_spec, vocab_size=vocab,
                            popularity=args.popularity, zipf_s=args.zipf_s,
                            base_fraction=args.base_fraction, mix_fraction=args.mix_fraction,
                            avoid_ids=tuple(described["eos_token_ids"]), seed=args.seed)
        before = await admin.stats() if admin else None
        progress = Progress(args.label or args.target, args.progress)
        if args.trace:
            plan = plan_from_trace(read_trace(args.trace), vocab, described["eos_token_ids"],
                                   args.seed, args.trace_time_scale)
            result = await run_open_loop(target, plan, duration=None,
                                         max_in_flight=args.max_in_flight,
                                         drain_timeout=args.drain_timeout,
                                         warmup_s=args.warmup, stop=stop, progress=progress)
        elif args.rate > 0:
            total = None if args.duration is None else args.warmup + args.duration
            count = None if args.count is None else args.count + round(args.warmup * args.rate)
            plan = plan_open_loop(workload, args.rate, total, count)
            result = await run_open_loop(target, plan, duration=total,
                                         max_in_flight=args.max_in_flight,
                                         drain_timeout=args.drain_timeout,
                                         warmup_s=args.warmup, stop=stop, progress=progress)
        else:
            result = await run_closed_loop(target, workload.requests(),
                                           concurrency=args.concurrency,
                                           think_time=args.think_time, duration=args.duration,
                                           count=args.count, warmup_s=args.warmup,
                                           drain_timeout=args.drain_timeout, stop=stop,
                                           progress=progress)
        after = await admin.stats() if admin else None
    finally:
        if target is not None:
            await target.close()
        if created and not args.keep_created:
            await adapters_setup.remove(admin.channel, stubs, admin.token, created)
        if admin:
            await admin.close()
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    records = [asdict(r) for r in result.records]
    # A duration-bound run is measured over exactly its duration; a count- or trace-bound one
    # until its last measured request ended.
    bound = None if args.duration is None or args.trace or result.interrupted else \
        args.warmup + args.duration
    window = measurement_window(records, args.warmup, bound)
    config = {k: v for k, v in vars(args).items()
              if k not in ("admin_token", "inference_token", "api_key", "prompt_spec",
                           "output_spec", "progress")}
    config.update(adapters=adapters, endpoint=args.server if args.target == "grpc" else args.url,
                  model=described.get("model"), created_adapters=len(created),
                  prompt_tokens=str(args.prompt_spec), max_tokens=str(args.output_spec))
    report = {"config": config, "dropped_at_cap": result.dropped,
              "interrupted": result.interrupted, "elapsed_s": result.elapsed_s,
              "summary": summarize(records, window, workload.expected_shares(),
                                   None if args.ttft_slo_ms is None else args.ttft_slo_ms / 1e3,
                                   None if args.tpot_slo_ms is None else args.tpot_slo_ms / 1e3),
              "requests": records}
    if before is not None and after is not None:
        report["server_stats_delta"] = {k: after[k] - before[k] for k in STATS_DELTA_FIELDS}
    return report


def write_outputs(report: dict, args) -> List[str]:
    written = []
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        summary = {k: v for k, v in report.items() if k != "requests"}
        path = os.path.join(args.out_dir, "summary.json")
        with open(path, "w") as f:
            json.dump(summary, f, indent=1, allow_nan=False)
        write_csv(report["requests"], os.path.join(args.out_dir, "requests.csv"))
        with open(os.path.join(args.out_dir, "requests.jsonl"), "w") as f:
            for r in report["requests"]:
                f.write(json.dumps(r) + "\n")
        written.append(args.out_dir)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, allow_nan=False)
        written.append(args.out)
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = asyncio.run(run(args))
    except (asyncio.TimeoutError, ConnectionError) as error:
        print(f"error: no server answered at {args.server or args.url} within --ready-timeout "
              f"{args.ready_timeout:g} s: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # grpc.aio.AioRpcError from a setup call, RuntimeError
        code = getattr(error, "code", None)
        detail = f"{code().name}: {error.details()}" if callable(code) else str(error)
        print(f"error: {args.server or args.url}: {detail}", file=sys.stderr)
        return 1
    print(format_table(report))
    for path in write_outputs(report, args):
        print(f"written: {path}")
    if args.plot:
        import plots

        print(plots.run_plot(report, os.path.abspath(args.plot)))
    if report["interrupted"]:
        return 130
    failed = report["summary"]["requests"] - report["summary"]["ok"]
    return 0 if failed == 0 and report["dropped_at_cap"] == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
