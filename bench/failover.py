"""Failover: how soon a standby scheduler takes over when the leading one is SIGKILLed, on
PostgreSQL and on a SQLite file (issue 7).

Starts three ``bga run --coordinator-only`` processes on a fresh state, waits until one leads
(the state's ``tick.coordinator.pid`` names the process that ran the last tick), SIGKILLs it,
and polls the state (``SharedState.read()``) until a tick by another process shows up. The
failover time is from the kill (wall clock) to that tick's ``tick.started_at``. A replacement
coordinator is started after each kill, so three keep running, and the next kill waits until
it stands by. With ``--with-traffic`` a producer process keeps writing metrics through the
API during the kills; at the end the state is flushed and its count of those metrics is
compared with the events the producer had acknowledged (exactly once: neither lost nor
doubled by a leader dying mid-fold).

    .venv/bin/python bench/failover.py
    .venv/bin/python bench/failover.py --kills 20 --with-traffic
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    BACKEND_LABEL,
    add_pg_option,
    backends,
    fresh_db,
    machine,
    median,
    parser,
    print_table,
    temp_dir,
    verdict,
)

from state import PerformanceMetric, SharedState
from state.redact import redact

TARGET_S = 15.0  # a standby leads within 15 s of the leader's death
TRAFFIC_AGENT, TRAFFIC_NAME = "bench", "failover_traffic"
STANDBY_TEXT = "standing by"  # what `bga run` prints when another scheduler leads


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "—"


# -- the coordinator processes ------------------------------------------------------------------


class Coordinators:
    """``bga run --coordinator-only`` child processes on one database, each logging to a file."""

    def __init__(self, url: str, logs: Path, args: Any) -> None:
        self.url, self.logs, self.args = url, logs, args
        self.procs: dict[int, subprocess.Popen] = {}
        self.logfile: dict[int, Path] = {}
        self.started = 0
        self.bga = str(Path(sys.executable).parent / "bga")

    def start(self) -> int:
        cmd = [self.bga, "run", "--coordinator-only", "--interval", str(self.args.interval),
               "--db", self.url]
        if self.args.failover_s is not None:
            cmd += ["--failover-s", str(self.args.failover_s)]
        self.started += 1
        path = self.logs / f"coordinator-{self.started}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400", "NO_COLOR": "1"}
        with open(path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)
        self.procs[proc.pid] = proc
        self.logfile[proc.pid] = path
        return proc.pid

    def alive(self) -> set[int]:
        return {pid for pid, p in self.procs.items() if p.poll() is None}

    def log(self, pid: int) -> str:
        """The coordinator's output so far, whitespace collapsed (rich wraps long lines)."""
        return " ".join(self.logfile[pid].read_text(errors="replace").split())

    def kill(self, pid: int) -> float:
        """SIGKILL one coordinator; returns the wall-clock time of the kill."""
        at = time.time()
        os.kill(pid, signal.SIGKILL)
        self.procs[pid].wait()
        return at

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM every live coordinator (a clean stop), SIGKILL any that does not exit."""
        for pid in self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.procs[pid].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for pid, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(pid)

    def kill_all(self) -> None:
        for pid in self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.kill(pid)

    def tail(self, pid: int, lines: int = 15) -> str:
        text = self.logfile[pid].read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


async def last_tick(shared: SharedState) -> tuple[int | None, float | None, int]:
    """(pid, started_at, n) of the last tick in the state; None before any tick."""
    try:
        tick = (await shared.read()).get("tick") or {}
    except TimeoutError:  # the state kept changing under the read: no news this time
        return None, None, -1
    return (tick.get("coordinator") or {}).get("pid"), tick.get("started_at"), int(tick.get("n", 0))


async def wait_for(what: str, timeout: float, poll: float, check: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(poll)


async def wait_standby(coords: Coordinators, pids: list[int], timeout: float) -> None:
    async def standing() -> bool:
        for pid in pids:
            if coords.procs[pid].poll() is not None:
                raise RuntimeError(f"coordinator {pid} exited:\n{coords.tail(pid)}")
        return all(STANDBY_TEXT in coords.log(pid) for pid in pids)

    await wait_for(f"coordinators {pids} standing by", timeout, 0.1, standing)


async def wait_fresh_tick(shared: SharedState, coords: Coordinators, after_n: int,
                          timeout: float, poll: float) -> tuple[int, float, int]:
    """The next tick after tick ``after_n`` run by one of our live coordinators."""
    async def ticked() -> tuple[int, float, int] | None:
        pid, started, n = await last_tick(shared)
        return (pid, started, n) if pid in coords.alive() and n > after_n \
            and started is not None else None

    return await wait_for("a tick by a live coordinator", timeout, poll, ticked)


# -- the traffic producer -----------------------------------------------------------------------


def _traffic_main(url: str, batch: int, pause: float, stop: Any, out: Any) -> None:
    async def run() -> tuple[int, int]:
        acked = errors = i = 0
        async with SharedState.open(url, producer="bench-traffic") as shared:
            out.put(("started", 0, 0))
            while not stop.is_set():
                metrics = [PerformanceMetric(source_agent=TRAFFIC_AGENT, name=TRAFFIC_NAME,
                                             value=(i + j) % 1000 + 0.5, unit="ms")
                           for j in range(batch)]
                i += batch
                try:
                    acked += await shared.add_performance_metrics(metrics)
                except Exception as exc:  # not acknowledged: the check must not count it
                    errors += 1
                    print(f"traffic: write failed: {exc}", file=sys.stderr)
                await asyncio.sleep(pause)
        return acked, errors

    acked, errors = asyncio.run(run())
    out.put(("done", acked, errors))


class Traffic:
    def __init__(self, url: str, args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.stop_event = ctx.Event()
        self.out = ctx.Queue()
        self.proc = ctx.Process(target=_traffic_main, args=(
            url, args.traffic_batch, args.traffic_pause, self.stop_event, self.out))

    def start(self, timeout: float = 120) -> None:
        self.proc.start()
        self._get("started", timeout)

    def stop(self, timeout: float = 120) -> tuple[int, int]:
        self.stop_event.set()
        _, acked, errors = self._get("done", timeout)
        self.proc.join(timeout)
        return acked, errors

    def _get(self, what: str, timeout: float) -> tuple[str, int, int]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.out.get(timeout=0.5)
            except queue.Empty:
                if self.proc.exitcode is not None:
                    raise RuntimeError(f"traffic producer exited ({self.proc.exitcode}) before "
                                       f"{what}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"traffic producer: not {what} in {timeout:.0f} s") from None

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        if self.proc.pid is not None:
            self.proc.join()


# -- one backend --------------------------------------------------------------------------------


@dataclass
class Result:
    kind: str
    failovers: list[float] = field(default_factory=list)  # kill -> new leader's tick started
    seen: list[float] = field(default_factory=list)  # kill -> that tick visible in the state
    missed: int = 0
    ticks: int = 0
    started: int = 0
    traffic: tuple[int, int, int] | None = None  # (acknowledged, failed writes, in state)
    anomalies: list[str] = field(default_factory=list)


async def measure(kind: str, url: str, tmp: Path, args: Any) -> Result:
    res = Result(kind)
    logs = tmp / f"logs-{kind}"
    logs.mkdir()
    coords = Coordinators(url, logs, args)
    traffic = Traffic(url, args) if args.with_traffic else None
    # create the state up front, so the three coordinators do not race to set it up
    async with SharedState.open(url, producer="bench-failover", read_only=True) as shared:
        try:
            pids = [coords.start() for _ in range(3)]
            leader, _, n = await wait_fresh_tick(shared, coords, 0, args.timeout, args.poll)
            await wait_standby(coords, [p for p in pids if p != leader], args.timeout)
            if traffic is not None:
                traffic.start()
            for k in range(args.kills):
                # kill a leader that is ticking now, not one left over from before
                leader, _, n = await wait_fresh_tick(shared, coords, n, args.timeout, args.poll)
                killed_at = coords.kill(leader)
                try:
                    pid, started, n = await wait_for(
                        "a tick by another coordinator", args.timeout, args.poll,
                        lambda leader=leader: _other_tick(shared, leader))
                except TimeoutError:
                    res.missed += 1
                    print(f"{BACKEND_LABEL[kind]} kill {k + 1}: no takeover within "
                          f"{args.timeout:.0f} s", file=sys.stderr)
                    for p in coords.alive():
                        print(f"--- coordinator {p}:\n{coords.tail(p)}", file=sys.stderr)
                    break
                seen = time.time() - killed_at
                if pid not in coords.alive():
                    res.anomalies.append(f"kill {k + 1}: tick by pid {pid}, not a live child")
                if started < killed_at:
                    res.anomalies.append(f"kill {k + 1}: takeover tick started "
                                         f"{killed_at - started:.3f} s before the kill")
                res.failovers.append(started - killed_at)
                res.seen.append(seen)
                print(f"{BACKEND_LABEL[kind]} kill {k + 1}: pid {leader} -> {pid} in "
                      f"{started - killed_at:.3f} s (seen after {seen:.3f} s); load "
                      f"{loadavg()}", file=sys.stderr)
                replacement = coords.start()
                await wait_standby(coords, [replacement], args.timeout)
            res.ticks = (await last_tick(shared))[2]
            if traffic is not None:
                acked, errors = traffic.stop()
                coords.stop_all()
                async with SharedState.open(url, producer="bench-failover-check") as checker:
                    await checker.flush()
                    perf = await checker.get_performance_summary(hours=24)
                series = perf["series"].get(f"{TRAFFIC_AGENT}/{TRAFFIC_NAME}") or {}
                res.traffic = (acked, errors, int(series.get("count", 0)))
        finally:
            if traffic is not None:
                traffic.kill()
            coords.kill_all()
    res.started = coords.started
    return res


async def _other_tick(shared: SharedState, killed: int) -> tuple[int, float, int] | None:
    pid, started, n = await last_tick(shared)
    return (pid, started, n) if pid is not None and pid != killed and started is not None \
        else None


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    add_pg_option(p)
    p.add_argument("--kills", type=int, default=10, help="leaders killed per backend")
    p.add_argument("--interval", type=float, default=0.2, help="bga run --interval (s)")
    p.add_argument("--failover-s", type=float, default=None,
                   help="bga run --failover-s (default: bga's own)")
    p.add_argument("--poll", type=float, default=0.02, help="state poll period (s)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="give up waiting for a leader / takeover / standby after this (s)")
    p.add_argument("--with-traffic", action="store_true",
                   help="a producer writes metrics during the kills; check the final count")
    p.add_argument("--traffic-batch", type=int, default=100, help="metrics per traffic write")
    p.add_argument("--traffic-pause", type=float, default=0.01,
                   help="pause between traffic writes (s)")
    args = p.parse_args(argv)

    kinds = backends(args.pg_url)
    load_before = loadavg()
    results = []
    with temp_dir(args.dir) as tmp:
        for kind in kinds:
            with fresh_db(kind, tmp, args.pg_url, "failover") as url:
                results.append(asyncio.run(measure(kind, url, tmp, args)))

    rows = []
    for r in results:
        f, seen = r.failovers, r.seen
        meets = ("MISS" if r.missed or not f
                 else verdict(max(f), TARGET_S, higher_is_better=False))
        rows.append([BACKEND_LABEL[r.kind], len(f), min(f, default=None),
                     median(f) if f else None, max(f, default=None),
                     median(seen) if seen else None, max(seen, default=None), TARGET_S, meets,
                     r.ticks, r.started])
    where = redact(args.pg_url) if "postgresql" in kinds else "unreachable"
    notes = [f"failover: SIGKILL of the leading `bga run --coordinator-only --interval "
             f"{args.interval:g}` (3 running) -> tick.started_at of the first tick by another "
             "process; 'seen' adds the tick itself, its commit and the poll "
             f"({args.poll * 1000:.0f} ms) of SharedState.read().",
             f"target: <= {TARGET_S:g} s (meets: the max); ticks: ticks run in all; "
             "started: coordinator processes started (3 + one per kill).",
             f"PostgreSQL: {where}; SQLite: a file in a temp dir.",
             f"load average (1/5/15 min) before: {load_before}, after: {loadavg()} (after "
             "includes this benchmark's own processes)."]
    for r in results:
        if r.missed:
            notes.append(f"{BACKEND_LABEL[r.kind]}: {r.missed} kill(s) without a takeover "
                         f"within {args.timeout:.0f} s")
        notes.extend(f"{BACKEND_LABEL[r.kind]}: {a}" for a in r.anomalies)
    print_table(f"Failover after SIGKILL of the leader ({machine()})",
                ["backend", "kills", "min s", "median s", "max s", "seen median s",
                 "seen max s", "target s", "meets", "ticks", "started"],
                rows, plain=args.plain, notes=notes)
    if args.with_traffic:
        trows = [[BACKEND_LABEL[r.kind], *r.traffic,
                  "yes" if r.traffic[0] == r.traffic[2] else "NO"]
                 for r in results if r.traffic is not None]
        print_table("Metrics written during the kills: acknowledged vs folded",
                    ["backend", "acknowledged", "failed writes", "in state", "exact"],
                    trows, plain=args.plain,
                    notes=[f"one producer process, add_performance_metrics of "
                           f"{args.traffic_batch} every ~{args.traffic_pause * 1000:.0f} ms "
                           "while the leaders were killed; in state: count of that series "
                           "after the coordinators stopped and a final flush()."])


if __name__ == "__main__":
    main()
