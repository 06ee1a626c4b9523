"""Command-line workers for the multi-process integration tests.

Run as ``python -m tests.integration.workers <cmd> ...`` from the project root:

``write URL PRODUCER N [CHUNK]``
    Writes N mixed events through one ``SharedState`` opened with ``producer=PRODUCER``.
    Event ``i`` has kind ``KINDS[i % 4]`` (see :func:`expected_counts`). The events of one
    chunk are written by concurrent tasks (``asyncio.gather``); once every write of a chunk
    has been acknowledged the worker prints ``ACK <events acknowledged so far>`` and flushes
    stdout, so a parent that kills it knows a lower bound of what was committed.
    Prints ``DONE <n>`` after a clean close.

``errors URL PRODUCER N``
    Writes N error messages of one template (:func:`template_error`) through one
    ``SharedState``, 100 concurrent writes at a time; prints ``DONE <n>``.

``fold URL LOOPS [PAUSE_S [STOP_FILE [STALL_S]]]``
    Prints ``OPEN`` once the state is open, then calls ``flush()`` LOOPS times (``0``: until
    killed, or until STOP_FILE exists; ``-`` for none), printing ``FOLD <i> <rows>`` after each;
    on a stop file it does one more flush so nothing written before the file appeared is left
    behind. STALL_S > 0 sleeps that long before and after each checkpoint write and inbox
    delete, widening the windows a SIGKILL must hit (between a committed checkpoint and the
    delete of the rows it folded, ...) without changing what the fold does.

Every event of producer ``P`` is recognisable in the state: metrics go to series ``w/P``
(value 1.0), errors have error type ``PError`` and source agent ``P``, insights use dedupe key
``P`` (one insight per producer; occurrences count the events), heartbeats go to agent
``hb-P`` with ``{"i": i}`` as data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from state import SharedState, queries, sketch
from state.backends.sqlite import path_from_url
from state.backends.url import REDIS_PREFIXES

KINDS = ("metric", "error", "insight", "heartbeat")
INSIGHT_TYPE = "worker_insight"
DEFAULT_CHUNK = 100


def series_of(producer: str) -> str:
    return f"w/{producer}"


def error_type_of(producer: str) -> str:
    return f"{producer}Error"


def agent_of(producer: str) -> str:
    return f"hb-{producer}"


def expected_counts(n: int) -> dict[str, int]:
    """How many events of each kind the first ``n`` events of a writer contain."""
    return {kind: len(range(k, n, len(KINDS))) for k, kind in enumerate(KINDS)}


def _event(shared: SharedState, producer: str, i: int):
    kind = KINDS[i % len(KINDS)]
    if kind == "metric":
        return shared.add_performance_metric(
            {"source_agent": "w", "name": producer, "value": 1.0})
    if kind == "error":
        # Two message shapes -> two patterns per producer (numbers normalise away).
        msg = (f"timeout after {i} ms on shard {i % 7}" if i % 8 == 1
               else f"bad record {i} in batch {i // 100}")
        return shared.add_error_pattern(error_type_of(producer), msg, producer)
    if kind == "insight":
        return shared.add_insight(INSIGHT_TYPE, {"i": i, "producer": producer}, producer,
                                  priority="low", dedupe_key=producer)
    return shared.update_agent_heartbeat(agent_of(producer), {"status": "running", "i": i})


async def write_events(shared: SharedState, producer: str, n: int,
                       chunk: int = DEFAULT_CHUNK, on_ack=None, start: int = 0) -> int:
    """Events ``start..n-1`` of ``producer`` through ``shared``, ``chunk`` concurrent writes
    at a time; ``on_ack(done)`` after each fully acknowledged chunk."""
    done = start
    while done < n:
        end = min(done + chunk, n)
        await asyncio.gather(*(_event(shared, producer, i) for i in range(done, end)))
        done = end
        if on_ack is not None:
            on_ack(done)
    return done


TEMPLATE_ERROR = "GatewayTimeout"


def template_error(producer: str, i: int) -> str:
    """Message ``i`` of one template: its duration, host and id vary; the 12-digit hex id is
    all digits for some ``i`` (``000100000005``) and has letters for others (``0001000000a0``)."""
    ident = f"{(sum(map(ord, producer)) % 97 * 1_000_003 + i * 7_919) % 2 ** 48:012x}"
    return (f"timeout after {i % 30 + 1} s for id {ident} on shard-{i % 5}.db.internal "
            f"(flag={'true' if i % 2 else 'false'}, attempt {i % 3})")


async def write_errors(url: str, producer: str, n: int) -> None:
    async with SharedState.open(url, producer=producer) as shared:
        for start in range(0, n, 100):
            await asyncio.gather(*(shared.add_error_pattern(TEMPLATE_ERROR,
                                                            template_error(producer, i), producer)
                                   for i in range(start, min(n, start + 100))))
    sys.stdout.write(f"DONE {n}\n")
    sys.stdout.flush()


async def write(url: str, producer: str, n: int, chunk: int = DEFAULT_CHUNK) -> None:
    out = sys.stdout

    def ack(done: int) -> None:
        out.write(f"ACK {done}\n")
        out.flush()

    async with SharedState.open(url, producer=producer) as shared:
        done = await write_events(shared, producer, n, chunk, ack)
    out.write(f"DONE {done}\n")
    out.flush()


def _stall(obj: object, name: str, seconds: float) -> None:
    original = getattr(obj, name)

    async def stalled(*args, **kwargs):
        await asyncio.sleep(seconds)
        result = await original(*args, **kwargs)
        await asyncio.sleep(seconds)
        return result

    setattr(obj, name, stalled)


async def fold(url: str, loops: int, pause: float = 0.0, stop_file: str | None = None,
               stall: float = 0.0) -> None:
    out = sys.stdout
    async with SharedState.open(url, producer="folder") as shared:
        if stall > 0:
            _stall(shared.backend.checkpointer, "aput", stall)
            _stall(shared.backend, "delete_folded", stall)
        out.write("OPEN\n")
        out.flush()
        i = 0
        while loops <= 0 or i < loops:
            last = stop_file is not None and os.path.exists(stop_file)
            report = await shared.flush()
            i += 1
            out.write(f"FOLD {i} {report.rows}\n")
            out.flush()
            if last:
                break
            if pause:
                await asyncio.sleep(pause)
    out.write("DONE\n")
    out.flush()

# -- helpers for the tests (parent side) -----------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def spawn(log_dir: Path, name: str, *args: str,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a worker process; its stdout/stderr go to ``<log_dir>/<name>.out|.err``."""
    with open(log_dir / f"{name}.out", "wb") as out, open(log_dir / f"{name}.err", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "tests.integration.workers", *args],
                                cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env)


