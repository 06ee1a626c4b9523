"""ExportFileSource: runs from a JSON Lines file of LangSmith runs, read as a stream.

Each line is one run in the shape ``list_runs`` returns (``Run.json()`` / ``model_dump``), as
``langsmith-fetch``-style dumps write them; the v2 shape (``parent_run_ids``, upper-case run
types) is read too. The file is read in blocks from the cursor's byte offset, so memory does
not grow with the file. The cursor is (signature of the first line, byte offset, lines and
records read): a file that is appended to is picked up where it was left; a different file at
the same path (another first line) starts over. A line that is not a JSON object, or a run
that cannot be mirrored, is quarantined with its line number and the reason; the rest are
mirrored. A run without an end time is still in progress and is mirrored from a later line
that has one.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from nodes.langsmith_bridge.base import Chunk, Limits, RunSource, SourceUnavailable
from nodes.langsmith_bridge.records import Malformed, parse_run
from state.traces import QuarantinedRecord

BLOCK = 1 << 20
SIGNATURE_BYTES = 1024


def signature(path: Path) -> tuple[str, int]:
    """Digest of the file's first line (at most 1 KiB) and its size."""
    with path.open("rb") as f:
        head = f.read(SIGNATURE_BYTES)
        size = path.stat().st_size
    newline = head.find(b"\n")
    if newline >= 0:
        head = head[:newline]
    return hashlib.blake2b(head, digest_size=8).hexdigest(), size


class ExportFileSource(RunSource):
    kind = "file"

    def __init__(self, path: str | Path, *, project: str | None = None,
                 host_url: str | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.key = f"file:{self.path}"
        self.project = project or self.path.stem
        self.host_url = host_url

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": str(self.path), "project": self.project}

    async def poll(self, cursor: dict[str, Any] | None, limits: Limits) -> AsyncIterator[Chunk]:
        try:
            sig, size = await asyncio.to_thread(signature, self.path)
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {self.path}: {exc.strerror or exc}",
                                    fatal=True) from None
        cursor = cursor or {}
        offset, line_no = int(cursor.get("off", 0)), int(cursor.get("n", 0))
        records = int(cursor.get("r", 0))
        if cursor.get("sig") != sig or offset > size:
            offset, line_no, records = 0, 0, 0  # another file at this path: start over
        f: BinaryIO = await asyncio.to_thread(self.path.open, "rb")
        try:
            await asyncio.to_thread(f.seek, offset)
            pending = b""
            read = 0
            while True:
                block = await asyncio.to_thread(f.read, BLOCK)
                at_eof = not block
                data = pending + block
                lines = data.split(b"\n")
                pending = lines.pop()  # after the last newline: maybe an incomplete line
                items = [(line, len(line) + 1) for line in lines]
                if at_eof and pending.strip():
                    try:  # a last line without a newline counts once it is complete JSON
                        orjson.loads(pending)
                        items.append((pending, len(pending)))
                        pending = b""
                    except orjson.JSONDecodeError:
                        pass
                chunk = Chunk(cursor={})
                stopped = False
                for line, width in items:
                    offset += width
                    line_no += 1
                    if not line.strip():
                        continue
                    chunk.read += 1
                    read += 1
                    records += 1
                    self._take(line, line_no, limits, chunk)
                    if limits.exhausted(read):
                        stopped = True
                        break
                chunk.cursor = {"sig": sig, "off": offset, "n": line_no, "r": records}
                chunk.more = stopped
                yield chunk
                if stopped or at_eof:
                    return
        finally:
            await asyncio.to_thread(f.close)

    def _take(self, line: bytes, line_no: int, limits: Limits, chunk: Chunk) -> None:
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            chunk.quarantined.append(QuarantinedRecord(
                self.key, f"line:{line_no}", f"line {line_no}: invalid JSON ({exc})",
                line[:2000].decode(errors="replace")))
            return
        try:
            run = parse_run(raw, project=self.project, now=limits.now, host_url=self.host_url)
        except Malformed as exc:
            chunk.quarantined.append(QuarantinedRecord(
                self.key, f"line:{line_no}", f"line {line_no}: {exc}",
                line[:2000].decode(errors="replace")))
            return
        if run.finished:
            chunk.runs.append(run)
        else:
            chunk.in_progress += 1
