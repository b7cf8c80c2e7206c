"""The two ways of offering load, over any target (targets.py).

- Open loop: requests go out at their planned times whatever the server does; a request due
  while max_in_flight are outstanding is not sent and is counted as dropped, so neither the
  run nor the client's memory grows with a slow server.
- Closed loop: `concurrency` users, each sending its next request when its previous one ended
  (plus an optional think time), until `count` measured requests were sent or `duration`
  seconds after the warm-up have passed.

Requests sent before `warmup_s` are marked warmup (summaries leave them out). A run always
ends by itself: after the bound, outstanding requests get `drain_timeout` seconds, then are
cancelled (CANCELLED). Setting `stop` (Ctrl-C) ends the run at once the same way; the result
says it was interrupted.
"""
import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional

from targets import RequestRecord
from workload import RequestSpec


@dataclass
class RunResult:
    records: List[RequestRecord]
    dropped: int  # open loop: due while max_in_flight were outstanding
    elapsed_s: float  # from the start to the last completion
    interrupted: bool


class Progress:
    """One live line (stderr): time, sent, done, errors, in flight, recent tokens/s."""

    def __init__(self, label: str, enabled: bool, interval: float = 1.0):
        self.label, self.enabled, self.interval = label, enabled, interval
        self.tty = sys.stderr.isatty()
        self.last_print = 0.0
        self.last_tokens = 0

    def update(self, now: float, records: List[RequestRecord], in_flight: int, force=False):
        if not self.enabled or (not force and now - self.last_print < self.interval):
            return
        done = [r for r in records if r.client_total_s is not None or r.status != "OK"]
        tokens = sum(r.completion_tokens for r in done)
        rate = (tokens - self.last_tokens) / max(now - self.last_print, 1e-9)
        errors = sum(r.status != "OK" for r in done)
        line = (f"[{self.label}] {now:6.1f} s: sent {len(records)}, done {len(done)}, "
                f"errors {errors}, in flight {in_flight}, {rate:7.1f} tokens/s")
        sys.stderr.write(("\r" + line + "   ") if self.tty else (line + "\n"))
        sys.stderr.flush()
        self.last_print, self.last_tokens = now, tokens

    def finish(self):
        if self.enabled and self.tty:
            sys.stderr.write("\n")


async def _send(target, spec: RequestSpec, record: RequestRecord, start: float):
    sent = time.perf_counter()
    record.sent_at_s = sent - start
    try:
        await target.send(spec, record, sent)
    except asyncio.CancelledError:
        if record.status == "OK":
            record.status, record.error = "CANCELLED", "cancelled by the load generator"


async def _drain(tasks, drain_timeout: float):
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=drain_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


async def _ticker(progress: Progress, start: float, records, in_flight: Callable[[], int]):
    while True:
        await asyncio.sleep(progress.interval)
        progress.update(time.perf_counter() - start, records, in_flight())


def _elapsed(records, start_floor: float) -> float:
    ends = [r.sent_at_s + r.client_total_s for r in records if r.client_total_s is not None]
    return max([start_floor, *ends])


async def run_open_loop(target, plan: List[RequestSpec], *, duration: Optional[float],
                        max_in_flight: int, drain_timeout: float, warmup_s: float = 0.0,
                        stop: Optional[asyncio.Event] = None,
                        progress: Optional[Progress] = None) -> RunResult:
    stop = stop or asyncio.Event()
    progress = progress or Progress("", False)
    records, in_flight, dropped = [], set(), 0
    start = time.perf_counter()
    ticker = asyncio.create_task(_ticker(progress, start, records, lambda: len(in_flight)))
    try:
        for spec in plan:
            delay = spec.at - (time.perf_counter() - start)
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
            if stop.is_set():
                break
            if len(in_flight) >= max_in_flight:
                dropped += 1
                continue
            record = RequestRecord(index=spec.index, label=spec.label,
                                   warmup=spec.at < warmup_s)
            records.append(record)
            task = asyncio.create_task(_send(target, spec, record, start))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if not stop.is_set() and duration is not None:
            remaining = duration - (time.perf_counter() - start)
            if remaining > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
        await _drain(in_flight, 0.0 if stop.is_set() else drain_timeout)
    finally:
        ticker.cancel()
        progress.update(time.perf_counter() - start, records, 0, force=True)
        progress.finish()
    return RunResult(records, dropped, _elapsed(records, duration or 0.0), stop.is_set())


async def run_closed_loop(target, requests: Iterable[RequestSpec], *, concurrency: int,
                          think_time: float = 0.0, duration: Optional[float] = None,
                          count: Optional[int] = None, warmup_s: float = 0.0,
                          drain_timeout: float = 30.0, stop: Optional[asyncio.Event] = None,
                          progress: Optional[Progress] = None) -> RunResult:
    """count bounds the measured requests (those sent after warmup_s); duration bounds the
    measured time. With neither the run would not end, so one is required."""
    if concurrency < 1:
        raise ValueError(f"--concurrency {concurrency} must be >= 1")
    if duration is None and count is None:
        raise ValueError("a closed loop needs --duration or --count")
    stop = stop or asyncio.Event()
    progress = progress or Progress("", False)
    source = iter(requests)
    records, measured_sent = [], 0
    active = [0]
    start = time.perf_counter()
    end_at = None if duration is None else warmup_s + duration

    def may_send(now: float) -> bool:
        if stop.is_set():
            return False
        if end_at is not None and now >= end_at:
            return False
        return count is None or now < warmup_s or measured_sent < count

    async def user():
        nonlocal measured_sent
        while True:
            now = time.perf_counter() - start
            if not may_send(now):
                return
            spec = next(source, None)
            if spec is None:  # a finite source (a trace) ran out
                return
            record = RequestRecord(index=spec.index, label=spec.label, warmup=now < warmup_s)
            if not record.warmup:
                measured_sent += 1
            records.append(record)
            active[0] += 1
            try:
                await _send(target, spec, record, start)
            finally:
                active[0] -= 1
            if think_time > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=think_time)
                except asyncio.TimeoutError:
                    pass

    ticker = asyncio.create_task(_ticker(progress, start, records, lambda: active[0]))
    users = [asyncio.create_task(user()) for _ in range(concurrency)]
    try:
        # Users end by themselves once the bound is reached and their request finished; the
        # deadline below only covers a server that stops answering.
        bound = None if end_at is None else end_at + drain_timeout
        stopper = asyncio.create_task(stop.wait())
        pending = set(users)
        while pending:
            timeout = None if bound is None else max(bound - (time.perf_counter() - start), 0)
            done, pending = await asyncio.wait(pending | {stopper}, timeout=timeout,
                                               return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stopper)
            if stopper in done or (bound is not None and
                                   time.perf_counter() - start >= bound):
                break
        stopper.cancel()
        for task in users:
            task.cancel()
        await asyncio.gather(*users, return_exceptions=True)
    finally:
        ticker.cancel()
        progress.update(time.perf_counter() - start, records, 0, force=True)
        progress.finish()
    return RunResult(records, 0, _elapsed(records, 0.0), stop.is_set())