def lines(log_dir: Path, name: str) -> list[str]:
    path = log_dir / f"{name}.out"
    return path.read_text().splitlines() if path.exists() else []


def stderr_of(log_dir: Path, name: str) -> str:
    path = log_dir / f"{name}.err"
    return path.read_text()[-3000:] if path.exists() else ""


def acked(log_dir: Path, name: str) -> int:
    """Events a writer had acknowledged (complete ``ACK`` lines only)."""
    done = 0
    for line in lines(log_dir, name):
        parts = line.split()
        if len(parts) == 2 and parts[0] == "ACK" and parts[1].isdigit():
            done = int(parts[1])
    return done


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


Query = Callable[..., list[tuple]]


@contextlib.contextmanager
def truth_db(url: str) -> Iterator[Query]:
    """``query(sql, params=())`` on a plain connection to the database at ``url``, around the
    backend under test: the SQLite file, or the PostgreSQL schema the URL's search_path names
    (the same ``bga_*`` tables in both). SQL takes ``?`` placeholders and returns all rows."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(path_from_url(url), timeout=60)
        try:
            yield lambda sql, params=(): conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    elif is_postgres(url):
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=10) as pg:
            yield lambda sql, params=(): pg.execute(sql.replace("?", "%s"), params).fetchall()
    else:
        raise ValueError(f"no ground truth for {url!r}: SQLite or PostgreSQL only")


def redis_inbox(url: str) -> dict[int, tuple[str, list[tuple[int, str]]]]:
    """Ground truth straight from a Redis state's keys: per inbox stream, its producer and
    its entries still in the inbox as (seq, kind)."""
    import redis

    from state.backends.redisdb import Keys
    from state.backends.url import parse_url

    keys = Keys(parse_url(url).key_prefix)
    client = redis.Redis.from_url(url.split("?", 1)[0], socket_connect_timeout=10)
    try:
        out: dict[int, tuple[str, list[tuple[int, str]]]] = {}
        for stream in range(1, int(client.get(keys("next_stream")) or 0) + 1):
            producer = (client.hget(keys("stream", stream), "producer") or b"").decode()
            rows = [(int(i.split(b"-")[1]), f[b"k"].decode())
                    for i, f in client.xrange(keys("inbox", stream))]
            out[stream] = (producer, rows)
        return out
    finally:
        client.close()


def inbox_truth(url: str) -> dict[str, dict]:
    """Ground truth straight from the tables: per producer, ``streams``: its streams as
    (stream id, rows still in the inbox, lowest seq, highest seq), and ``kinds``: its rows
    still in the inbox per kind (empty: nothing pending)."""
    if url.startswith(REDIS_PREFIXES):
        out = {}
        for stream, (producer, rows) in sorted(redis_inbox(url).items()):
            rec = out.setdefault(producer, {"streams": [], "kinds": {}})
            seqs = [seq for seq, _ in rows]
            rec["streams"].append((stream, len(rows), min(seqs, default=None),
                                   max(seqs, default=None)))
            for _, kind in rows:
                rec["kinds"][kind] = rec["kinds"].get(kind, 0) + 1
        return out
    with truth_db(url) as query:
        out: dict[str, dict] = {}
        for producer, stream, n, lo, hi in query(
                "SELECT s.producer, s.stream_id, count(i.seq), min(i.seq), max(i.seq) "
                "FROM bga_streams s LEFT JOIN bga_inbox i ON i.stream_id = s.stream_id "
                "GROUP BY s.stream_id, s.producer ORDER BY s.stream_id"):
            rec = out.setdefault(producer, {"streams": [], "kinds": {}})
            rec["streams"].append((stream, n, lo, hi))
        for producer, kind, n in query(
                "SELECT s.producer, i.kind, count(*) FROM bga_inbox i "
                "JOIN bga_streams s ON s.stream_id = i.stream_id GROUP BY 1, 2"):
            out[producer]["kinds"][kind] = n
        return out


def wait_sessions_gone(url: str, application_name: str, timeout: float) -> int:
    """Wait (at most ``timeout`` s) until the PostgreSQL server at ``url`` has no session of
    ``application_name`` left; returns how many are left (0 once they are all gone)."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as pg:
        while True:  # autocommit: each count sees a fresh pg_stat_activity snapshot
            (left,), = pg.execute("SELECT count(*) FROM pg_stat_activity "
                                  "WHERE application_name = %s", (application_name,)).fetchall()
            if not left or time.monotonic() > deadline:
                return int(left)
            time.sleep(0.01)


