"""gnuplot figures of load-test results (Debian: gnuplot-nox). The data files sit next to each
PNG, so a figure can be redrawn or read without gnuplot. A missing gnuplot is reported, not
raised: the numbers are in the JSON and CSV anyway."""
import os
import shutil
import subprocess
from typing import Dict, List, Sequence

from report import token_times


def have_gnuplot() -> bool:
    return shutil.which("gnuplot") is not None


def _gnuplot(script: str) -> str:
    if not have_gnuplot():
        return "gnuplot not found (apt-get install gnuplot-nox)"
    proc = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True, timeout=120)
    return "" if proc.returncode == 0 else f"gnuplot exited {proc.returncode}: {proc.stderr[-400:]}"


def _quote(text: str) -> str:
    return text.replace("'", "")


def cdf_points(values: Sequence[float]) -> List[tuple]:
    data = sorted(v for v in values if v is not None)
    n = len(data)
    return [(v, (i + 1) / n) for i, v in enumerate(data)]


def throughput_series(records: list, bin_s: float = 1.0) -> List[tuple]:
    """(bin start, tokens/s) of tokens reaching the client, every bin_s seconds."""
    times = token_times(records)
    if not times:
        return []
    bins = [0] * (int(times[-1] // bin_s) + 1)
    for t in times:
        bins[int(t // bin_s)] += 1
    return [(i * bin_s, n / bin_s) for i, n in enumerate(bins)]


def _write(path: str, rows) -> str:
    with open(path, "w") as f:
        for row in rows:
            f.write(" ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in row) + "\n")
    return path


def run_plot(report: dict, path: str) -> str:
    """One run: latency per request over time, TTFT and TPOT CDFs, tokens/s over time."""
    base = os.path.splitext(path)[0]
    records = [r for r in report["requests"] if r["status"] == "OK"]
    latency = _write(base + "-latency.dat", [
        (r["sent_at_s"], r["client_ttft_s"] * 1e3, r["client_total_s"] * 1e3) for r in records
        if r.get("client_ttft_s") is not None])
    ttft = _write(base + "-ttft-cdf.dat", [(v * 1e3, p) for v, p in cdf_points(
        [r.get("client_ttft_s") for r in records])])
    tput = _write(base + "-throughput.dat", throughput_series(report["requests"]))
    script = "\n".join([
        "set terminal pngcairo size 1000,900 noenhanced", f"set output '{path}'",
        "set multiplot layout 3,1",
        "set title 'latency per request vs send time'", "set xlabel 's'", "set ylabel 'ms'",
        "set key top left",
        f"plot '{latency}' using 1:3 with points pt 7 ps 0.5 title 'total', "
        f"'{latency}' using 1:2 with points pt 7 ps 0.5 title 'TTFT'",
        "set title 'TTFT CDF'", "set xlabel 'ms'", "set ylabel 'fraction'",
        "set yrange [0:1]", f"plot '{ttft}' using 1:2 with lines lw 2 title 'TTFT'",
        "set title 'generated tokens/s reaching the client'", "set xlabel 's'",
        "set ylabel 'tokens/s'", "set yrange [0:*]",
        f"plot '{tput}' using 1:2 with steps lw 2 title 'tokens/s'",
        "unset multiplot", ""])
    error = _gnuplot(script)
    return f"plot not written: {error}" if error else f"plot written to {path}"


def latency_cdfs(series: Dict[str, list], key: str, path: str, title: str) -> str:
    """One CDF curve per named run of the metric `key` (seconds, plotted in ms)."""
    base = os.path.splitext(path)[0]
    plots = []
    for i, (name, records) in enumerate(series.items()):
        values = [r.get(key) for r in records if r["status"] == "OK"]
        if key == "client_tpot_s":
            from report import tpot
            values = [tpot(r) for r in records if r["status"] == "OK"]
        data = _write(f"{base}-{i}.dat", [(v * 1e3, p) for v, p in cdf_points(values)])
        plots.append(f"'{data}' using 1:2 with lines lw 2 title '{_quote(name)}'")
    if not plots:
        return "no data"
    script = "\n".join([
        "set terminal pngcairo size 900,500 noenhanced", f"set output '{path}'",
        f"set title '{_quote(title)}'", "set xlabel 'ms'", "set ylabel 'fraction of requests'",
        "set logscale x", "set yrange [0:1]", "set key bottom right",
        "plot " + ", ".join(plots), ""])
    return _gnuplot(script)


def throughput_over_time(series: Dict[str, list], path: str, title: str) -> str:
    base = os.path.splitext(path)[0]
    plots = []
    for i, (name, records) in enumerate(series.items()):
        data = _write(f"{base}-{i}.dat", throughput_series(records))
        plots.append(f"'{data}' using 1:2 with steps lw 2 title '{_quote(name)}'")
    if not plots:
        return "no data"
    script = "\n".join([
        "set terminal pngcairo size 900,500 noenhanced", f"set output '{path}'",
        f"set title '{_quote(title)}'", "set xlabel 's since the start'",
        "set ylabel 'generated tokens/s'", "set yrange [0:*]", "set key top right",
        "plot " + ", ".join(plots), ""])
    return _gnuplot(script)


def versus(rows: List[tuple], path: str, title: str, xlabel: str, logx: bool = False) -> str:
    """rows: (x, tokens/s, p99 TTFT ms); throughput on the left axis, p99 TTFT on the right."""
    data = _write(os.path.splitext(path)[0] + ".dat", rows)
    script = "\n".join([
        "set terminal pngcairo size 900,500 noenhanced", f"set output '{path}'",
        f"set title '{_quote(title)}'", f"set xlabel '{_quote(xlabel)}'",
        "set ylabel 'generated tokens/s'", "set y2label 'p99 TTFT (ms)'", "set ytics nomirror",
        "set y2tics", "set yrange [0:*]", "set y2range [0:*]", "set key bottom left",
        *(["set logscale x 2"] if logx else []),
        f"plot '{data}' using 1:2 with linespoints lw 2 pt 7 title 'tokens/s' axes x1y1, "
        f"'{data}' using 1:3 with linespoints lw 2 pt 5 dt 2 title 'p99 TTFT' axes x1y2", ""])
    return _gnuplot(script)
