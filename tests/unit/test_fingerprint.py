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

# (error type, first message, second message): the same template with other variable values.
SAME = [
    # numbers and hex ids of any shape fill one slot
    ("TimeoutError", "timeout after 5 s for id 000100000005",
     "timeout after 12 s for id 0001000000a0"),
    ("TimeoutError", "timeout after 31 s for id 8f3a91", "timeout after 7 s for id 01bc77"),
    ("KeyError", "no row 12345678", "no row 9af8c3be"),
    ("KeyError", "no row deadbeef", "no row 12345"),
    ("KeyError", "no row DEADBEEF", "no row 0xDEADBEEF"),
    ("KeyError", "object 0x7ffe12 freed", "object 0xdeadbeef freed"),
    ("KeyError", "commit a93c7d2 missing", "commit 4150908 missing"),
    ("KeyError", "sha 5fc35719b9cf96ec602dbc748ff31c587a46961d",
     "sha 0751007cd28df267e8e051b51f918c60"),
    ("ValueError", "got -1.5e-3, want +2", "got 7, want 0.25"),
    ("ValueError", "value -17502 out of range", "value 3 out of range"),
    ("ValueError", "value:-17502", "value:12"),
    ("ValueError", "code 415-908", "code 1-2"),
    ("ValueError", "worker-908 failed", "worker-3 failed"),
    ("ValueError", "(#239323) failed", "(#1) failed"),
    ("ValueError", "used 50% of quota", "used 7% of quota"),
    ("ValueError", "buffer of 12MB full", "buffer of 512MB full"),
    ("ValueError", "batch 1 of 10", "batch 999 of 1000"),
    ("ValueError", "tx274a77a8975c4a66aeb24-0052d95365 aborted",
     "tx1234567890abcdef12345-0000000001 aborted"),
    # durations, with or without a space, in any unit
    ("TimeoutError", "took 0ms", "took 1000000ms"),
    ("TimeoutError", "took 0.100s", "took 100.0000s"),
    ("TimeoutError", "took 10s", "took 3 s"),
    ("TimeoutError", "took 300ms", "took 2.5 s"),
    ("TimeoutError", "retry in 2 min", "retry in 15 s"),
    ("TimeoutError", "deadline 1 h exceeded", "deadline 30 minutes exceeded"),
    # dates and times
    ("ClockError", "at 2024-05-01T12:00:00.123Z", "at 2031-12-31T23:59:59+02:00"),
    ("ClockError", "at 2006-01-02", "at 2024-02-20T22:16:36"),
    ("ClockError", "at 2006-01-02 15:04:05", "at 2006-01-02T15:04:05Z"),
    ("ClockError", "at 20060102T150405", "at 20240220T115533Z"),
    ("ClockError", "at 20060102T150405Z", "at 20060102T150405+0100"),
    ("ClockError", "at 20240220 11:55:33.546593", "at 20060102T150405"),
    ("ClockError", "at Mon, 02 Jan 2006 15:04:05 MST", "at Tue, 03 Feb 2026 01:02:03 -0700"),
    ("ClockError", "at Mon, 02 Jan 06 15:04 MST", "at Fri, 13 Dec 24 23:59 GMT"),
    ("ClockError", "at Jan 18, 2019", "at Dec 1, 2026"),
    ("ClockError", "at 15:04:05", "at 09:08:07.5"),
    ("ClockError", "at 2024-02-23 02:13:53.418", "at 2006-01-02 15:04:05"),
    # network addresses and hosts
    ("ConnError", "connect 10.0.0.1:5432 refused", "connect 192.168.1.20:6543 refused"),
    ("ConnError", "connect 11.21.12.31 refused", "connect 2001:db8::1 refused"),
    ("ConnError", "connect ::1 refused", "connect 1121:0c03:1231:130d:0000:16da:0908:da07 refused"),
    ("ConnError", "connect 2012:d157::cbe:908:2013 refused", "connect fe80::1%eth0 refused"),
    ("ConnError", "connect ::ffff:192.168.1.1 refused", "connect 127.0.0.1 refused"),
    ("ConnError", "connect [::1]:8080 refused", "connect [2001:db8::2]:80 refused"),
    ("ConnError", "connect db1.prod.internal:5432 refused", "connect localhost:5432 refused"),
    ("ConnError", "resolve dogsaregreat.com failed", "resolve dogs.squirrelchasers.net failed"),
    ("ConnError", "resolve api.example.io failed", "resolve pg-2.svc.cluster.local failed"),
    ("ConnError", "resolve DB.EXAMPLE.COM failed", "resolve cache.corp failed"),
    ("ConnError", "0.0.0.0:80 busy", "10.1.2.3:8080 busy"),
    # urls, e-mails, uuids, paths
    ("HTTPError", "GET https://api.x.io/v1/runs/42?a=1 -> 503", "GET http://h/ -> 500"),
    ("HTTPError", "GET http://localhost:8000 failed", "GET http://[2001:db8::1]:80 failed"),
    ("HTTPError", "GET http://charlie:pw@dogsaregreat.com:10 failed",
     "GET ftp://x.org/a.js failed"),
    ("HTTPError", "GET wss://stream.example.com/ws failed", "GET http://11.21.12.31:12 failed"),
    ("LookupError", "user bob@example.com not found", "user al@x.org not found"),
    ("LookupError", "user maisey+thedog@dogsaregreat.com not found", "user a.b@c.co.uk not found"),
    ("KeyError", "run 550e8400-e29b-41d4-a716-446655440000",
     "run 6fa459ea-ee8a-3ca4-894e-db77e160355e"),
    ("KeyError", "runs 7c1811ed-e98f-4c9c-a9f9-58c757ff494f/bea691f2-2e25-4bec-6838-e0c44b03d60a",
     "runs 00000000-0000-0000-0000-000000000000/ffffffff-ffff-ffff-ffff-ffffffffffff"),
    ("OSError", "open /var/data/a.csv failed", "open /tmp/b.csv failed"),
    ("OSError", r"open C:\Users\bob\a.txt failed", "open ~/notes/b.md failed"),
    ("OSError", "open ./x/y failed", "open ../z/w.txt failed"),
    # values after "=" (quoted or bare, booleans included)
    ("ValueError", "flag=true rejected", "flag=false rejected"),
    ("ValueError", "flag=True rejected", "flag=None rejected"),
    ("ValueError", "mode=fast rejected", "mode=slow rejected"),
    ("ValueError", "b='1' rejected", "b='two words' rejected"),
    ('ValueError', 'b="0.0.0.0 1 a=True" rejected', 'b="x" rejected'),
    ("ValueError", "n=-5 m=+3.5", "n=7 m=1e10"),
    ("ValueError", "limit=31s", "limit=2h"),
    ("ValueError", "path=/tmp/a, user=bob", "path=C:\\x, user=al"),
    ("ValueError", "key=user_id missing", "key=order_id missing"),
    ("ValueError", "opts[k]=v1 refused", "opts[k]=v2 refused"),
    # quoted values (not plain identifiers)
    ("ValueError", "bad email 'x@'", "bad email 'y@z'"),
    ("ValueError", "invalid email 'user5@' on line 7", "invalid email 'user123@' on line 84"),
    ("OSError", "can't open 'a b.txt'", "can't open 'c.csv x'"),
    ("KeyError", "missing '8f3a91'", "missing '12'"),
    ("KeyError", "missing 'deadbeef'", "missing 'run-42'"),
    ("KeyError", 'missing "alpha beta"', 'missing "gamma delta"'),
    ("KeyError", "missing 'user 5'", "missing 'user 6'"),
    # several kinds at once, and whitespace
    ("TimeoutError", "req 1 to 10.0.0.1 at 2024-01-01 took 5 s",
     "req 99 to ::1 at 2025-12-31 took 300ms"),
    ("TimeoutError", "timeout  after\n 31 s", "timeout after 7 s"),
    ("TimeoutError", "  timeout after 31 s  ", "timeout after 7 s"),
]