def observe(state: dict, producers: list[str]) -> dict[str, dict[str, int]]:
    """Per producer: events of each kind as the read API reports them for ``state`` (one
    snapshot). ``metric_all``/``error_all`` count every bucket ever kept, ``metric``/``error``
    the last hour's window, so a roll-up that disagreed with the minute buckets shows."""
    now = time.time()
    summary = queries.performance_summary(state, 1, now)["series"]
    agents = {a["agent_id"]: a for a in queries.agent_list(state)}
    insights: dict[str, int] = {}
    for ins in queries.insight_list(state, insight_type=INSIGHT_TYPE):
        insights[ins["source_agent"]] = insights.get(ins["source_agent"], 0) + ins["occurrences"]
    out: dict[str, dict[str, int]] = {}
    for p in producers:
        data = (state.get("metrics") or {}).get(series_of(p))
        metric_all = sum(agg[sketch.COUNT] for agg in data["tiers"]["1d"].values()) if data else 0
        patterns = queries.error_patterns(state, now, error_type_of(p), 1, 24)
        agent = agents.get(agent_of(p)) or {}
        out[p] = {
            "metric": summary.get(series_of(p), {}).get("count", 0),
            "metric_all": metric_all,
            "error": sum(x["frequency"] for x in patterns),
            "error_all": sum(x["count"] for x in patterns),
            "insight": insights.get(p, 0),
            "heartbeat": agent.get("heartbeats", 0),
            "last_hb": (agent.get("heartbeat") or {}).get("i", -1),
        }
    return out


