"""Error grouping in the manner of Sentry: one stable id per *kind* of error.

Error messages embed run-specific details (ids, counts, hosts, paths, timestamps), so grouping
by the raw text would give every occurrence its own group. ``normalize_message`` replaces those
variable parts with placeholders and ``fingerprint`` hashes the result together with the error
type. The rules follow Sentry's message parameterisation (``sentry.grouping.parameterization``),
with two deliberate differences that keep one template one group:

- every number-like value is ``<num>``: integers of any length, decimals, exponents and hex
  ids (``000100000005`` and ``0001000000a0`` are one value slot, where Sentry tells ``<int>``
  from ``<hex>``); all-letter hex needs 8 letters of one case (``deadbeef``), so ``cafe`` and
  ``face`` stay words;
- a quoted string is a value (``<str>``) unless it is a plain identifier (``'user_id'``,
  ``'numpy.linalg'``): quoted keys, attribute and module names name different things, so
  ``KeyError: 'user_id'`` and ``KeyError: 'order_id'`` stay apart, while ``'a b.txt'``,
  ``'x@'`` or ``'8f3a91'`` are values.

Whatever directly follows ``key=`` is a value (``<val>``), quoted or bare: ``flag=true`` and
``flag=false`` group. Other placeholders: ``<url>``, ``<email>``, ``<uuid>``, ``<ts>`` (ISO,
compact ``20060102T150405``, RFC 1123 dates, times of day), ``<ip>`` (IPv4, IPv6), ``<host>``
(host names under common or internal domains, ``localhost``), ``<path>`` (POSIX, Windows,
``~``), ``<duration>`` (``5 s``, ``1.5s``, ``300ms``, ``2 min``).

Normalization is a single regex pass (alternatives in priority order) repeated until nothing
changes, so it is idempotent; the cut at ``MAX_LENGTH`` can expose new matches (``12x3`` cut to
``12x`` reads as a number with a unit), which the next pass takes. Placeholders consist only of
``[a-z<>]`` and every lookaround treats ``<``/``>`` like word characters, so a placeholder never
starts a new match.

``FINGERPRINT_VERSION`` names these rules: patterns stored under an older version are re-keyed
by ``rekey_patterns`` (on every compaction and every read), so their counts carry on under the
new ids, merged exactly where the new rules put two old groups together.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

MAX_LENGTH = 512
FINGERPRINT_VERSION = 2
_MAX_PASSES = 8

_HEX = r"[0-9a-fA-F]"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*"
_TZ = r"(?:Z|[+-]\d{2}:?\d{2})"
# Common and internal top-level domains; code-like words (``id``, ``is``, ``in``, ``to``, ``me``,
# ``app``, ``info``) are left out so ``self.id`` or ``x.info`` stay text.
_TLDS = ("com|net|org|edu|gov|mil|io|dev|ai|co|uk|de|fr|jp|cn|ru|br|nl|eu|ch|se|ca|au|es|pl|"
         "biz|cloud|internal|local|localdomain|lan|corp|intra|svc|example|invalid|arpa")
_IPV6_BODY = (
    rf"(?:{_HEX}{{1,4}}:){{7}}{_HEX}{{1,4}}"
    rf"|(?=[0-9a-fA-F:]*\d)(?:{_HEX}{{1,4}}(?::{_HEX}{{1,4}})*)?::(?:{_HEX}{{1,4}}(?::{_HEX}{{1,4}})*)?"
    r"|::"
)
# Lookbehinds also exclude ">" and lookaheads "<" so that a placeholder next to residual text
# behaves like the word character it replaced.
_PATTERNS: tuple[tuple[str, str], ...] = (
    # the value half of key=value, whatever it is (Sentry: quoted strings and booleans only)
    ("val", r"(?<=[\w\])'\"]=)(?:'[^'\n]*'|\"[^\"\n]*\""
            r"|[^\s,;&|)\]}'\"<>=]*[^\s,;&|)\]}'\"<>=.:!?])"),
    ("url", r"(?<![\w+.>-])[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:!?)\]}]"),
    (
        "email",
        r"(?<![\w.%+>-])[A-Za-z0-9][\w.%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
        r"\.[A-Za-z]{2,}(?![\w<-])",
    ),
    ("uuid", rf"(?<![0-9A-Za-z>]){_HEX}{{8}}(?:-{_HEX}{{4}}){{3}}-{_HEX}{{12}}(?![0-9A-Za-z<])"),
    (
        "ts",
        r"(?<![\w.>])(?:"
        # ISO 8601 / RFC 3339 (date, optional time and zone), and its compact form
        rf"\d{{4}}-\d{{2}}-\d{{2}}(?:[T ]\d{{2}}:\d{{2}}(?::\d{{2}}(?:[.,]\d+)?)?{_TZ}?)?"
        # (with a space only with colons: "20060102 150405" is two numbers, <num> <num>)
        rf"|\d{{8}}(?:T\d{{6}}|T?\d{{2}}:\d{{2}}:\d{{2}}| \d{{2}}:\d{{2}}:\d{{2}})"
        rf"(?:[.,]\d+)?{_TZ}?"
        # RFC 822 / 1123 / 850 ("Mon, 02 Jan 2006 15:04:05 GMT") and "Jan 18, 2019"
        rf"|(?:{_DAY},?\s)?\d{{1,2}}[\s-]{_MONTH}[\s-]\d{{2,4}}"
        rf"(?:\s\d{{1,2}}:\d{{2}}(?::\d{{2}})?(?:\s(?:[A-Z]{{1,4}}|[+-]\d{{4}}))?)?"
        rf"|(?:{_DAY}\s)?{_MONTH}\s\d{{1,2}},?\s\d{{4}}(?:\s\d{{1,2}}:\d{{2}}:\d{{2}})?"
        # a time of day with seconds
        r"|\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?"
        r")(?![\w<]|\.\d)",
    ),
    (
        "ip",
        rf"(?<![\w:.>])(?:::ffff:)?(?:\d{{1,3}}\.){{3}}\d{{1,3}}(?![\w<]|\.\d)"
        rf"|(?<![\w:.>])(?:{_IPV6_BODY})(?:%\w+)?(?![\w:<])",
    ),
    (
        "host",
        rf"(?<![\w.@/\\>-])(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+(?i:{_TLDS})"
        r"|localhost)(?![\w<-]|\.\w)",
    ),
    (
        "path",
        r"(?<![\w.~:/\\>-])(?:(?:~|\.{1,2})?(?:/[\w.@%+~-]+)+/?"
        r"|[A-Za-z]:\\(?:[\w.$~-]+\\?)*)",
    ),
    (
        "str",
        r"(?<![\w>])'(?:[^'\n]|'(?=\w))*'(?![\w<])"
        r"|\"(?:[^\"\\\n]|\\.)*\"",
    ),
    (
        # hex ids, before durations ("366d" is hex): 0x..., OpenStack Swift transaction ids,
        # 4+ hex digits with a digit and a letter, 8+ hex letters of one case. Written as <num>.
        "hex",
        rf"(?<![\w.>])(?:0[xX]{_HEX}+|tx[0-9a-f]{{21}}-[0-9a-f]{{10}}"
        rf"|(?={_HEX}*\d)(?=\d*[a-fA-F]){_HEX}{{4,}}"
        r"|[a-f]{8,}|[A-F]{8,})(?![\w<])",
    ),
    (
        "duration",
        r"(?:(?<![\w.>+-])[-+]|(?<![\w.>]))\d+(?:\.\d+)? ?"
        r"(?:ns|us|µs|ms|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)(?![\w<]|\.\d)",
    ),
    (
        "num",
        # decimal numbers, signed, with an exponent and a unit suffix (12MB, 50%)
        r"(?:(?<![\w.>+-])[-+]|(?<![\w.>]))(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
        r"(?=[A-Za-z%]*(?![\w<]|\.\d))",
    ),
)

_TOKEN_RE = re.compile("|".join(f"(?P<{name}>{rx})" for name, rx in _PATTERNS))
_SPACE_RE = re.compile(r"\s+")
# A quoted identifier names something (a key, attribute, module): it stays as it is.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _placeholder(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "hex":  # one slot holds ids with and without letters: one placeholder
        return "<num>"
    if kind == "str":
        text = match.group()
        inner = text[1:-1]
        if _NAME_RE.fullmatch(inner) and _TOKEN_RE.search(inner) is None:
            return text
    return f"<{kind}>"


def _pass(text: str) -> str:
    # Whitespace first, so a quoted value spanning a newline is seen the same way twice.
    text = _TOKEN_RE.sub(_placeholder, _SPACE_RE.sub(" ", text)).strip()
    return text[:MAX_LENGTH].rstrip()


def normalize_message(message: str) -> str:
    """Replace run-specific parts of ``message`` with placeholders such as ``<num>``.

    Whitespace is collapsed and the result is capped at ``MAX_LENGTH`` characters so that
    huge messages still map to a bounded group key. Idempotent for every input string.
    """
    current = _pass(message)
    for _ in range(_MAX_PASSES):
        following = _pass(current)
        if following == current:
            break
        current = following
    return current


def fingerprint_normalized(error_type: str, normalized: str) -> str:
    """Group id of an already normalized message."""
    key = f"{error_type}\n{normalized}".encode()
    return "err_" + hashlib.blake2b(key, digest_size=8).hexdigest()


def fingerprint(error_type: str, message: str) -> str:
    """Stable group id for an error: same across processes, runs and hosts.

    Uses ``blake2b`` rather than ``hash()`` because the latter is salted per process.
    """
    return fingerprint_normalized(error_type, normalize_message(message))


def rekey_patterns(patterns: dict[str, dict[str, Any]],
                   merge: Callable[[dict, dict], dict]) -> dict[str, dict[str, Any]]:
    """Patterns keyed by the current fingerprint rules.

    A pattern stored under an older ``FINGERPRINT_VERSION`` (no ``fp`` field) is keyed again
    from its newest sample message (its normalized text if it has none) and merged with
    ``merge`` into the pattern already under the new id, so counts, first/last seen and
    per-bucket counts carry on exactly. Patterns of the current version are returned as they
    are, so this costs one field check per pattern once a state is current.
    """
    if all(p.get("fp") == FINGERPRINT_VERSION for p in patterns.values()):
        return patterns
    out = {pid: p for pid, p in patterns.items() if p.get("fp") == FINGERPRINT_VERSION}
    for pid in sorted(pid for pid, p in patterns.items() if p.get("fp") != FINGERPRINT_VERSION):
        p = patterns[pid]
        # the old rules' <hex> is the new <num>; a sample is the message itself
        message = (p.get("sample") or {}).get("message") or p["normalized"].replace("<hex>",
                                                                                    "<num>")
        normalized = normalize_message(message)
        new_id = fingerprint_normalized(p["error_type"], normalized)
        current = {**p, "normalized": normalized, "fp": FINGERPRINT_VERSION}
        out[new_id] = merge(out[new_id], current) if new_id in out else current
    return out