# Messages that name different things (or say different things) stay apart.
DIFFERENT = [
    (("KeyError", "KeyError: 'user_id'"), ("KeyError", "KeyError: 'order_id'")),
    (("KeyError", "'user_id'"), ("KeyError", "'order_id'")),
    (("ModuleNotFoundError", "No module named 'a'"),
     ("ModuleNotFoundError", "No module named 'b'")),
    (("ModuleNotFoundError", "No module named 'numpy.linalg'"),
     ("ModuleNotFoundError", "No module named 'numpy.fft'")),
    (("AttributeError", "'NoneType' object has no attribute 'id'"),
     ("AttributeError", "'NoneType' object has no attribute 'name'")),
    (("AttributeError", "'dict' object has no attribute 'x'"),
     ("AttributeError", "'list' object has no attribute 'x'")),
    (("KeyError", 'missing "alpha" in config'), ("KeyError", 'missing "beta" in config')),
    (("KeyError", "missing 'user5'"), ("KeyError", "missing 'user6'")),
    (("NameError", "name 'foo' is not defined"), ("NameError", "name 'bar' is not defined")),
    (("ImportError", "cannot import name 'load' from 'json'"),
     ("ImportError", "cannot import name 'dump' from 'json'")),
    (("TypeError", "f() missing 1 required argument: 'x'"),
     ("TypeError", "f() missing 1 required argument: 'y'")),
    (("TimeoutError", "timeout after 31 s"), ("ConnectionError", "timeout after 31 s")),
    (("TimeoutError", "timeout after 31 s"), ("TimeoutError", "deadline after 31 s")),
    (("OSError", "open /tmp/a failed"), ("OSError", "read /tmp/a failed")),
    (("ValueError", "cafe"), ("ValueError", "face")),
    (("ValueError", "deadbee"), ("ValueError", "deadbef")),
    (("ValueError", "cafe 123"), ("ValueError", "face 123")),
    (("ValueError", "id 8f3a91"), ("ValueError", "id 8f3a91 extra")),
    (("ValueError", "flag=true"), ("ValueError", "mode=true")),
    (("ValueError", "flag = true"), ("ValueError", "flag = false")),
    (("ValueError", "a true value"), ("ValueError", "a false value")),
    (("ValueError", "Option::unwrap() failed"), ("ValueError", "Option::expect() failed")),
    (("ValueError", "Bee::buzz() failed"), ("ValueError", "Bee::hum() failed")),
    (("ValueError", "Fee::add() failed"), ("ValueError", "Fee::sub() failed")),
    (("ValueError", "self.id is None"), ("ValueError", "self.name is None")),
    (("ValueError", "python3 crashed"), ("ValueError", "python2 crashed")),
    (("ValueError", "sha256 mismatch"), ("ValueError", "sha512 mismatch")),
    (("ValueError", "x86_64 only"), ("ValueError", "arm64 only")),
    (("ValueError", "encoding utf8"), ("ValueError", "encoding utf16")),
    (("ValueError", "v1.2.3 unsupported"), ("ValueError", "v1.2.4 unsupported")),
    (("ValueError", "took 5 s"), ("ValueError", "took 5 tries")),
    (("ValueError", "x == 3"), ("ValueError", "y == 3")),
    (("ValueError", "batch 1 of 10"), ("ValueError", "batch 1 in 10")),
    (("ValueError", "connect db refused"), ("ValueError", "connect cache refused")),
    (("ValueError", "status 'pending'"), ("ValueError", "status 'failed'")),
]

