"""Failover: how soon a standby scheduler takes over when the leading one is SIGKILLed, is
SIGSTOPped (hung), or its host vanishes (its network namespace's link goes down), on
PostgreSQL and on a SQLite file, with exact counts of what a producer wrote meanwhile.

Three ``bga run --coordinator-only --failover-s F`` processes run on a fresh state; the state's
``tick.coordinator.pid`` names the process that ran the last tick. For each fault the leader is
hit right after it printed a tick (between ticks), and the failover time is from the fault
(wall clock) to ``tick.started_at`` of the first tick by another process.

- kill: SIGKILL; a replacement coordinator is started.
- stop: SIGSTOP; after the takeover SIGCONT, and the woken leader must say it lost the lock
  and stand by (it stays as a standby).
- vanish (PostgreSQL): the leader runs in a network namespace (``ip netns``, needs root)
  reaching the server over a veth pair; the host side of the link goes down. After the
  takeover the link comes back and the old leader must stand down; then it is killed. A
  SQLite file lives on one host: a host that vanishes takes the file with it (n/a).

PostgreSQL runs on a server this benchmark starts itself (``initdb``/``pg_ctl``, as the tests
do), listening on 127.0.0.1 and on the veth address. A producer process writes metrics
through the API during all faults; at the end the state is flushed and its count of them is
compared with the producer's acknowledged writes.

    .venv/bin/python bench/failover.py --trials 3
    .venv/bin/python bench/failover.py --faults stop --failover-s 5 --backends sqlite
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    BACKEND_LABEL,
    machine,
    median,
    parser,
    print_table,
    redis_base,
    redis_prefix,
    temp_dir,
    verdict,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from state import PerformanceMetric, SharedState
from state.backends.lease import lease_s, renew_s
from tests.integration import pgserver

TRAFFIC_AGENT, TRAFFIC_NAME = "bench", "failover_traffic"
STANDBY_TEXT = "standing by"  # what `bga run` prints when another scheduler leads
LOST_TEXT = "lost the scheduler lock"  # what a leader that lost its lease prints
FAULTS = ("kill", "stop", "vanish")
NETNS_HOST, NETNS_PEER = "10.231.0.1", "10.231.0.2"


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "—"


# -- a vanishing host: a network namespace on a veth pair ------------------------------------------


class Netns:
    """Namespace ``bga-fo-<pid>`` reaching the host at NETNS_HOST over a veth pair."""

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.name, self.host_if, self.peer_if = f"bga-fo-{tag}", f"bgafo{tag}h", f"bgafo{tag}p"

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)

    def up(self) -> None:
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
        self._ip("link", "set", self.peer_if, "netns", self.name)
        self._ip("addr", "add", f"{NETNS_HOST}/30", "dev", self.host_if)
        self._ip("link", "set", self.host_if, "up")
        self._ip("-n", self.name, "addr", "add", f"{NETNS_PEER}/30", "dev", self.peer_if)
        self._ip("-n", self.name, "link", "set", self.peer_if, "up")
        self._ip("-n", self.name, "link", "set", "lo", "up")

    def link(self, up: bool) -> None:
        self._ip("link", "set", self.host_if, "up" if up else "down")

    def down(self) -> None:
        with contextlib.suppress(Exception):
            self._ip("link", "del", self.host_if)
        with contextlib.suppress(Exception):
            self._ip("netns", "del", self.name)

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


@contextlib.contextmanager
def maybe_netns(wanted: bool) -> Iterator[Netns | None]:
    if not wanted:
        yield None
        return
    ns = Netns()
    try:
        ns.up()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        err = getattr(exc, "stderr", "") or exc
        print(f"no network namespace ({str(err).strip()}); skipping the vanish fault",
              file=sys.stderr)
        ns.down()
        yield None
        return
    try:
        yield ns
    finally:
        ns.down()


# -- the coordinator processes ------------------------------------------------------------------


class Coordinators:
    """``bga run --coordinator-only`` child processes on one database, each logging to a file."""

    def __init__(self, url: str, logs: Path, args: Any) -> None:
        self.url, self.logs, self.args = url, logs, args
        self.procs: dict[int, subprocess.Popen] = {}
        self.logfile: dict[int, Path] = {}
        self.started = 0
        self.bga = str(Path(sys.executable).parent / "bga")

    def start(self, *, url: str | None = None, prefix: list[str] | None = None) -> int:
        cmd = [*(prefix or []), self.bga, "run", "--coordinator-only", "--interval",
               str(self.args.interval), "--failover-s", str(self.args.failover_s),
               "--db", url or self.url]
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
        """The coordinator's output so far, whitespace collapsed."""
        return " ".join(self.logfile[pid].read_text(errors="replace").split())

    def ticks_printed(self, pid: int) -> int:
        return self.logfile[pid].read_text(errors="replace").count("\ntick: ")

    def signal(self, pid: int, sig: int) -> float:
        at = time.time()
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            self.procs[pid].wait()
        return at

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM every live coordinator (a clean stop), SIGKILL any that does not exit."""
        for pid in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                self.procs[pid].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for pid, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.signal(pid, signal.SIGKILL)

    def kill_all(self) -> None:
        for pid in self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.signal(pid, signal.SIGKILL)

    def tail(self, pid: int, lines: int = 15) -> str:
        text = self.logfile[pid].read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


async def last_tick(shared: SharedState) -> tuple[int | None, float | None, int]:
    """(pid, started_at, n) of the last tick in the state; None before any tick."""
    try:
        tick = (await shared.read()).get("tick") or {}
    except Exception:  # the state kept changing under the read: no news this time
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


async def wait_log(coords: Coordinators, pids: list[int], text: str, timeout: float) -> None:
    async def said() -> bool:
        for pid in pids:
            if coords.procs[pid].poll() is not None:
                raise RuntimeError(f"coordinator {pid} exited:\n{coords.tail(pid)}")
        return all(text in coords.log(pid) for pid in pids)

    await wait_for(f"coordinators {pids} saying {text!r}", timeout, 0.05, said)


async def leading(shared: SharedState, coords: Coordinators, timeout: float, poll: float,
                  among: set[int] | None = None) -> int:
    """The pid of the coordinator that runs the ticks now (one of ``among``)."""
    async def leader() -> int | None:
        pid, _, _ = await last_tick(shared)
        ok = pid in coords.alive() and (among is None or pid in among)
        return pid if ok else None

    return await wait_for("a ticking leader", timeout, poll, leader)


async def between_ticks(coords: Coordinators, pid: int, timeout: float) -> None:
    """Return right after ``pid`` printed a tick: it is then between two ticks."""
    before = coords.ticks_printed(pid)

    async def printed() -> bool:
        return coords.ticks_printed(pid) > before

    await wait_for(f"a tick printed by {pid}", timeout, 0.005, printed)


# -- the traffic producer -----------------------------------------------------------------------


def _traffic_main(url: str, batch: int, pause: float, stop: Any, out: Any) -> None:
    from state.api import CommitUnknown

    async def run() -> tuple[int, int, int]:
        acked = errors = unknown = i = 0
        async with SharedState.open(url, producer="bench-traffic") as shared:
            out.put(("started", 0, 0, 0))
            while not stop.is_set():
                metrics = [PerformanceMetric(source_agent=TRAFFIC_AGENT, name=TRAFFIC_NAME,
                                             value=(i + j) % 1000 + 0.5, unit="ms")
                           for j in range(batch)]
                i += batch
                try:
                    acked += await shared.add_performance_metrics(metrics)
                except CommitUnknown:
                    unknown += batch
                except Exception:  # not acknowledged: the check must not count it
                    errors += 1
                await asyncio.sleep(pause)
        return acked, errors, unknown

    acked, errors, unknown = asyncio.run(run())
    out.put(("done", acked, errors, unknown))


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

    def stop(self, timeout: float = 120) -> tuple[int, int, int]:
        self.stop_event.set()
        _, acked, errors, unknown = self._get("done", timeout)
        self.proc.join(timeout)
        return acked, errors, unknown

    def _get(self, what: str, timeout: float) -> tuple[str, int, int, int]:
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
    fault: str
    failovers: list[float] = field(default_factory=list)  # fault -> new leader's tick started
    missed: int = 0
    stood_down: int = 0  # stop / vanish: old leaders that said they lost the lock on waking
    note: str = ""


@dataclass
class Run:
    kind: str
    results: dict[str, Result]
    traffic: tuple[int, int, int, int] | None = None  # acked, failed, unknown, in state
    ticks: int = 0
    started: int = 0


async def _takeover(shared: SharedState, old: int, at: float, args: Any) -> float:
    async def other() -> float | None:
        pid, started, _ = await last_tick(shared)
        ok = pid is not None and pid != old and started is not None and started >= at
        return started if ok else None

    return await wait_for("a tick by another coordinator", args.timeout, args.poll,
                          other) - at


async def measure(kind: str, url: str, tmp: Path, args: Any, netns: Netns | None,
                  ns_url: str | None) -> Run:
    logs = tmp / f"logs-{kind}"
    logs.mkdir()
    coords = Coordinators(url, logs, args)
    faults = [f for f in args.faults if f != "vanish" or kind == "postgresql"]
    run = Run(kind, {f: Result(kind, f) for f in args.faults})
    if "vanish" in args.faults and kind != "postgresql":
        run.results["vanish"].note = "n/a: one host's file"
    elif "vanish" in args.faults and netns is None:
        run.results["vanish"].note = "n/a: no network namespace (needs root)"
        faults.remove("vanish")
    traffic = Traffic(url, args)
    async with SharedState.open(url, producer="bench-failover"):
        pass  # creates the state: a read-only open refuses a database not made yet
    async with SharedState.open(url, producer="bench-failover", read_only=True) as shared:
        try:
            traffic.start()
            for _ in range(3):
                coords.start()
            for fault in faults:
                res = run.results[fault]
                for k in range(args.trials):
                    try:
                        await one_fault(fault, res, shared, coords, args, netns, ns_url)
                    except (TimeoutError, RuntimeError) as exc:
                        res.missed += 1
                        print(f"{BACKEND_LABEL[kind]} {fault} {k + 1}: {exc}", file=sys.stderr)
                        for p in coords.alive():
                            print(f"--- coordinator {p}:\n{coords.tail(p)}", file=sys.stderr)
                        coords.stop_all()
                        for _ in range(3):
                            coords.start()
            run.ticks = (await last_tick(shared))[2]
            acked, errors, unknown = traffic.stop()
            coords.stop_all()
            async with SharedState.open(url, producer="bench-failover-check") as checker:
                await checker.flush()
                perf = await checker.get_performance_summary(hours=24)
            series = perf["series"].get(f"{TRAFFIC_AGENT}/{TRAFFIC_NAME}") or {}
            run.traffic = (acked, errors, unknown, int(series.get("count", 0)))
        finally:
            traffic.kill()
            coords.kill_all()
    run.started = coords.started
    return run


async def one_fault(fault: str, res: Result, shared: SharedState, coords: Coordinators,
                    args: Any, netns: Netns | None, ns_url: str | None) -> None:
    label = BACKEND_LABEL[res.kind]
    if fault == "vanish":
        assert netns is not None and ns_url is not None
        coords.stop_all()  # the leader must be the one in the namespace: start it alone
        leader = coords.start(url=ns_url, prefix=netns.prefix())
        await leading(shared, coords, args.timeout, args.poll, among={leader})
        standbys = [coords.start(), coords.start()]
        await wait_log(coords, standbys, STANDBY_TEXT, args.timeout)
    else:
        leader = await leading(shared, coords, args.timeout, args.poll)
        standbys = [p for p in coords.alive() if p != leader]
        await wait_log(coords, standbys, STANDBY_TEXT, args.timeout)
    await between_ticks(coords, leader, args.timeout)
    if fault == "kill":
        at = coords.signal(leader, signal.SIGKILL)
    elif fault == "stop":
        at = coords.signal(leader, signal.SIGSTOP)
    else:
        at = time.time()
        netns.link(up=False)  # type: ignore[union-attr]
    try:
        took = await _takeover(shared, leader, at, args)
    finally:
        if fault == "stop":
            coords.signal(leader, signal.SIGCONT)
        elif fault == "vanish":
            netns.link(up=True)  # type: ignore[union-attr]
    res.failovers.append(took)
    if fault == "kill":
        coords.start()
    else:  # the old leader wakes up (or gets its link back) and must stand down
        with contextlib.suppress(TimeoutError):
            await wait_log(coords, [leader], LOST_TEXT, args.timeout)
            res.stood_down += 1
        if fault == "vanish":
            coords.signal(leader, signal.SIGKILL)
            coords.start()
    print(f"{label} {fault} {len(res.failovers)}: pid {leader} replaced in {took:.3f} s; "
          f"load {loadavg()}", file=sys.stderr)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5, help="faults of each kind per backend")
    p.add_argument("--faults", type=lambda s: [f for f in s.split(",") if f],
                   default=list(FAULTS), help="comma-separated: kill,stop,vanish")
    p.add_argument("--backends", type=lambda s: [b for b in s.split(",") if b],
                   default=["postgresql", "redis", "sqlite"], help="postgresql,redis,sqlite")
    p.add_argument("--interval", type=float, default=0.2, help="bga run --interval (s)")
    p.add_argument("--failover-s", type=float, default=5.0, help="bga run --failover-s")
    p.add_argument("--poll", type=float, default=0.02, help="state poll period (s)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="give up waiting for a leader / takeover / standby after this (s)")
    p.add_argument("--traffic-batch", type=int, default=100, help="metrics per traffic write")
    p.add_argument("--traffic-pause", type=float, default=0.01,
                   help="pause between traffic writes (s)")
    args = p.parse_args(argv)
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        p.error(f"unknown fault(s) {', '.join(sorted(unknown))}; choose from {FAULTS}")

    load_before = loadavg()
    runs: list[Run] = []
    notes: list[str] = []
    with temp_dir(args.dir) as tmp, maybe_netns("vanish" in args.faults and
                                                 "postgresql" in args.backends) as netns:
        for kind in args.backends:
            if kind == "postgresql":
                if pgserver.find_bin() is None:
                    notes.append(f"PostgreSQL skipped: {pgserver.MISSING}")
                    continue
                listen = "127.0.0.1" + (f",{NETNS_HOST}" if netns is not None else "")
                with pgserver.own_server(listen=listen) as server:
                    ns_url = server.url.replace("@127.0.0.1:", f"@{NETNS_HOST}:")
                    runs.append(asyncio.run(measure(kind, server.url, tmp, args, netns,
                                                    ns_url)))
            elif kind == "redis":
                with redis_prefix(redis_base()) as url:
                    runs.append(asyncio.run(measure(kind, url, tmp, args, None, None)))
            else:
                url = f"sqlite:///{tmp / 'failover.db'}"
                runs.append(asyncio.run(measure(kind, url, tmp, args, None, None)))

    target = args.failover_s
    rows = []
    for r in runs:
        for fault, res in r.results.items():
            f = res.failovers
            if res.note:
                rows.append([BACKEND_LABEL[r.kind], fault, 0, None, None, None, target,
                             res.note, "—"])
                continue
            meets = ("MISS" if res.missed or not f
                     else verdict(max(f), target, higher_is_better=False))
            down = "—" if fault == "kill" else f"{res.stood_down}/{len(f)}"
            rows.append([BACKEND_LABEL[r.kind], fault, len(f), min(f, default=None),
                         median(f) if f else None, max(f, default=None), target, meets, down])
    notes += [f"fault -> tick.started_at of the first tick by another process; 3 x `bga run "
              f"--coordinator-only --interval {args.interval:g} --failover-s "
              f"{args.failover_s:g}` (lease {lease_s(args.failover_s):.2f} s, renewed every "
              f"{renew_s(args.failover_s):.2f} s); the leader is hit right after it printed "
              "a tick.",
              "stood down: stopped / cut-off leaders that, once woken or reconnected, said "
              "they lost the lock and stood by (none ticked again: the checkpoint's "
              "compare-and-swap would have refused it).",
              "PostgreSQL: a server started by this benchmark (initdb, fsync off); vanish: the "
              "leader in a network namespace whose veth link goes down.",
              f"load average (1/5/15 min) before: {load_before}, after: {loadavg()}."]
    for r in runs:
        for res in r.results.values():
            if res.missed:
                notes.append(f"{BACKEND_LABEL[r.kind]} {res.fault}: {res.missed} trial(s) "
                             f"without a takeover within {args.timeout:.0f} s")
    print_table(f"Leader failover ({machine()})",
                ["backend", "fault", "trials", "min s", "median s", "max s", "target s",
                 "meets", "stood down"], rows, plain=args.plain, notes=notes)
    trows = [[BACKEND_LABEL[r.kind], *r.traffic,
              "yes" if r.traffic[0] == r.traffic[3] and not r.traffic[2] else "NO"]
             for r in runs if r.traffic is not None]
    print_table("Metrics written during the faults: acknowledged vs counted",
                ["backend", "acknowledged", "failed writes", "unknown", "in state", "exact"],
                trows, plain=args.plain,
                notes=[f"one producer process, add_performance_metrics of {args.traffic_batch} "
                       f"every ~{args.traffic_pause * 1000:.0f} ms during every fault; in "
                       "state: that series' count after the coordinators stopped and a final "
                       "flush()."])


if __name__ == "__main__":
    main()
