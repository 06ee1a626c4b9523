"""Error grouping: messages that differ only in run-specific details share one fingerprint."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from state.fingerprint import MAX_LENGTH, fingerprint, normalize_message

ROOT = Path(__file__).resolve().parents[2]

GROUPED = [
    ("TimeoutError", "timeout after 31 s for id 8f3a91", "timeout after 7 s for id 01bc77"),
    ("ValueError", "bad email 'x@'", "bad email 'y@z'"),
    ("OSError", "open /var/data/a.csv failed", "open /tmp/b.csv failed"),
    ("LookupError", "user bob@example.com not found", "user al@x.org not found"),
    ("HTTPError", "GET https://api.x.io/v1/runs/42?a=1 -> 503", "GET http://h/ -> 500"),
    (
        "KeyError",
        "run 550e8400-e29b-41d4-a716-446655440000",
        "run 6fa459ea-ee8a-3ca4-894e-db77e160355e",
    ),
    ("ClockError", "at 2024-05-01T12:00:00.123Z", "at 2031-12-31T23:59:59+02:00"),
    ("ConnError", "connect 10.0.0.1:5432 refused", "connect 192.168.1.20:6543 refused"),
    ("OSError", r"open C:\Users\bob\a.txt failed", "open ~/notes/b.md failed"),
    ("MemoryError", "ptr 0xdeadbeef freed twice", "ptr 0x7ffe12 freed twice"),
    ("ValueError", "got -1.5e-3, want +2", "got 7, want 0.25"),
    ("KeyError", 'missing "alpha" in config', 'missing "beta gamma" in config'),
]


@pytest.mark.parametrize(("error_type", "first", "second"), GROUPED)
def test_messages_differing_only_in_variable_parts_group(
    error_type: str, first: str, second: str
) -> None:
    assert fingerprint(error_type, first) == fingerprint(error_type, second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("TimeoutError", "timeout after 31 s"), ("ConnectionError", "timeout after 31 s")),
        (("TimeoutError", "timeout after 31 s"), ("TimeoutError", "deadline after 31 s")),
        (("OSError", "open /tmp/a failed"), ("OSError", "read /tmp/a failed")),
        (("ValueError", "cafe"), ("ValueError", "face")),
        (("ValueError", "id 8f3a91"), ("ValueError", "id 8f3a91 extra")),
    ],
)
def test_different_type_or_words_do_not_group(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    assert fingerprint(*first) != fingerprint(*second)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("timeout after 31 s for id 8f3a91", "timeout after <num> s for id <hex>"),
        ("see https://a.b/c?d=1. ok", "see <url>. ok"),
        ("mail bob.s+x@mail.example.co.uk now", "mail <email> now"),
        ("uuid 550e8400-e29b-41d4-a716-446655440000", "uuid <uuid>"),
        ("at 2024-05-01 or 10:32:01.5", "at <ts> or <ts>"),
        ("from 10.0.0.1", "from <ip>"),
        ("paths ./x/y ../z ~/w /a", "paths <path> <path> <path> <path>"),
        ("can't open 'a b.txt'", "can't open <str>"),
        ("codes 0xdeadbeef 01bc77 8F3A", "codes <hex> <hex> <hex>"),
        ("n=-5 m=+3.5 k=1e10 t=31s p=50%", "n=<num> m=<num> k=<num> t=<num>s p=<num>%"),
        ("  many \t\n  spaces  ", "many spaces"),
    ],
)
def test_normalize_message_placeholders(message: str, expected: str) -> None:
    assert normalize_message(message) == expected


@pytest.mark.parametrize(
    "message",
    ["connection refused", "deadbeef", "cafe", "python3 sha256 x86_64 utf8", "v1.2.3 it's"],
)
def test_plain_words_survive(message: str) -> None:
    assert normalize_message(message) == message


def test_long_messages_are_truncated() -> None:
    out = normalize_message("word " * 1000)
    assert 0 < len(out) <= MAX_LENGTH
    assert out == out.strip()


def test_fingerprint_hashes_type_and_normalized_message() -> None:
    digest = hashlib.blake2b(b"TimeoutError\ntimeout after <num> s", digest_size=8).hexdigest()
    assert fingerprint("TimeoutError", "timeout  after 31 s") == "err_" + digest


def test_fingerprint_is_stable_across_processes() -> None:
    code = "from state.fingerprint import fingerprint; print(fingerprint('E', 'x 1'))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {fingerprint("E", "x 2")}


# Messages built from fragments that exercise the patterns and their boundaries.
_FRAGMENTS = ["'", '"', "/", "\\", ".", ":", "@", "-", "+", "0x", "1", "42", "8f3a", "e",
              "C:", "~", "http://", "a.io", " ", "\n", "<num>", "<", ">", "word", "%", "T"]
messages = st.one_of(st.text(), st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map("".join))


@settings(max_examples=500, deadline=None)
@given(messages)
@example("a" * 508 + " 12x3")  # the cut at MAX_LENGTH leaves "12x", which is a number
@example("5\"\n\"")  # a quoted newline becomes a quoted space
def test_normalize_message_is_idempotent(message: str) -> None:
    once = normalize_message(message)
    assert normalize_message(once) == once
    assert len(once) <= MAX_LENGTH


_WORD = st.from_regex(r"[a-z]{1,8}", fullmatch=True)
_SEP = st.sampled_from([" ", "=", " = ", ": ", ", ", " (", ") "])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.one_of(_WORD, st.none()), _SEP), min_size=1, max_size=12),
    st.data(),
)
def test_fingerprint_ignores_which_integers_fill_a_template(
    template: list[tuple[str | None, str]], data: st.DataObject
) -> None:
    """``None`` slots are integers; any two fillings of the same template group together."""

    def fill() -> str:
        parts = [str(data.draw(st.integers())) if w is None else w for w, _ in template]
        return "".join(p + sep for p, (_, sep) in zip(parts, template, strict=True))

    first, second = fill(), fill()
    assert fingerprint("ValueError", first) == fingerprint("ValueError", second)
    if any(w is None for w, _ in template):
        assert not re.search(r"\d", normalize_message(first))


@settings(max_examples=200, deadline=None)
@given(st.lists(_WORD, min_size=1, max_size=6), st.lists(_WORD, min_size=1, max_size=6))
def test_different_words_do_not_group(first: list[str], second: list[str]) -> None:
    if first != second:
        assert fingerprint("E", " ".join(first)) != fingerprint("E", " ".join(second))