EXPECTED = [
    ("timeout after 5 s for id 000100000005", "timeout after <duration> for id <num>"),
    ("timeout after 31 s for id 8f3a91", "timeout after <duration> for id <num>"),
    ("see https://a.b/c?d=1. ok", "see <url>. ok"),
    ("mail bob.s+x@mail.example.co.uk now", "mail <email> now"),
    ("uuid 550e8400-e29b-41d4-a716-446655440000", "uuid <uuid>"),
    ("at 2024-05-01 or 10:32:01.5 or 20060102T150405Z", "at <ts> or <ts> or <ts>"),
    ("from 10.0.0.1 or fe80::1 or [::1]:80", "from <ip> or <ip> or [<ip>]:<num>"),
    ("to db-1.prod.internal or localhost.", "to <host> or <host>."),
    ("paths ./x/y ../z ~/w /a", "paths <path> <path> <path> <path>"),
    ("can't open 'a b.txt'", "can't open <str>"),
    ("KeyError: 'user_id' in 'numpy.linalg'", "KeyError: 'user_id' in 'numpy.linalg'"),
    ("codes 0xdeadbeef 01bc77 8F3A deadbeef", "codes <num> <num> <num> <num>"),
    ("n=-5 m='a b' t=31s ok=true", "n=<val> m=<val> t=<val> ok=<val>"),
    ("n = -5, 50% of 12MB", "n = <num>, <num>% of <num>MB"),
    ("took 31s, 1.5 s, 300ms", "took <duration>, <duration>, <duration>"),
    ("  many \t\n  spaces  ", "many spaces"),
]


def test_the_table_has_at_least_100_pairs() -> None:
    assert len(SAME) + len(DIFFERENT) >= 100


@pytest.mark.parametrize(("error_type", "first", "second"), SAME)
def test_same_template_with_other_values_groups(error_type: str, first: str, second: str) -> None:
    assert fingerprint(error_type, first) == fingerprint(error_type, second), (
        normalize_message(first), normalize_message(second))
    assert "<" in normalize_message(first)  # something was recognised as a value


@pytest.mark.parametrize(("first", "second"), DIFFERENT)
def test_different_things_do_not_group(first: tuple[str, str], second: tuple[str, str]) -> None:
    assert fingerprint(*first) != fingerprint(*second), normalize_message(first[1])


@pytest.mark.parametrize(("message", "expected"), EXPECTED)
def test_normalize_message_placeholders(message: str, expected: str) -> None:
    assert normalize_message(message) == expected


@pytest.mark.parametrize(
    "message",
    ["connection refused", "deadbee", "cafe", "python3 sha256 x86_64 utf8", "v1.2.3 it's",
     "Option::unwrap() failed", "self.id is None", "KeyError: 'user_id'", "flag = true"],
)
def test_plain_words_survive(message: str) -> None:
    assert normalize_message(message) == message


def test_long_messages_are_truncated() -> None:
    out = normalize_message("word " * 1000)
    assert 0 < len(out) <= MAX_LENGTH
    assert out == out.strip()


def test_fingerprint_hashes_type_and_normalized_message() -> None:
    digest = hashlib.blake2b(b"TimeoutError\ntimeout after <duration>",
                             digest_size=8).hexdigest()
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


@pytest.mark.parametrize("ident", ["00000528366d", "0000052836d6", "000100000005", "deadbeef12"])
def test_ids_ending_like_a_unit_are_ids(ident: str) -> None:
    assert normalize_message(f"id {ident} after 1000 s") == "id <num> after <duration>"
