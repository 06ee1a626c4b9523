"""Profile import throughput and peak memory on SQLite and PostgreSQL, next to a plain pandas
peer, in one run.

A generated CSV (``bench/gen_profiles.py``: Faker names, ~5 % duplicates, ~2 % invalid rows) is
imported by

  (a) ``bga import FILE --json`` into SQLite and (b) into a fresh PostgreSQL schema: streaming
      read, full validation and normalisation (pydantic, e-mail, phonenumbers E.164, URL),
      dedupe/merge against the database, batch upserts with the job's position in the same
      transaction, a LangGraph checkpoint per batch;
  (c) the plain peer: ``pandas.read_csv`` + ``DataFrame.to_sql`` into SQLite, no validation, no
      dedupe, no resume.

Each runs in its own process; peak memory is that process's ``ru_maxrss`` (``os.wait4``), so
interpreter and libraries are included. Rows/s of (a) is also shown as the job measured it
(without process start-up). Targets: >= 20,000 rows/s, peak < 300 MB whatever the file size.

    .venv/bin/python bench/import_throughput.py --rows 200000
    .venv/bin/python bench/import_throughput.py                     # 1,000,000 rows

PostgreSQL is ``--pg-url`` (default ``$BGA_BENCH_POSTGRES_URL``, then the local test server);
without a reachable server the table has SQLite and pandas only, and says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    BACKEND_LABEL,
    add_pg_option,
    backends,
    fmt_bytes,
    fresh_db,
    machine,
    parser,
    print_table,
    rate,
    temp_dir,
    verdict,
)

HERE = Path(__file__).resolve().parent
BGA = Path(sys.executable).with_name("bga")
TARGET_ROWS_PER_S = 20_000
TARGET_PEAK = 300 * 1024 * 1024


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[str, float, float, int, int]:
    """Run ``cmd``; its stdout, wall seconds, CPU seconds, peak RSS (bytes) and exit code."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return out, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, proc.returncode


def pandas_worker(csv_path: str, db_path: str) -> None:
    """The plain peer: read the whole CSV, write it to SQLite as it is."""
    import sqlite3

    import pandas as pd

    started = time.perf_counter()
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    conn = sqlite3.connect(db_path)
    df.to_sql("profiles", conn, index=False, if_exists="replace", chunksize=50_000)
    conn.commit()
    rows = conn.execute("SELECT count(*) FROM profiles").fetchone()[0]
    conn.close()
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch-size", type=int, default=5_000)
    p.add_argument("--dup-rate", type=float, default=0.05)
    p.add_argument("--invalid-rate", type=float, default=0.02)
    p.add_argument("--no-pandas", action="store_true", help="skip the pandas peer")
    p.add_argument("--pandas-worker", nargs=2, help=argparse_hidden())
    add_pg_option(p)
    args = p.parse_args()
    if args.pandas_worker:
        pandas_worker(*args.pandas_worker)
        return

    sys.path.insert(0, str(HERE))
    from gen_profiles import generate

    env = {k: v for k, v in os.environ.items() if not k.startswith("BGA_")}
    env["LANGSMITH_TRACING"] = "false"
    with temp_dir(args.dir) as tmp:
        csv_path = tmp / f"profiles_{args.rows}.csv"
        t0 = time.perf_counter()
        expected = generate(csv_path, args.rows, dup_rate=args.dup_rate,
                            invalid_rate=args.invalid_rate, seed=args.seed)
        gen_s = time.perf_counter() - t0
        size = csv_path.stat().st_size
        print(f"{machine()}\ngenerated {args.rows:,} rows ({fmt_bytes(size)}) in {gen_s:.1f} s: "
              f"{expected['duplicates']:,} duplicates, {expected['rejected']:,} invalid")

        rows: list[list[Any]] = []
        reports: dict[str, dict[str, Any]] = {}
        for backend in reversed(backends(args.pg_url)):  # SQLite first
            with fresh_db(backend, tmp, args.pg_url, "state") as url:
                out, wall, cpu, peak, code = run_measured(
                    [str(BGA), "import", str(csv_path), "--db", url, "--json",
                     "--batch-size", str(args.batch_size)], env)
            report: dict[str, Any] = json.loads(out) if out.strip() else {"status": f"exit {code}"}
            reports[backend] = report
            ok = (report.get("status") == "done" and report.get("invariant_ok")
                  and (report.get("lines") or {}).get("ok")
                  and report.get("inserted") == expected["inserted"]
                  and report.get("rejected") == expected["rejected"]
                  and report.get("updated", 0) + report.get("unchanged", 0)
                  == expected["duplicates"])
            job_rate = report.get("rows_per_s") or float("nan")
            rows.append([f"bga import -> {BACKEND_LABEL[backend]} (validate, dedupe, checkpoint)",
                         args.rows, wall, rate(args.rows, wall), job_rate, cpu,
                         rate(args.rows, cpu), fmt_bytes(peak),
                         verdict(job_rate, TARGET_ROWS_PER_S),
                         verdict(peak, TARGET_PEAK, higher_is_better=False),
                         "exact" if ok else "MISMATCH"])
        if not args.no_pandas and importlib.util.find_spec("pandas") is None:
            print("pandas is not installed (pip install -e '.[bench]'): no peer row")
        elif not args.no_pandas:
            out, wall, cpu, peak, code = run_measured(
                [sys.executable, __file__, "--pandas-worker", str(csv_path),
                 str(tmp / "pandas.db")], env)
            peer = json.loads(out) if out.strip() else {"rows": 0, "seconds": float("nan")}
            rows.append(["pandas read_csv + to_sql (no validation)", peer["rows"], wall,
                         rate(peer["rows"], wall), rate(peer["rows"], peer["seconds"]), cpu,
                         rate(peer["rows"], cpu), fmt_bytes(peak), "",
                         verdict(peak, TARGET_PEAK, higher_is_better=False),
                         "rows copied as they are"])
        print_table(
            f"Profile import, {args.rows:,} CSV rows, batch {args.batch_size:,}",
            ["contestant", "rows", "wall s", "rows/s (wall)", "rows/s (work)", "CPU s",
             "rows/CPU-s", "peak RSS", ">= 20k/s", "< 300 MB", "accounting"], rows,
            plain=args.plain,
            notes=[
                "wall includes process start-up and imports; work is the job's own active time "
                "(bga) or the read+write time (pandas); rows/CPU-s counts the whole process "
                "(start-up included) and does not depend on other load on the machine",
                f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
                *(f"bga report ({BACKEND_LABEL[b]}): read {r.get('read', 0):,} = inserted "
                  f"{r.get('inserted', 0):,} + updated {r.get('updated', 0):,} + unchanged "
                  f"{r.get('unchanged', 0):,} + rejected {r.get('rejected', 0):,}; "
                  f"{r.get('batches', 0):,} batches; lines "
                  f"{'ok' if (r.get('lines') or {}).get('ok') else 'NOT ok'}"
                  for b, r in reports.items()),
                *(["PostgreSQL / SQLite rows/s (work): "
                   f"{reports['postgresql'].get('rows_per_s', 0) / sq:.2f}"]
                  if "postgresql" in reports and (sq := reports['sqlite'].get('rows_per_s'))
                  else []),
                f"generator expected: {expected['inserted']:,} new, {expected['duplicates']:,} "
                f"duplicates, {expected['rejected']:,} invalid",
            ])


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
