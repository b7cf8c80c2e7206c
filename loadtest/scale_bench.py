#!/usr/bin/env python3
"""Scale benchmark (issue 14, "ten thousand adapters"): one server, N stored adapters.

  1. upload   start `loraserve serve` on an empty store, generate N rank-8 q_proj,v_proj PEFT
              adapters in memory (adapters_setup.make_adapter, f32/f16/bf16) and stream them
              over the admin API on P parallel uploads: adapters/s and MB/s;
  2. restart  SIGTERM the server, start it again on the same store; start-up time = process
              spawn until the first Generate for a stored adapter answers (and until gRPC
              answered GetModelInfo); the server's VmRSS / VmHWM after start and after each
              phase (/proc/PID/status);
  3. load     for each adapter count (1, 64, 1024, 10000, clipped to N) and popularity (zipf,
              uniform; one run for a single adapter) a closed loop of 64 users
              (loadtest.run, the harness's own driver) for warm-up + duration seconds:
              generated tokens/s, TTFT / TPOT / end-to-end p50 and p99, and the adapter tier
              counters from /metrics (loraserve_adapter_pool_*, loraserve_adapter_host_*, when
              the server has them) and GetStats, before and after: hit rates per phase;
  4. check    K random adapters among the N: the greedy 16-token answer to a fixed prompt,
              sent while each phase's load runs, must equal the same request's answer on the
              idle server (asked right after the restart). A mismatch fails the run.

Writes OUT/results.json, OUT/results.md (printed last), OUT/server-*.log and
OUT/phases/NAME/ (each phase's loadtest summary.json, requests.csv, requests.jsonl).

  scripts/scale_bench.sh --out-dir build/scale                     (the full run: N = 10000)
  scripts/scale_bench.sh --out-dir build/scale --count 64 --counts 1,64 --duration 10 \\
      --server-arg=--host-cache-bytes=268435456
  scripts/scale_bench.sh --skip-upload --store /data/scale-store ...   (reuse an upload)

Server flags go through --server-arg (each value is split like a shell line, so
--server-arg="--max-lora 256" works) or after a lone `--`. Exit status: 0 all good, 1 a
correctness mismatch or a failed setup, 3 failed load requests, 130 interrupted.
"""
import argparse
import asyncio
import datetime
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import adapters_setup  # noqa: E402
import loadtest  # noqa: E402
from protos import load_stubs  # noqa: E402
from sweep import machine  # noqa: E402
from targets import bearer  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PREFIX = "scale-"
CHECK_PROMPT = "The three things everyone should know about the ocean are"
# Counters read before and after each phase (deltas) and gauges sampled during it; absent
# ones (a server without the host tier) are reported as missing, not as zero.
COUNTERS = ("loraserve_adapter_pool_hits_total", "loraserve_adapter_pool_misses_total",
            "loraserve_adapter_pool_loads_total", "loraserve_adapter_pool_evictions_total",
            "loraserve_adapter_host_hits_total", "loraserve_adapter_host_misses_total",
            "loraserve_adapter_host_loads_total", "loraserve_adapter_host_evictions_total")
GAUGES = ("loraserve_adapter_host_bytes", "loraserve_adapter_host_budget_bytes",
          "loraserve_num_requests_waiting_for_adapter", "loraserve_num_requests_waiting",
          "loraserve_adapter_pool_resident_adapters", "loraserve_adapters_registered")
STATS_FIELDS = ("adapter_hits", "adapter_misses", "adapter_loads", "adapter_evictions",
                "generated_tokens", "preemptions", "merge_switches", "adapters_resident")


def ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def words(text: str) -> List[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    g = p.add_argument_group("server")
    g.add_argument("--binary", default=os.environ.get(
        "LORASERVE_BIN", os.path.join(ROOT, "build", "loraserve")))
    g.add_argument("--model", default=os.path.join(ROOT, ".cache", "models",
                                                   "smollm2-135m-instruct"))
    g.add_argument("--server-arg", action="append", default=[],
                   help="extra `loraserve serve` flags, e.g. --server-arg=--host-cache-bytes="
                        "268435456 (repeatable; each value split like a shell line)")
    g.add_argument("--store", default="",
                   help="adapter store folder (default: a fresh temporary one, removed at the "
                        "end unless --keep-store; a given folder is never removed)")
    g.add_argument("--skip-upload", action="store_true",
                   help="reuse the adapters already in --store (ids scale-NNNN)")
    g.add_argument("--keep-store", action="store_true")
    g.add_argument("--ready-timeout", type=float, default=600.0,
                   help="seconds a start may take until the first Generate answers")
    g = p.add_argument_group("adapters")
    g.add_argument("--count", type=int, default=10000, help="N: adapters to upload / use")
    g.add_argument("--rank", type=int, default=8)
    g.add_argument("--targets", default="q_proj,v_proj")
    g.add_argument("--adapter-dtype", choices=adapters_setup.DTYPES, default="f32",
                   help="how the generated files store their weights")
    g.add_argument("--b-std", type=float, default=0.1,
                   help="std of the lora_B draws: 0.1 makes the adapters' greedy answers differ "
                        "from each other, so the correctness sample can tell them apart "
                        "(adapters_setup's own default, 0.02, barely moves SmolLM2's tokens)")
    g.add_argument("--upload-parallel", type=int, default=8, help="P: concurrent uploads")
    g = p.add_argument_group("load")
    g.add_argument("--counts", type=ints, default=[1, 64, 1024, 10000],
                   help="adapter counts of the load phases (clipped to --count)")
    g.add_argument("--popularities", type=words, default=["zipf", "uniform"])
    g.add_argument("--zipf-s", type=float, default=1.0)
    g.add_argument("--concurrency", type=int, default=64)
    g.add_argument("--duration", "--durations", dest="duration", type=float, default=60.0,
                   help="measured seconds per phase")
    g.add_argument("--warmup", type=float, default=10.0, help="warm-up seconds per phase")
    g.add_argument("--prompt-tokens", default="8")
    g.add_argument("--max-tokens", default="32")
    g.add_argument("--request-timeout", type=float, default=300.0)
    g.add_argument("--seed", type=int, default=1)
    g = p.add_argument_group("correctness")
    g.add_argument("--check-adapters", type=int, default=8,
                   help="K: adapters whose greedy answer under load must equal the idle one")
    g.add_argument("--check-tokens", type=int, default=16)
    g = p.add_argument_group("results")
    g.add_argument("--out-dir", default=os.path.join(ROOT, "build", "scale"))
    g.add_argument("--metrics-interval", type=float, default=1.0,
                   help="seconds between /metrics and RSS samples during a phase")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--stub-cache", default="")
    args = p.parse_args(argv)
    args.server_args = [w for value in args.server_arg for w in shlex.split(value)] + \
        passthrough
    if args.count < 1 or args.concurrency < 1 or args.upload_parallel < 1:
        p.error("--count, --concurrency and --upload-parallel must be positive")
    if args.duration <= 0 or args.warmup < 0 or args.check_adapters < 0:
        p.error("--duration must be positive, --warmup and --check-adapters non-negative")
    if args.skip_upload and not args.store:
        p.error("--skip-upload reuses an existing store: give --store DIR")
    bad = [x for x in args.popularities if x not in ("zipf", "uniform")]
    if bad or not args.popularities:
        p.error(f"--popularities: {', '.join(bad) or 'none'}: give zipf and/or uniform")
    args.counts = sorted({min(n, args.count) for n in args.counts if n > 0})
    if not args.counts:
        p.error("--counts: give at least one positive count")
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_memory(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM of a process in KiB (empty once it exited)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def mib(kib) -> Optional[float]:
    return None if kib is None else kib / 1024.0


def scrape(url: str, timeout: float = 10.0) -> Dict[str, float]:
    """Prometheus text exposition -> {metric name: value}, summed over label sets; histogram
    series keep their _bucket/_sum/_count names."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        text = response.read().decode()
    values: Dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line[:line.index("{")], line[line.rindex("}") + 1:].split()
        else:
            name, *rest = line.split()
        try:
            values[name] = values.get(name, 0.0) + float(rest[0])
        except (ValueError, IndexError):
            continue
    return values


def hit_rate(delta: Dict[str, float], hits: str, misses: str) -> Optional[float]:
    if hits not in delta or misses not in delta:
        return None
    total = delta[hits] + delta[misses]
    return delta[hits] / total if total > 0 else None


class Server:
    """One `loraserve serve` process in its own session (a Ctrl-C reaches only us; we stop it)."""

    def __init__(self, args, store: str, token_file: str, log_path: str):
        self.args, self.store, self.token_file, self.log_path = args, store, token_file, log_path
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.proc: Optional[subprocess.Popen] = None
        self.spawned_at = 0.0
        self.cmd = [args.binary, "serve", "--model", args.model, "--store", store,
                    "--admin-token-file", token_file, "--listen", self.address,
                    "--metrics-listen", f"127.0.0.1:{self.metrics_port}", "--http-listen", "",
                    "--drain-seconds", "5", *args.server_args]

    def start(self):
        self.log = open(self.log_path, "w")
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        # setpriv (util-linux) execs the server with a parent-death signal: should this
        # process be killed outright (SIGKILL, no finally), the server gets SIGTERM anyway.
        setpriv = shutil.which("setpriv")
        launcher = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(launcher + self.cmd, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def memory(self) -> Dict[str, int]:
        return proc_memory(self.proc.pid) if self.alive() else {}

    def log_tail(self, chars: int = 3000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> Optional[float]:
        """SIGTERM and wait (SIGKILL after timeout); the seconds it took to exit."""
        if self.proc is None:
            return None
        started = time.perf_counter()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return time.perf_counter() - started


async def generate(stub, pb, adapter_id: str, tokens: int, timeout: float) -> List[int]:
    request = pb.GenerateRequest(text=CHECK_PROMPT, adapter_id=adapter_id, max_tokens=tokens,
                                 ignore_eos=True, sampling=pb.SamplingParams(temperature=0.0))
    response = await stub.Generate(request, timeout=timeout)
    return list(response.token_ids)


async def wait_started(server: Server, stubs, probe, timeout: float) -> Dict[str, object]:
    """Seconds from spawn until GetModelInfo answers and until a Generate (one token) for the
    stored adapter `probe` answers; polls every 20 ms while the server is not up yet. probe is
    an id, None (only wait for gRPC), or an async function(channel) -> id, called once gRPC
    answers (--skip-upload: the id comes from ListAdapters)."""
    import grpc

    pb = stubs.inference_pb2
    retry = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND,
             grpc.StatusCode.DEADLINE_EXCEEDED)
    deadline = server.spawned_at + timeout
    out = {"grpc_ready_s": None, "first_generate_s": None, "probe_adapter": None}
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = stubs.inference_pb2_grpc.InferenceStub(channel)
        while True:
            if not server.alive():
                raise RuntimeError(f"loraserve exited during start-up (status "
                                   f"{server.proc.returncode}):\n{server.log_tail()}")
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RuntimeError(f"loraserve did not answer within {timeout:g} s:\n"
                                   f"{server.log_tail()}")
            try:
                if out["grpc_ready_s"] is None:
                    await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=min(left, 5))
                    out["grpc_ready_s"] = time.perf_counter() - server.spawned_at
                if probe is None:
                    return out
                if callable(probe):
                    probe = await probe(channel)
                out["probe_adapter"] = probe
                await stub.Generate(pb.GenerateRequest(
                    text=CHECK_PROMPT, adapter_id=probe, max_tokens=1),
                    timeout=min(left, 60))
                out["first_generate_s"] = time.perf_counter() - server.spawned_at
                return out
            except grpc.aio.AioRpcError as error:
                if error.code() not in retry:
                    raise RuntimeError(f"start-up probe: {error.code().name}: "
                                       f"{error.details()}") from None
            await asyncio.sleep(0.02)


class Bench:
    def __init__(self, args):
        self.args = args
        self.stubs = load_stubs(args.stub_cache)
        self.token = secrets.token_urlsafe(24)
        os.makedirs(args.out_dir, exist_ok=True)
        self.private = tempfile.mkdtemp(prefix="loraserve-scale-")
        self.token_file = os.path.join(self.private, "admin-token")
        with open(os.open(self.token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(self.token + "\n")
        self.own_store = not args.store
        self.store = args.store or tempfile.mkdtemp(prefix="loraserve-scale-store-")
        os.makedirs(self.store, exist_ok=True)
        self.server: Optional[Server] = None
        self.ids: List[str] = []
        self.results = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "load_average_before": os.getloadavg(),
            "args": {k: v for k, v in vars(args).items()}, "store": self.store,
            "upload": None, "startup": None, "rss": [], "phases": [],
            "correctness": None, "interrupted": False}
        with open(os.path.join(args.model, "config.json")) as f:
            self.config = json.load(f)

    # -- server -------------------------------------------------------------------------------

    def start_server(self, name: str, probe: Optional[str]) -> dict:
        self.server = Server(self.args, self.store, self.token_file,
                             os.path.join(self.args.out_dir, f"server-{name}.log"))
        self.results["server_cmd"] = [("<token file>" if w == self.token_file else w)
                                      for w in self.server.cmd]
        self.server.start()
        self.results.setdefault("server_pids", []).append(self.server.proc.pid)
        self.write()  # the pid is on disk while the server runs
        times = asyncio.run(wait_started(self.server, self.stubs, probe,
                                         self.args.ready_timeout))
        self.record_rss(f"after start ({name})")
        return times

    def stop_server(self) -> Optional[float]:
        if self.server is None:
            return None
        seconds = self.server.stop()
        self.server = None
        return seconds

    def record_rss(self, at: str) -> dict:
        m = self.server.memory()
        entry = {"at": at, "vmrss_mib": mib(m.get("VmRSS")), "vmhwm_mib": mib(m.get("VmHWM"))}
        self.results["rss"].append(entry)
        print(f"RSS {at}: {entry['vmrss_mib'] or 0:.0f} MiB (HWM {entry['vmhwm_mib'] or 0:.0f})",
              flush=True)
        return entry

    def admin(self, channel):
        return self.stubs.admin_pb2_grpc.AdminStub(channel)

    async def stats(self) -> dict:
        import grpc

        async with grpc.aio.insecure_channel(self.server.address) as channel:
            s = await self.admin(channel).GetStats(self.stubs.admin_pb2.GetStatsRequest(),
                                                   metadata=bearer(self.token), timeout=30)
        return {f: getattr(s, f) for f in STATS_FIELDS}

    async def list_ids(self, channel) -> List[str]:
        listed = await self.admin(channel).ListAdapters(
            self.stubs.admin_pb2.ListAdaptersRequest(), metadata=bearer(self.token),
            timeout=120)
        return sorted(a.id for a in listed.adapters if a.id.startswith(PREFIX))

    def metrics(self) -> Dict[str, float]:
        try:
            return scrape(self.server.metrics_url)
        except OSError as error:
            print(f"warning: {self.server.metrics_url}: {error}", file=sys.stderr)
            return {}

    # -- 1. upload ----------------------------------------------------------------------------

    def one_adapter_bytes(self) -> int:
        files = adapters_setup.make_adapter(self.config, 0, self.args.rank, self.targets(),
                                            self.args.adapter_dtype, self.args.b_std)
        return sum(len(d) for d in files.values())

    def targets(self) -> List[str]:
        return [t for t in self.args.targets.split(",") if t]

    def upload(self):
        a = self.args
        per_adapter = self.one_adapter_bytes()
        need = per_adapter * a.count
        free = shutil.disk_usage(self.store).free
        if need * 1.05 > free:
            raise RuntimeError(f"{a.count} adapters of {per_adapter / 1e6:.2f} MB need "
                               f"{need / 1e9:.1f} GB in {self.store}, which has "
                               f"{free / 1e9:.1f} GB free: give --store on a larger disk, or "
                               f"--adapter-dtype f16")
        times = self.start_server("upload", None)
        print(f"server (empty store) answered gRPC after {times['grpc_ready_s']:.2f} s",
              flush=True)
        import grpc

        async def go():
            async with grpc.aio.insecure_channel(self.server.address) as channel:
                return await adapters_setup.upload_generated(
                    channel, self.stubs, self.token, self.config, a.count, prefix=PREFIX,
                    rank=a.rank, targets=self.targets(), seed=a.seed,
                    parallel=a.upload_parallel, dtype=a.adapter_dtype, b_std=a.b_std)

        ids, seconds = asyncio.run(go())
        self.ids = ids
        self.results["upload"] = {
            "adapters": a.count, "seconds": seconds, "adapters_per_s": a.count / seconds,
            "bytes_per_adapter": per_adapter, "mb_per_s": need / seconds / 1e6,
            "parallel": a.upload_parallel, "dtype": a.adapter_dtype, "rank": a.rank,
            "targets": self.targets(), "empty_store_grpc_ready_s": times["grpc_ready_s"]}
        print(f"uploaded {a.count} adapters ({per_adapter / 1e6:.2f} MB each, "
              f"{a.adapter_dtype}) in {seconds:.1f} s: {a.count / seconds:.1f} adapters/s, "
              f"{need / seconds / 1e6:.1f} MB/s over {a.upload_parallel} streams", flush=True)
        self.record_rss("after upload")
        self.results["upload"]["stop_s"] = self.stop_server()

    # -- 2. restart ---------------------------------------------------------------------------

    def restart(self):
        a = self.args

        stored = [a.count]

        async def from_store(channel) -> str:  # --skip-upload: what the store holds
            found = await self.list_ids(channel)
            stored[0] = len(found)
            if len(found) < a.count:
                raise RuntimeError(f"--skip-upload: {self.store} holds {len(found)} {PREFIX}* "
                                   f"adapters, --count is {a.count}")
            self.ids = found[:a.count]
            return self.ids[-1]

        times = self.start_server("serve", self.ids[-1] if self.ids else from_store)
        probe = times["probe_adapter"]
        self.results["startup"] = {**times, "stored_adapters": stored[0],
                                   "used_adapters": len(self.ids)}
        print(f"restart on {stored[0]} stored adapters: gRPC up after "
              f"{times['grpc_ready_s']:.2f} s, first Generate ({probe}) after "
              f"{times['first_generate_s']:.2f} s", flush=True)

    # -- 4. the reference answers -------------------------------------------------------------

    def check_sample(self) -> List[str]:
        rng = random.Random(self.args.seed * 7919 + 14)
        return rng.sample(self.ids, min(self.args.check_adapters, len(self.ids)))

    async def answers(self, sample: List[str], together: bool) -> Dict[str, object]:
        """{adapter: token ids or "ERROR: ..."} for the check prompt, sent one at a time or all
        at once."""
        import grpc

        pb = self.stubs.inference_pb2
        async with grpc.aio.insecure_channel(self.server.address) as channel:
            stub = self.stubs.inference_pb2_grpc.InferenceStub(channel)

            async def one(adapter):
                try:
                    return await generate(stub, pb, adapter, self.args.check_tokens,
                                          self.args.request_timeout)
                except grpc.aio.AioRpcError as error:
                    return f"ERROR: {error.code().name}: {error.details()}"

            if together:
                got = await asyncio.gather(*(one(x) for x in sample))
            else:
                got = [await one(x) for x in sample]
        return dict(zip(sample, got))

    # -- 3. load ------------------------------------------------------------------------------

    def phase_plan(self) -> List[tuple]:
        plan = []
        for n in self.args.counts:
            pops = self.args.popularities[:1] if n == 1 else self.args.popularities
            plan += [(n, pop) for pop in pops]
        return plan

    def loadtest_args(self, name: str, n: int, popularity: str):
        a = self.args
        # "--flag=value": a random token may begin with "-", which argparse would take for a flag.
        argv = ["--server", self.server.address, f"--admin-token={self.token}",
                "--adapters", ",".join(self.ids[:n]), "--concurrency", str(a.concurrency),
                "--popularity", popularity, "--zipf-s", str(a.zipf_s),
                "--warmup", str(a.warmup), "--duration", str(a.duration),
                "--prompt-tokens", a.prompt_tokens, "--max-tokens", a.max_tokens,
                "--seed", str(a.seed), "--timeout", str(a.request_timeout),
                "--label", name, "--out-dir", os.path.join(a.out_dir, "phases", name),
                "--progress" if a.progress else "--no-progress"]
        if a.stub_cache:
            argv += ["--stub-cache", a.stub_cache]
        return loadtest.parse_args(argv)

    async def run_phase(self, name: str, n: int, popularity: str, sample: List[str]):
        args = self.loadtest_args(name, n, popularity)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        samples: List[dict] = []

        async def sampler():
            while True:
                m = await loop.run_in_executor(None, self.metrics)
                memory = self.server.memory()
                samples.append({"t": time.perf_counter(), **{g: m[g] for g in GAUGES if g in m},
                                **{f"{k}_mib": mib(v) for k, v in memory.items()}})
                await asyncio.sleep(self.args.metrics_interval)

        async def under_load():
            # Halfway through the warm-up: the load is running, the measured window not yet.
            await asyncio.sleep(max(self.args.warmup / 2, 0.5))
            return await self.answers(sample, together=True)

        metrics_before = await loop.run_in_executor(None, self.metrics)
        stats_before = await self.stats()
        sampling = asyncio.create_task(sampler())
        checking = asyncio.create_task(under_load()) if sample else None
        try:
            report = await loadtest.run(args, stop)
            checked = await checking if checking else {}
        finally:
            sampling.cancel()
            if checking and not checking.done():
                checking.cancel()
        metrics_after = await loop.run_in_executor(None, self.metrics)
        stats_after = await self.stats()
        return args, report, checked, samples, (metrics_before, metrics_after), \
            (stats_before, stats_after)

    def load_phases(self, sample: List[str], reference: Dict[str, object]):
        mismatches = self.results["correctness"]["mismatches"]
        base_tps = None
        for n, popularity in self.phase_plan():
            name = f"adapters-{n}-{popularity}" if n > 1 else "adapters-1"
            print(f"--- {name}: {self.args.concurrency} users, {self.args.warmup:g} s warm-up + "
                  f"{self.args.duration:g} s", flush=True)
            args, report, checked, samples, (mb, ma), (sb, sa) = asyncio.run(
                self.run_phase(name, n, popularity, sample))
            loadtest.write_outputs(report, args)
            rss = self.record_rss(f"after {name}")
            s = report["summary"]
            delta = {k: ma[k] - mb[k] for k in COUNTERS if k in ma and k in mb}
            stats_delta = {k: sa[k] - sb[k] for k in STATS_FIELDS if k != "adapters_resident"}
            pool_rate = hit_rate(delta, COUNTERS[0], COUNTERS[1])
            if pool_rate is None:
                total = stats_delta["adapter_hits"] + stats_delta["adapter_misses"]
                pool_rate = stats_delta["adapter_hits"] / total if total else None
            wrong = []
            for adapter, got in checked.items():
                if got != reference[adapter]:
                    wrong.append({"phase": name, "adapter": adapter,
                                  "idle": reference[adapter], "under_load": got})
            mismatches += wrong
            self.results["correctness"]["checked"] += len(checked)
            tps = s["throughput_generated_tokens_per_s"]
            if n == 1:
                base_tps = tps
            gauges = {}
            for g in GAUGES + ("VmRSS_mib", "VmHWM_mib"):
                values = [x[g] for x in samples if g in x]
                if values:
                    gauges[g] = {"max": max(values), "mean": sum(values) / len(values),
                                 "last": values[-1]}

            def q(key, p):
                return s[key][p]

            phase = {
                "name": name, "adapters": n, "popularity": popularity,
                "tokens_per_s": tps, "ratio_to_one_adapter": (tps / base_tps) if base_tps
                else None,
                "requests_per_s": s["throughput_requests_per_s"], "requests": s["requests"],
                "ok": s["ok"], "errors": s["errors_by_status"],
                "ttft_p50_s": q("client_ttft_s", "p50"), "ttft_p99_s": q("client_ttft_s", "p99"),
                "tpot_p50_s": q("client_tpot_s", "p50"), "tpot_p99_s": q("client_tpot_s", "p99"),
                "e2e_p50_s": q("client_total_s", "p50"), "e2e_p99_s": q("client_total_s", "p99"),
                "counters_delta": delta,
                "counters_missing": [k for k in COUNTERS if k not in delta],
                "host_hit_rate": hit_rate(delta, COUNTERS[4], COUNTERS[5]),
                "pool_hit_rate": pool_rate, "stats_delta": stats_delta,
                "adapters_resident_after": sa["adapters_resident"],
                "gauges_during": gauges, "rss_after_mib": rss["vmrss_mib"],
                "hwm_after_mib": rss["vmhwm_mib"], "check_mismatches": len(wrong),
                "check_sent": len(checked), "interrupted": report["interrupted"]}
            self.results["phases"].append(phase)
            self.write()
            print(f"{name}: {tps:.1f} tokens/s, TTFT p50/p99 "
                  f"{fmt_ms(phase['ttft_p50_s'])}/{fmt_ms(phase['ttft_p99_s'])} ms, "
                  f"pool hit rate {fmt_rate(pool_rate)}, host hit rate "
                  f"{fmt_rate(phase['host_hit_rate'])}, errors "
                  f"{sum(s['errors_by_status'].values())}, check "
                  f"{len(checked) - len(wrong)}/{len(checked)} equal", flush=True)
            if report["interrupted"]:
                self.results["interrupted"] = True
                return

    # -- the whole run ------------------------------------------------------------------------

    def run(self):
        a = self.args
        if not a.skip_upload:
            self.upload()
        self.restart()
        sample = self.check_sample()
        print(f"reference answers for {len(sample)} adapters, one at a time on the idle "
              f"server ...", flush=True)
        reference = asyncio.run(self.answers(sample, together=False))
        errors = {k: v for k, v in reference.items() if isinstance(v, str)}
        if errors:
            raise RuntimeError(f"the idle reference requests failed: {errors}")
        distinct = len({tuple(v) for v in reference.values()})
        self.results["correctness"] = {"prompt": CHECK_PROMPT, "tokens": a.check_tokens,
                                       "adapters": sample, "reference": reference,
                                       "distinct_answers": distinct, "checked": 0,
                                       "mismatches": []}
        if len(sample) > 1 and distinct == 1:
            print(f"warning: all {len(sample)} sampled adapters give the same idle answer: the "
                  f"sample cannot tell a wrong adapter from the right one (raise --b-std)",
                  file=sys.stderr)
        self.record_rss("after the reference answers")
        self.load_phases(sample, reference)

    def cleanup(self):
        try:
            self.stop_server()
        finally:
            shutil.rmtree(self.private, ignore_errors=True)
            if self.own_store and not self.args.keep_store:
                shutil.rmtree(self.store, ignore_errors=True)
            elif self.own_store:
                print(f"store kept: {self.store} (reuse: --skip-upload --store {self.store})")

    def write(self) -> str:
        self.results["load_average_after"] = os.getloadavg()
        with open(os.path.join(self.args.out_dir, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1)
        table = markdown(self.results)
        with open(os.path.join(self.args.out_dir, "results.md"), "w") as f:
            f.write(table)
        return table


def fmt_ms(x) -> str:
    return "-" if x is None else f"{x * 1e3:.0f}"


def fmt_rate(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def markdown(r: dict) -> str:
    a, m = r["args"], r["machine"]
    lines = ["# Scale benchmark (issue 14)", "",
             f"{r['date']}, {m.get('cpu', '?')} ({m.get('cpus')} CPUs), load average "
             f"{r['load_average_before'][0]:.2f} before, "
             f"{r.get('load_average_after', [0])[0]:.2f} after. {a['concurrency']} users, "
             f"{a['prompt_tokens']} prompt + {a['max_tokens']} generated tokens (greedy, "
             f"ignore_eos), {a['warmup']:g} s warm-up + {a['duration']:g} s measured per "
             f"phase; Zipf s={a['zipf_s']:g}. Server flags: "
             f"`{' '.join(a['server_args']) or '(defaults)'}`.", ""]
    u = r.get("upload")
    if u:
        lines.append(f"Upload: {u['adapters']} rank-{u['rank']} {','.join(u['targets'])} "
                     f"adapters ({u['dtype']}, {u['bytes_per_adapter'] / 1e6:.2f} MB each) in "
                     f"{u['seconds']:.1f} s over {u['parallel']} streams: "
                     f"{u['adapters_per_s']:.1f} adapters/s, {u['mb_per_s']:.1f} MB/s.")
    elif a.get("skip_upload"):
        lines.append("Upload: skipped (--skip-upload, the store's adapters reused).")
    st = r.get("startup")
    if st:
        lines.append(f"Start-up on {st['stored_adapters']} stored adapters: gRPC answering "
                     f"after {st['grpc_ready_s']:.2f} s, first Generate for a stored adapter "
                     f"after {st['first_generate_s']:.2f} s (from process spawn).")
    rss = "; ".join(f"{e['at']} {e['vmrss_mib'] or 0:.0f} MiB (HWM {e['vmhwm_mib'] or 0:.0f})"
                    for e in r["rss"])
    if rss:
        lines.append(f"Server RSS: {rss}.")
    c = r.get("correctness")
    if c:
        verdict = "PASSED" if not c["mismatches"] else f"FAILED ({len(c['mismatches'])} " \
            "mismatches)"
        lines.append(f"Correctness sample: {len(c['adapters'])} adapters x "
                     f"{len(r['phases'])} phases, {c['checked']} greedy {c['tokens']}-token "
                     f"answers under load compared with the idle ones ({c['distinct_answers']} "
                     f"distinct idle answers): {verdict}.")
    if r.get("interrupted"):
        partial = r["phases"] and r["phases"][-1]["interrupted"]
        lines.append("INTERRUPTED: " + ("the last phase below stopped early (its cancelled "
                                        "requests count as errors)." if partial else
                                        "no phase after the last one below ran."))
    lines += ["", "| adapters | popularity | tok/s | vs 1 adapter | TTFT p50 / p99 ms | "
                  "TPOT p50 / p99 ms | host hit rate | pool hit rate | pool loads / evictions "
                  "| RSS / HWM MiB | errors |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in r["phases"]:
        d = p["counters_delta"]
        loads = d.get("loraserve_adapter_pool_loads_total", p["stats_delta"]["adapter_loads"])
        evictions = d.get("loraserve_adapter_pool_evictions_total",
                          p["stats_delta"]["adapter_evictions"])
        ratio = "-" if p["ratio_to_one_adapter"] is None else f"{p['ratio_to_one_adapter']:.2f}x"
        pop = "-" if p["adapters"] == 1 else p["popularity"]
        lines.append(
            f"| {p['adapters']} | {pop} | {p['tokens_per_s']:.1f} | {ratio} | "
            f"{fmt_ms(p['ttft_p50_s'])} / {fmt_ms(p['ttft_p99_s'])} | "
            f"{fmt_ms(p['tpot_p50_s'])} / {fmt_ms(p['tpot_p99_s'])} | "
            f"{fmt_rate(p['host_hit_rate'])} | {fmt_rate(p['pool_hit_rate'])} | "
            f"{loads:.0f} / {evictions:.0f} | {p['rss_after_mib'] or 0:.0f} / "
            f"{p['hwm_after_mib'] or 0:.0f} | {p['requests'] - p['ok']} |")
    missing = sorted({k for p in r["phases"] for k in p["counters_missing"]})
    if missing:
        lines += ["", f"Not exported by this server (n/a above): {', '.join(missing)}."]
    if c and c["mismatches"]:
        lines += ["", "Mismatches (adapter, phase: idle ids vs ids under load):"]
        lines += [f"- {x['adapter']}, {x['phase']}: {x['idle']} vs {x['under_load']}"
                  for x in c["mismatches"][:20]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    for path, what in ((args.binary, "the loraserve binary (build it, or --binary)"),
                       (os.path.join(args.model, "config.json"),
                        "the model (scripts/setup_default_model.sh, or --model)")):
        if not os.path.exists(path):
            print(f"error: {path}: not found: {what}", file=sys.stderr)
            return 2

    def terminate(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    bench = Bench(args)
    status = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.results["interrupted"] = True
        print("\ninterrupted: stopping the server", file=sys.stderr)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        status = 1
    finally:
        bench.cleanup()
    table = bench.write()
    c = bench.results["correctness"]
    failed = sum(p["requests"] - p["ok"] for p in bench.results["phases"])
    print(f"\nwritten: {os.path.join(args.out_dir, 'results.json')}, "
          f"{os.path.join(args.out_dir, 'results.md')}\n")
    print(table, end="")
    if bench.results["interrupted"]:
        return 130
    if status:
        return status
    if c is None or c["mismatches"]:
        print(f"error: correctness sample: {len(c['mismatches']) if c else 'no'} mismatches",
              file=sys.stderr)
        return 1
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
