"""Kill-and-resume: SIGKILL ``bga import`` at batch boundaries and inside batches, again and
again; the resumed job ends with exactly the database of an uninterrupted import. And racing
writers of one job: the compare-and-swap lets exactly one commit a batch. On SQLite and
PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodes.profile_import.job import ImportOptions
from nodes.profile_import.job_graph import job_thread, run_job
from nodes.profile_import.models import validate_row
from nodes.profile_import.store import JobMoved, ProfileStore, profiles_location
from state.backends import make_backend
from state.backends.syncdb import PostgresSyncDb
from tests.importer.helpers import people_rows, run_import, snapshot, store_of, write_csv

ROOT = Path(__file__).resolve().parents[2]
BGA = Path(sys.executable).with_name("bga")
ROWS, BATCH = 20_000, 100


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGA_", "LANGSMITH_"))}
    env["LANGSMITH_TRACING"] = "false"
    return env


def _batches(store: ProfileStore) -> int:
    """Committed batches of the running job, read the way a second process would."""
    return max((job["batches"] for job in store.running_jobs()), default=-1)


def _kill_after(cmd: list[str], store: ProfileStore, target: int, rng: random.Random) -> bool:
    """Start ``cmd``, SIGKILL it once ``target`` batches are committed (plus a random few ms,
    so the kill lands anywhere inside the next batch). False if it finished first."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            if _batches(store) >= target:
                time.sleep(rng.uniform(0, 0.015))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return proc.returncode == -signal.SIGKILL
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
async def test_sigkill_at_random_points_then_resume_equals_uninterrupted(
        tmp_path: Path, process_db_url: str) -> None:
    path = write_csv(tmp_path / "people.csv", people_rows(ROWS, seed=11))
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    reference = await run_import(path, reference_url, batch_size=BATCH)
    assert reference["status"] == "done" and reference["batches"] == ROWS // BATCH

    url = process_db_url
    args = ["import", str(path), "--db", url, "--batch-size", str(BATCH), "--json"]
    with store_of(url) as store:
        kills = _kill_repeatedly(args, store)

    final = subprocess.run([str(BGA), *args], cwd=ROOT, env=_env(), capture_output=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    report = json.loads(final.stdout)
    assert report["status"] == "done" and report["action"] == "resumed"
    assert report["runs"] >= kills + 1  # every killed invocation had started the job graph

    for key in ("read", "inserted", "updated", "unchanged", "rejected", "reasons"):
        assert report[key] == reference[key], key
    killed = snapshot(url, report["job_id"])
    expected = snapshot(reference_url, reference["job_id"])
    assert killed["profiles"] == expected["profiles"]  # same rows in the same order: none lost
    assert killed["quarantine"] == expected["quarantine"]
    assert killed["counts"] == expected["counts"]
    lines = [q[0] for q in killed["quarantine"]]
    assert len(lines) == len(set(lines))
    with store_of(url) as store:
        assert store.count_profiles() == reference["inserted"]  # none written twice

    # the job thread's checkpoints mirror the committed job
    backend = make_backend(url)
    await backend.setup()
    try:
        saved = await backend.checkpointer.aget_tuple(
            {"configurable": {"thread_id": job_thread(report["job_id"])}})
    finally:
        await backend.aclose()
    assert saved is not None
    values: dict[str, Any] = saved.checkpoint["channel_values"]
    assert values["status"] == "done" and values["report"]["read"] == ROWS
    assert values["offset"] == path.stat().st_size


def _kill_repeatedly(args: list[str], store: ProfileStore) -> int:
    """Kill ``bga import`` at fixed points inside and after batch transactions, then at random
    batch counts and moments; returns how many kills landed before the end of the file."""
    rng = random.Random(20240611)
    kills = 0
    # deterministic points: inside the transaction (before COMMIT), and between the COMMIT and
    # the checkpoint; then external SIGKILLs at random batch counts and random moments
    for point, nth in (("before_commit", 3), ("after_commit", 2), ("before_commit", 1)):
        proc = subprocess.run([sys.executable, "-m", "tests.importer.killer", point, str(nth),
                               *args], cwd=ROOT, env=_env(), capture_output=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        kills += 1
    target = _batches(store)
    for _ in range(5):
        target += rng.randint(3, 25)
        kills += _kill_after([str(BGA), *args], store, target, rng)
        target = max(target, _batches(store))
    assert kills >= 6  # enough of the random kills landed before the end of the file
    return kills


def test_a_second_process_cannot_commit_the_same_batch(tmp_path: Path,
                                                       process_db_url: str) -> None:
    """The compare-and-swap on the job's position: a stale writer fails and writes nothing."""
    path = write_csv(tmp_path / "p.csv", people_rows(10))
    location = profiles_location(process_db_url)
    first, second = ProfileStore.open(location), ProfileStore.open(location)
    try:
        job = first.prepare(path).job
        assert second.prepare(path).job["job_id"] == job["job_id"]  # resumed, not duplicated
        profile, _ = validate_row({"email": "ada@example.com"})
        assert profile is not None
        batch = {"groups": {profile.identity: [profile]}, "rejected": [], "read": 1}
        first.commit_batch(job["job_id"], expected_offset=0, offset=50, line=2, **batch)
        with pytest.raises(JobMoved):
            second.commit_batch(job["job_id"], expected_offset=0, offset=50, line=2, **batch)
        assert second.job(job["job_id"])["rows_read"] == 1  # type: ignore[index]
        assert second.count_profiles() == 1
    finally:
        first.close()
        second.close()


@contextlib.contextmanager
def _in_thread(target: Any) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(timeout=60)


def _wait_until_blocked(store: ProfileStore, watcher: ProfileStore) -> None:
    """Until ``store``'s PostgreSQL session waits for a lock (seen from ``watcher``'s)."""
    assert isinstance(store.db, PostgresSyncDb) and isinstance(watcher.db, PostgresSyncDb)
    pid = store.db.conn.info.backend_pid
    for _ in range(3000):
        row = watcher.db.one("SELECT wait_event_type FROM pg_stat_activity WHERE pid=?", (pid,))
        if row is not None and row["wait_event_type"] == "Lock":
            return
        time.sleep(0.01)
    pytest.fail("the second writer never waited for the first one's transaction")


def test_racing_writers_commit_a_batch_exactly_once(tmp_path: Path, process_db_url: str) -> None:
    """Two connections commit the same batch of one job at the same time: the second waits
    for the first's transaction, then finds the job moved and writes nothing (no profile
    merged twice, no row quarantined twice, no unique-index error)."""
    path = write_csv(tmp_path / "p.csv", people_rows(10))
    location = profiles_location(process_db_url)
    first, second, watcher = (ProfileStore.open(location), ProfileStore.open(location),
                              ProfileStore.open(location))
    try:
        job_id = first.prepare(path).job["job_id"]
        groups = {}
        for email in ("ada@example.com", "bob@example.com", "cy@example.com"):
            profile, _ = validate_row({"email": email, "name": email[:3].title()})
            assert profile is not None
            groups[profile.identity] = [profile]
        batch = {"groups": groups, "read": 4, "rejected": [(5, "x,bad@", [
            ("invalid_email", "line 5: invalid e-mail 'bad@'")])]}
        inside, release = threading.Event(), threading.Event()

        def hold(info: dict[str, Any]) -> None:  # the first writer, just before its COMMIT
            inside.set()
            assert release.wait(60)

        first.before_commit = hold
        outcome: dict[str, str] = {}

        def commit(name: str, store: ProfileStore) -> None:
            try:
                store.commit_batch(job_id, expected_offset=0, offset=80, line=5, **batch)
                outcome[name] = "committed"
            except JobMoved:
                outcome[name] = "moved"
            except Exception as exc:
                outcome[name] = repr(exc)

        with _in_thread(lambda: commit("first", first)):
            assert inside.wait(60)
            with _in_thread(lambda: commit("second", second)):
                if isinstance(second.db, PostgresSyncDb):
                    _wait_until_blocked(second, watcher)
                release.set()
        assert outcome == {"first": "committed", "second": "moved"}
        job = watcher.job(job_id)
        assert job is not None
        assert (job["batches"], job["rows_read"], job["inserted"], job["rejected"]) == \
            (1, 4, 3, 1)
        assert watcher.count_profiles() == 3 and watcher.count_quarantined(job_id) == 1
        assert watcher.finish(job_id, "done")["status"] == "done"  # the accounting adds up
    finally:
        release.set()
        for store in (first, second, watcher):
            store.close()


def _messy(fmt: str, path: Path) -> Path:
    """A file of each format with the features a resume must get right."""
    rows = people_rows(60, seed=5)
    if fmt == "csv":  # BOM, CRLF, quoted fields spanning lines
        body = "\ufeffname,email,phone,notes\r\n" + "".join(
            f'{r[0]},{r[1]},{r[2]},"note {i}\r\nsecond line, with comma"\r\n'
            for i, r in enumerate(rows))
    elif fmt == "jsonl":  # blank and broken lines between records
        lines = [json.dumps({"name": r[0], "email": r[1], "phone": r[2]}) for r in rows]
        lines[10:10] = ["", "{broken"]
        body = "\n".join(lines) + "\n"
    else:  # a pretty-printed array with non-ASCII text (byte offsets differ from characters)
        body = json.dumps([{"name": r[0] + " Ünïcødé", "email": r[1], "phone": r[2]}
                           for r in rows], indent=2, ensure_ascii=False)
    path.write_bytes(body.encode())
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
async def test_resuming_after_every_batch_reads_each_row_once(tmp_path: Path, fmt: str,
                                                              db_url: str) -> None:
    path = _messy(fmt, tmp_path / f"messy.{fmt}")
    whole_url = f"sqlite:///{tmp_path / 'whole.db'}"
    whole = await run_import(path, whole_url)
    url = db_url
    backend = make_backend(url)
    await backend.setup()
    store = ProfileStore.open(profiles_location(url))
    slices = 0
    try:
        while True:  # one batch per invocation, like an agent with a tiny budget
            job = store.prepare(path).job
            report = await run_job(store, backend, job, ImportOptions(batch_size=7),
                                   deadline=time.monotonic())
            slices += 1
            if report["status"] != "running":
                break
    finally:
        store.close()
        await backend.aclose()
    assert report["status"] == "done"
    assert slices == report["batches"] == -(-whole["read"] // 7)
    for key in ("read", "inserted", "updated", "unchanged", "rejected"):
        assert report[key] == whole[key], key
    a, b = snapshot(whole_url, whole["job_id"]), snapshot(url, report["job_id"])
    assert a["profiles"] == b["profiles"] and a["quarantine"] == b["quarantine"]
