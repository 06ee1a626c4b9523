"""A bounded set of records already handled, stored compactly inside a cursor.

Each entry is a 40-bit digest of a record's id and the second its cursor time falls in
(a run's start, a feedback's creation), packed as hex: 4 digits of seconds after ``mb`` (the
set's base second) and 10 of digest, 14 characters a record. Hex cannot look like a secret to
the redactor that every agent-data write goes through, and a false "already seen" needs a
40-bit collision with one of at most a few hundred entries (about 1e-9 per new record).
"""

from __future__ import annotations

import hashlib
from typing import Any

ENTRY = 14
MAX_SPAN_S = 0xFFFF


def digest(record_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=5).digest(), "big")


class Seen:
    """Digests of handled records with their second; ``store`` writes it back into a cursor."""

    __slots__ = ("entries",)

    def __init__(self, entries: dict[int, int] | None = None) -> None:
        self.entries: dict[int, int] = entries or {}  # digest -> second

    @classmethod
    def load(cls, st: dict[str, Any]) -> Seen:
        packed = st.get("m") or ""
        base = int(st.get("mb") or 0)
        entries: dict[int, int] = {}
        for i in range(0, len(packed) - ENTRY + 1, ENTRY):
            chunk = packed[i:i + ENTRY]
            entries[int(chunk[4:], 16)] = base + int(chunk[:4], 16)
        return cls(entries)

    def store(self, st: dict[str, Any]) -> None:
        if not self.entries:
            st.pop("m", None)
            st.pop("mb", None)
            return
        base = min(self.entries.values())
        top = base + MAX_SPAN_S
        st["mb"] = base
        st["m"] = "".join(f"{sec - base:04x}{d:010x}" for d, sec in
                          sorted(self.entries.items(), key=lambda e: e[1]) if sec <= top)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, record_id: str) -> bool:
        return digest(record_id) in self.entries

    def add(self, record_id: str, us: int) -> None:
        self.entries[digest(record_id)] = us // 1_000_000

    def prune(self, floor_us: int) -> None:
        """Forget records whose second lies wholly below ``floor_us`` (never read again)."""
        cut = floor_us // 1_000_000
        self.entries = {d: s for d, s in self.entries.items() if s >= cut}

    def oldest(self) -> int | None:
        return min(self.entries.values()) if self.entries else None

    def drop_second(self, sec: int) -> int:
        """Forget every record of second ``sec``; returns how many."""
        before = len(self.entries)
        self.entries = {d: s for d, s in self.entries.items() if s != sec}
        return before - len(self.entries)