def expected_view(n: int, last_hb: int | None = None) -> dict[str, int]:
    """What ``observe`` must report for a producer whose first ``n`` events were written."""
    c = expected_counts(n)
    hbs = [i for i in range(n) if KINDS[i % len(KINDS)] == "heartbeat"]
    return {"metric": c["metric"], "metric_all": c["metric"], "error": c["error"],
            "error_all": c["error"], "insight": c["insight"], "heartbeat": c["heartbeat"],
            "last_hb": (hbs[-1] if hbs else -1) if last_hb is None else last_hb}



def prefix_length(view: dict[str, int]) -> int:
    """How many events a per-producer view accounts for (each event is exactly one kind)."""
    return view["metric"] + view["error"] + view["insight"] + view["heartbeat"]


async def run_writers_while_reading(url: str, tmp_path: Path, spawner, producers: list[str],
                                    events: int, chunk: int, timeout_s: float) -> tuple[int, int]:
    """Start a folder and one writer process per producer, read while they write, and check
    every read: per producer one consistent prefix of its events, never below what it had
    acknowledged before the read, never going back. Returns (reads, rows the folder folded)."""
    stop = tmp_path / "stop-folding"
    spawner.spawn("folder", "fold", url, "0", "0.02", str(stop))
    await spawner.wait_line("folder", lambda line: line == "OPEN")
    for p in producers:
        spawner.spawn(p, "write", url, p, str(events), str(chunk))
    reads = 0
    last = dict.fromkeys(producers, 0)
    deadline = time.monotonic() + timeout_s
    async with SharedState.open(url, producer="observer", read_only=True) as shared:
        while True:
            running = [p for p in producers if spawner.procs[p].poll() is None]
            floor = {p: spawner.acked(p) for p in producers}
            view = observe(await shared.read(), producers)
            reads += 1
            for p in producers:
                k = prefix_length(view[p])
                assert floor[p] <= k <= events, (p, k, floor[p], view[p])
                assert view[p] == expected_view(k), (p, k, view[p])
                assert k >= last[p], f"{p} went back from {last[p]} to {k} events"
                last[p] = k
            if not running:
                break
            assert time.monotonic() < deadline, [spawner.describe(p) for p in running]
            await asyncio.sleep(0.05)
    for p in producers:
        assert await spawner.wait_exit(p, 30) == 0, spawner.describe(p)
        assert spawner.lines(p)[-1] == f"DONE {events}", spawner.describe(p)
    stop.touch()
    assert await spawner.wait_exit("folder", timeout_s) == 0, spawner.describe("folder")
    folded = sum(int(line.split()[2]) for line in spawner.lines("folder")
                 if line.startswith("FOLD "))
    return reads, folded


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "write":
        chunk = int(argv[4]) if len(argv) > 4 else DEFAULT_CHUNK
        asyncio.run(write(argv[1], argv[2], int(argv[3]), chunk))
        return 0
    if len(argv) >= 4 and argv[0] == "errors":
        asyncio.run(write_errors(argv[1], argv[2], int(argv[3])))
        return 0
    if len(argv) >= 3 and argv[0] == "fold":
        pause = float(argv[3]) if len(argv) > 3 else 0.0
        stop_file = argv[4] if len(argv) > 4 and argv[4] != "-" else None
        stall = float(argv[5]) if len(argv) > 5 else 0.0
        asyncio.run(fold(argv[1], int(argv[2]), pause, stop_file, stall))
        return 0
    sys.stderr.write(__doc__ or "")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
