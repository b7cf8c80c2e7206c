#!/usr/bin/env python3
"""Sweeps of load-test runs against one server, with plots and a markdown report.

The standard sweep (defaults), each point a closed- or open-loop run of loadtest.py:
  adapters     64 users, Zipf(1.0) over 1, 16, 128, 1024 adapters (+ uniform over the most)
  concurrency  1, 8, 32, 64 users over 16 adapters (Zipf 1.0)
  rate         open loop at 0.25-1.25x the capacity the 64-user, 16-adapter point measured
Adapters are generated and uploaded first (--create-adapters, loraserve's admin API) and
removed at the end. Writes OUT/sweep.json, OUT/REPORT.md, OUT/*.png and OUT/points/NAME/.

  sweep.py --server 127.0.0.1:50051 --admin-token T --out-dir build/sweep
  sweep.py --url http://127.0.0.1:8000 --admin-server 127.0.0.1:50051 --admin-token T ...
"""
import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import adapters_setup  # noqa: E402
import loadtest  # noqa: E402
import plots  # noqa: E402
from protos import load_stubs  # noqa: E402


def ints(text):
    return [int(x) for x in text.split(",") if x]


def floats(text):
    return [float(x) for x in text.split(",") if x]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--server", default="", help="loraserve gRPC HOST:PORT (the target)")
    p.add_argument("--url", default="", help="OpenAI-compatible URL (the target instead)")
    p.add_argument("--admin-server", default="", help="loraserve gRPC for admin (default --server)")
    p.add_argument("--admin-token", default=os.environ.get("LORASERVE_ADMIN_TOKEN", ""))
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""))
    p.add_argument("--inference-token", default=os.environ.get("LORASERVE_INFERENCE_TOKEN", ""))
    p.add_argument("--out-dir", required=True)
    p.add_argument("--adapter-counts", type=ints, default=[1, 16, 128, 1024])
    p.add_argument("--concurrencies", type=ints, default=[1, 8, 32, 64])
    p.add_argument("--rate-factors", type=floats, default=[0.25, 0.5, 0.75, 1.0, 1.25])
    p.add_argument("--users", type=int, default=64, help="users of the adapter series")
    p.add_argument("--rate-adapters", type=int, default=16,
                   help="adapters of the concurrency and rate series")
    p.add_argument("--zipf-s", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=4.0, help="warm-up seconds per point")
    p.add_argument("--prompt-tokens", default="8")
    p.add_argument("--max-tokens", default="32")
    p.add_argument("--create-rank", type=int, default=8)
    p.add_argument("--ttft-slo-ms", type=float, default=2000.0)
    p.add_argument("--tpot-slo-ms", type=float, default=500.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stub-cache", default="")
    p.add_argument("--keep-adapters", action="store_true")
    return p.parse_args(argv)


def machine() -> dict:
    info = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                info["cpu"] = value.strip()
            if key.strip() == "Flags":
                flags = value.split()
                info["avx2"] = "avx2" in flags
                info["avx512f"] = "avx512f" in flags
    except OSError:
        pass
    return info


class Sweep:
    def __init__(self, args):
        self.args = args
        self.points = []  # (series, name, x, report)
        self.adapters = []
        self.started = time.time()

    def common(self) -> list:
        a = self.args
        argv = ["--prompt-tokens", a.prompt_tokens, "--max-tokens", a.max_tokens,
                "--warmup", str(a.warmup), "--duration", str(a.duration), "--seed", str(a.seed),
                "--ttft-slo-ms", str(a.ttft_slo_ms), "--tpot-slo-ms", str(a.tpot_slo_ms),
                "--no-progress"]
        if a.url:
            argv += ["--url", a.url, f"--api-key={a.api_key}"]
        else:
            argv += ["--server", a.server, f"--inference-token={a.inference_token}"]
        if a.admin_token:
            argv += [f"--admin-token={a.admin_token}", "--admin-server",
                     a.admin_server or a.server]
        if a.stub_cache:
            argv += ["--stub-cache", a.stub_cache]
        return argv

    def run_point(self, series: str, name: str, x, extra: list) -> dict:
        out = os.path.join(self.args.out_dir, "points", name)
        argv = self.common() + ["--label", name, "--out-dir", out] + extra
        args = loadtest.parse_args(argv)
        t0 = time.time()
        report = asyncio.run(loadtest.run(args))
        loadtest.write_outputs(report, args)
        s = report["summary"]
        print(f"{name:>24}: {s['throughput_generated_tokens_per_s']:8.1f} tokens/s, "
              f"{s['throughput_requests_per_s']:6.2f} req/s, TTFT p99 "
              f"{(s['client_ttft_s']['p99'] or 0) * 1e3:8.1f} ms, errors "
              f"{sum(s['errors_by_status'].values())} ({time.time() - t0:.0f} s)", flush=True)
        self.points.append((series, name, x, report))
        return report

    async def create(self, count: int) -> float:
        a = self.args
        stubs = load_stubs(a.stub_cache)
        import grpc

        args = loadtest.parse_args(self.common() + ["--concurrency", "1", "--count", "1"])
        async with grpc.aio.insecure_channel(a.admin_server or a.server) as channel:
            admin = loadtest.Admin(args, stubs)
            try:
                config = await admin.model_config(args)
            finally:
                await admin.close()
            ids, seconds = await adapters_setup.upload_generated(
                channel, stubs, a.admin_token, config, count, prefix="sweep-",
                rank=a.create_rank, seed=a.seed)
        self.adapters = ids
        return seconds

    async def remove(self):
        a = self.args
        stubs = load_stubs(a.stub_cache)
        import grpc

        async with grpc.aio.insecure_channel(a.admin_server or a.server) as channel:
            await adapters_setup.remove(channel, stubs, a.admin_token, self.adapters)

    def adapters_arg(self, n: int) -> list:
        return ["--adapters", ",".join(self.adapters[:n])]

    def run(self) -> dict:
        a = self.args
        if not a.admin_token:
            raise SystemExit("the sweep generates its adapters: give --admin-token")
        most = max(a.adapter_counts + [a.rate_adapters])
        load_before = os.getloadavg()
        upload_s = asyncio.run(self.create(most))
        print(f"uploaded {most} generated rank-{a.create_rank} adapters in {upload_s:.1f} s "
              f"({most / upload_s:.1f}/s)", flush=True)
        try:
            for n in a.adapter_counts:
                self.run_point("adapters", f"adapters-{n}-zipf", n,
                               ["--concurrency", str(a.users), "--popularity", "zipf",
                                "--zipf-s", str(a.zipf_s)] + self.adapters_arg(n))
            top = max(a.adapter_counts)
            self.run_point("adapters-uniform", f"adapters-{top}-uniform", top,
                           ["--concurrency", str(a.users), "--popularity", "uniform"] +
                           self.adapters_arg(top))
            capacity = None
            for c in a.concurrencies:
                existing = next((p for p in self.points if p[0] == "adapters" and
                                 p[2] == a.rate_adapters and c == a.users), None)
                if existing:
                    report = existing[3]
                    self.points.append(("concurrency", f"users-{c}", c, report))
                else:
                    report = self.run_point("concurrency", f"users-{c}", c,
                                            ["--concurrency", str(c), "--zipf-s", str(a.zipf_s)]
                                            + self.adapters_arg(a.rate_adapters))
                if c == max(a.concurrencies):
                    capacity = report["summary"]["throughput_requests_per_s"]
            for f in a.rate_factors:
                rate = max(capacity * f, 0.05)
                self.run_point("rate", f"rate-{f:g}x", rate,
                               ["--rate", f"{rate:.3f}", "--zipf-s", str(a.zipf_s)] +
                               self.adapters_arg(a.rate_adapters))
        finally:
            if not a.keep_adapters:
                asyncio.run(self.remove())
        return {"machine": machine(), "load_average_before": load_before,
                "load_average_after": os.getloadavg(), "upload_seconds": upload_s,
                "uploaded_adapters": most, "capacity_requests_per_s": capacity,
                "wall_s": time.time() - self.started,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "args": {k: v for k, v in vars(a).items()
                         if k not in ("admin_token", "api_key", "inference_token")}}


def point_row(series, name, x, report) -> dict:
    s = report["summary"]
    return {"series": series, "name": name, "x": x,
            "tokens_per_s": s["throughput_generated_tokens_per_s"],
            "requests_per_s": s["throughput_requests_per_s"],
            "goodput_requests_per_s": s["goodput_requests_per_s"],
            "slo_attainment": s["slo_attainment"],
            "ttft_p50_ms": (s["client_ttft_s"]["p50"] or 0) * 1e3,
            "ttft_p99_ms": (s["client_ttft_s"]["p99"] or 0) * 1e3,
            "tpot_p50_ms": (s["client_tpot_s"]["p50"] or 0) * 1e3,
            "tpot_p99_ms": (s["client_tpot_s"]["p99"] or 0) * 1e3,
            "requests": s["requests"], "ok": s["ok"], "errors": s["errors_by_status"],
            "server_stats_delta": report.get("server_stats_delta")}


def write_report(out_dir: str, meta: dict, points: list) -> str:
    a = meta["args"]
    rows = [point_row(*p) for p in points]
    by = {}
    for r in rows:
        by.setdefault(r["series"], []).append(r)
    series_records = {name: rep["requests"] for series, name, _, rep in points
                      if series in ("adapters", "adapters-uniform")}
    figures = []

    def figure(file, title, error):
        if not error:
            figures.append((file, title))
        else:
            print(f"{file}: {error}")

    if by.get("adapters"):
        figure("throughput-vs-adapters.png", "tokens/s and p99 TTFT vs adapters",
               plots.versus([(r["x"], r["tokens_per_s"], r["ttft_p99_ms"]) for r in by["adapters"]],
                            os.path.join(out_dir, "throughput-vs-adapters.png"),
                            f"{a['users']} users, Zipf popularity", "adapters", logx=True))
        figure("ttft-cdf-adapters.png", "TTFT CDFs over adapter counts",
               plots.latency_cdfs(series_records, "client_ttft_s",
                                  os.path.join(out_dir, "ttft-cdf-adapters.png"),
                                  f"TTFT, {a['users']} users"))
        figure("tpot-cdf-adapters.png", "TPOT CDFs over adapter counts",
               plots.latency_cdfs(series_records, "client_tpot_s",
                                  os.path.join(out_dir, "tpot-cdf-adapters.png"),
                                  f"time per output token, {a['users']} users"))
        figure("throughput-over-time.png", "tokens/s over time",
               plots.throughput_over_time(series_records,
                                          os.path.join(out_dir, "throughput-over-time.png"),
                                          "tokens/s reaching the client"))
    if by.get("concurrency"):
        figure("throughput-vs-users.png", "tokens/s and p99 TTFT vs users",
               plots.versus([(r["x"], r["tokens_per_s"], r["ttft_p99_ms"])
                             for r in by["concurrency"]],
                            os.path.join(out_dir, "throughput-vs-users.png"),
                            "closed loop", "users", logx=True))
    if by.get("rate"):
        figure("throughput-vs-rate.png", "tokens/s and p99 TTFT vs offered rate",
               plots.versus([(r["x"], r["tokens_per_s"], r["ttft_p99_ms"]) for r in by["rate"]],
                            os.path.join(out_dir, "throughput-vs-rate.png"),
                            "open loop (Poisson)", "offered requests/s"))
    m = meta["machine"]
    lines = [
        "# Load-test sweep", "",
        f"{meta['date']}, {m.get('cpu', '?')} ({m.get('cpus')} CPUs, AVX2 "
        f"{'yes' if m.get('avx2') else 'no'}, AVX-512F {'yes' if m.get('avx512f') else 'no'}), "
        f"load average {meta['load_average_before'][0]:.2f} before, "
        f"{meta['load_average_after'][0]:.2f} after; sweep wall time {meta['wall_s']:.0f} s.",
        f"Target {a['url'] or a['server']}; prompts {a['prompt_tokens']} tokens, "
        f"{a['max_tokens']} generated (greedy, ignore_eos); {a['warmup']:g} s warm-up + "
        f"{a['duration']:g} s measured per point; SLO TTFT <= {a['ttft_slo_ms']:g} ms and "
        f"TPOT <= {a['tpot_slo_ms']:g} ms. {meta['uploaded_adapters']} generated rank-"
        f"{a['create_rank']} q/v adapters uploaded in {meta['upload_seconds']:.1f} s "
        f"({meta['uploaded_adapters'] / meta['upload_seconds']:.1f}/s).", ""]
    one = next((r for r in by.get("adapters", []) if r["x"] == 1), None)
    if one and one["tokens_per_s"] > 0:
        lines.append("Throughput relative to the one-adapter run (same sweep): " + ", ".join(
            f"{r['name']} {r['tokens_per_s'] / one['tokens_per_s']:.2f}x"
            for r in by.get("adapters", []) + by.get("adapters-uniform", [])) + ".")
        lines.append("")
    header = ("| point | tokens/s | req/s | goodput req/s | SLO met | TTFT p50 / p99 ms | "
              "TPOT p50 / p99 ms | requests | errors |")
    for series, title in (("adapters", f"Adapters ({a['users']} users, Zipf s={a['zipf_s']:g})"),
                          ("adapters-uniform", "Uniform popularity"),
                          ("concurrency", "Users (closed loop)"),
                          ("rate", "Offered rate (open loop)")):
        if not by.get(series):
            continue
        lines += [f"## {title}", "", header, "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in by[series]:
            errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
            lines.append(
                f"| {r['name']} | {r['tokens_per_s']:.1f} | {r['requests_per_s']:.2f} | "
                f"{r['goodput_requests_per_s']:.2f} | {(r['slo_attainment'] or 0):.0%} | "
                f"{r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} | "
                f"{r['tpot_p50_ms']:.0f} / {r['tpot_p99_ms']:.0f} | {r['requests']} | "
                f"{errors} |")
        lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{t}]({f})" for f, t in figures] + [""]
    lines += ["Per-point JSON summaries, per-request CSV and JSONL are in `points/NAME/`; the "
              "data behind each figure sits next to it as `.dat`.", ""]
    path = os.path.join(out_dir, "REPORT.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out_dir, "sweep.json"), "w") as f:
        json.dump({**meta, "points": rows}, f, indent=1)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    if bool(args.server) == bool(args.url) and not (args.url and args.admin_server):
        if not args.server:
            raise SystemExit("give --server (gRPC) or --url with --admin-server")
    os.makedirs(args.out_dir, exist_ok=True)
    sweep = Sweep(args)
    meta = sweep.run()
    path = write_report(args.out_dir, meta, sweep.points)
    print(f"report written to {path} ({meta['wall_s']:.0f} s)")
    failed = sum(p[3]["summary"]["requests"] - p[3]["summary"]["ok"] for p in sweep.points)
    return 0 if failed == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
