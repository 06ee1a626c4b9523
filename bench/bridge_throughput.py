"""LangSmith Bridge throughput: mirror runs from an export file and from a LangSmith server.

Writes a JSON Lines export of N runs in the shape ``list_runs`` returns (10 run names, a fifth
of them child runs, ~3 % failed, tokens and costs on LLM calls, ends spread over the last 50
minutes), then runs ``bga bridge sync`` (``nodes.langsmith_bridge.sync.sync``) on a fresh
SQLite state: once from the file, then through the real ``langsmith.Client`` from the local
LangSmith server of the tests (``tests/bridge/fake_langsmith.py``, run in its own process),
side by side on the v1 path (``POST /runs/query``, a ClickHouse instance) and the v2 path
(``Client.runs.query``, a SmithDB instance), with the requests each took.
Each measurement runs in a fresh process, so its peak RSS is its own: the growth of the peak
during the sync over the peak before it shows whether memory stays flat as N grows.

    .venv/bin/python bench/bridge_throughput.py
    .venv/bin/python bench/bridge_throughput.py --file-runs 10k,100k,300k --server-runs 100k
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from _common import int_list, machine, parser, print_table, rate, temp_dir, verdict

ROOT = Path(__file__).resolve().parent.parent
TARGET = 20_000  # runs/s from a file
NAMES = ("agent", "checkout", "search", "summarize", "classify", "route", "extract", "answer")
CHILDREN = (("llm", "ChatOpenAI"), ("tool", "web_search"))
PROJECT = "bench"


def iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def make_runs(n: int, seed: int, project_id: str = "00000000-0000-4000-8000-000000000001"):
    """N runs, oldest first, as ``list_runs`` returns them (a fifth are child runs)."""
    rng = random.Random(seed)
    now = time.time()
    start0 = now - 3_000
    step = 2_900 / max(n, 1)
    parent = None
    for i in range(n):
        start = start0 + i * step
        child = i % 5 == 4 and parent is not None
        run_type, name = rng.choice(CHILDREN) if child else ("chain", rng.choice(NAMES))
        latency = rng.lognormvariate(-1.5 if child else -0.5, 0.6)
        rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        failed = rng.random() < 0.03
        run: dict[str, Any] = {
            "id": rid, "name": name, "run_type": run_type, "start_time": iso(start),
            "end_time": iso(start + latency), "status": "error" if failed else "success",
            "error": (f"TimeoutError('upstream {rng.randint(500, 504)} after "
                      f"{rng.randint(1, 60)} s')") if failed else None,
            "parent_run_id": parent if child else None, "trace_id": parent if child else rid,
            "session_id": project_id, "dotted_order": f"{i:08d}", "tags": ["bench"],
            "extra": {"metadata": {"user": f"u{i % 100}", "ls_model_name": "gpt-4o-mini"}},
            "inputs": {"question": f"question {i}"}, "outputs": {"answer": f"answer {i}"},
            "app_path": f"/o/t/projects/p/{project_id}/r/{rid}",
            "prompt_tokens": None, "completion_tokens": None, "total_tokens": None,
            "total_cost": None, "first_token_time": None, "feedback_stats": None,
            "reference_example_id": None,
        }
        if run_type == "llm":
            p, c = rng.randint(50, 2_000), rng.randint(10, 500)
            run.update(prompt_tokens=p, completion_tokens=c, total_tokens=p + c,
                       total_cost=f"{(p * 0.15 + c * 0.6) / 1e6:.8f}",
                       first_token_time=iso(start + latency * 0.3))
        if not child:
            parent = rid
        yield run


# -- workers (each in its own process) ------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def mirror(db: str, n: int, *, path: str | None) -> dict[str, Any]:
    from nodes.langsmith_bridge.sync import sync
    from state import SharedState

    async with SharedState.open(db, producer="bench") as shared:
        if path is None:
            await shared.update_config({"agents": {"langsmith_bridge": {"options": {
                "api_url": os.environ["BENCH_LANGSMITH_URL"], "settle_s": 0,
                "backfill_s": 3_600, "child_run_types": ["llm", "tool"]}}}})
        await shared.flush()
        before = peak_rss_mb()
        started = time.perf_counter()
        result = await sync(shared, path=path, project=PROJECT if path else None)
        seconds = time.perf_counter() - started
        peak = peak_rss_mb()
        perf = await shared.get_performance_summary(hours=1)
    counted = sum(s["count"] for name, s in perf["series"].items()
                  if name.startswith("langsmith_bridge/") and name.endswith("/latency_ms"))
    return {"n": n, "seconds": seconds, "mirrored": result.report.mirrored,
            "requests": result.source.get("requests"), "api": result.source.get("api"),
            "read": result.report.read, "steps": result.steps, "counted": counted,
            "error": result.error, "rss_before_mb": before, "rss_peak_mb": peak}


def worker(kind: str, db: str, n: int, path: str | None) -> None:
    out = asyncio.run(mirror(db, n, path=path if kind == "file" else None))
    print("RESULT " + json.dumps(out), flush=True)


def serve(n: int, seed: int, api: str) -> None:
    """The local LangSmith server with N runs (queried through ``api``), until stdin closes."""
    sys.path.insert(0, str(ROOT))
    from tests.bridge.fake_langsmith import FakeLangSmith

    fake = (FakeLangSmith.v2() if api == "v2" else FakeLangSmith()).start()
    pid = fake.add_project(PROJECT)
    fake.put(PROJECT, *make_runs(n, seed, pid))
    print(f"URL {fake.url}", flush=True)
    sys.stdin.read()
    fake.stop()


def run_worker(kind: str, n: int, tmp: Path, args: Any, path: Path | None = None,
               env: dict[str, str] | None = None, label: str = "") -> dict[str, Any]:
    db = f"sqlite:///{tmp / f'{kind}{label}-{n}.db'}"  # a fresh state per row
    cmd = [sys.executable, __file__, "--worker", kind, "--db", db, "--n", str(n)]
    if path is not None:
        cmd += ["--path", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"worker failed: {proc.stderr[-2000:]}")


def row(source: str, r: dict[str, Any], target: float | None) -> list[Any]:
    runs_s = rate(r["mirrored"], r["seconds"])
    return [source, r["n"], r["mirrored"], r["counted"], r["steps"], r.get("requests") or "—",
            r["seconds"], runs_s,
            r["rss_before_mb"], r["rss_peak_mb"] - r["rss_before_mb"],
            verdict(runs_s, target) if target else "—"]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--file-runs", default="10k,50k,100k", help="runs in the export files")
    p.add_argument("--server-runs", default="10k,100k", help="runs on the local server")
    p.add_argument("--worker", choices=("file", "server"), help=argparse_hidden())
    p.add_argument("--serve", type=int, help=argparse_hidden())
    p.add_argument("--api", choices=("v1", "v2"), default="v1", help=argparse_hidden())
    p.add_argument("--db", help=argparse_hidden())
    p.add_argument("--n", type=int, help=argparse_hidden())
    p.add_argument("--path", help=argparse_hidden())
    args = p.parse_args()
    if args.serve is not None:
        return serve(args.serve, args.seed, args.api)
    if args.worker:
        return worker(args.worker, args.db, args.n, args.path)

    rows = []
    with temp_dir(args.dir) as tmp:
        for n in int_list(args.file_runs):
            path = tmp / f"runs-{n}.jsonl"
            with path.open("w") as f:
                for run in make_runs(n, args.seed):
                    f.write(json.dumps(run) + "\n")
            size_mb = path.stat().st_size / 1_048_576
            r = run_worker("file", n, tmp, args, path)
            if r["error"]:
                raise SystemExit(f"file sync failed: {r['error']}")
            rows.append(row(f"export file ({size_mb:.0f} MB)", r, TARGET))
            path.unlink()
        from tests.bridge.fake_langsmith import API_KEY

        for n, api in ((n, api) for n in int_list(args.server_runs) for api in ("v1", "v2")):
            server = subprocess.Popen([sys.executable, __file__, "--serve", str(n), "--seed",
                                       str(args.seed), "--api", api], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
            try:
                url = server.stdout.readline().split()[1]  # type: ignore[union-attr]
                env = {"BENCH_LANGSMITH_URL": url, "BGA_LANGSMITH_ENDPOINTS": url,
                       "LANGSMITH_API_KEY": API_KEY,
                       "BGA_LANGSMITH_PROJECTS": PROJECT, "LANGSMITH_TRACING": "false"}
                r = run_worker("server", n, tmp, args, env=env, label=f"-{api}")
            finally:
                server.stdin.close()  # type: ignore[union-attr]
                server.wait(timeout=30)
            if r["error"]:
                raise SystemExit(f"server sync ({api}) failed: {r['error']}")
            if r["api"] != api:
                raise SystemExit(f"server sync took {r['api']}, not {api}")
            path_name = "v1 POST /runs/query" if api == "v1" else "v2 Client.runs.query"
            rows.append(row(f"local LangSmith server ({path_name}, 100/page)", r, None))
    print_table(
        "LangSmith Bridge: runs mirrored into the shared state (bga bridge sync)",
        ["source", "runs", "mirrored", "in metrics", "steps", "requests", "seconds", "runs/s",
         "RSS before (MB)", "RSS growth (MB)", f">= {TARGET:,}/s"], rows, plain=args.plain,
        notes=[machine(),
               "mirrored: runs turned into metrics; in metrics: latency samples counted in "
               "get_performance_summary (must equal mirrored)",
               "RSS growth: peak RSS during the sync minus peak RSS before it, in a fresh "
               "process per row (flat as runs grow: memory does not depend on N)",
               "a step mirrors at most 50,000 runs and commits them with their cursor",
               "requests: HTTP requests the sync made (the bridge's own count; no SDK "
               "retries underneath); v2 pages are newest first, so a window that does not "
               "fit the overlap set is halved and read again"])


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
