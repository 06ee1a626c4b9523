"""The fingerprint rules before FINGERPRINT_VERSION 2, frozen: states written with them must keep
counting after an upgrade (tests/integration/test_grouping.py)."""

from __future__ import annotations

import hashlib
import re

MAX_LENGTH = 512

_HEX = r"[0-9a-fA-F]"
# Lookbehinds also exclude ">" and lookaheads "<" so that a placeholder next to residual text
# behaves like the word character it replaced; this keeps the usual case to a single pass.
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("url", r"(?<![\w+.>-])[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:!?)\]}]"),
    (
        "email",
        r"(?<![\w.%+>-])[A-Za-z0-9][\w.%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
        r"\.[A-Za-z]{2,}(?![\w<-])",
    ),
    ("uuid", rf"(?<![0-9A-Za-z>]){_HEX}{{8}}(?:-{_HEX}{{4}}){{3}}-{_HEX}{{12}}(?![0-9A-Za-z<])"),
    (
        "ts",
        r"(?<![\w.>])(?:\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
        r"(?:Z|[+-]\d{2}:?\d{2})?)?|\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?)(?![\w<]|\.\d)",
    ),
    ("ip", r"(?<![\w.>])(?:\d{1,3}\.){3}\d{1,3}(?![\w<]|\.\d)"),
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
        "hex",
        rf"(?<![\w.>])(?:0[xX]{_HEX}+|(?!\d+[eE][-+]?\d+(?!\w))"
        rf"(?={_HEX}*\d)(?={_HEX}*[a-fA-F]){_HEX}{{4,}})(?![\w<])",
    ),
    (
        "num",
        r"(?:(?<![\w.>+-])[-+]|(?<![\w.>]))(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
        r"(?=[A-Za-z%]*(?![\w<]|\.\d))",
    ),
)
_TOKEN_RE = re.compile("|".join(f"(?P<{name}>{rx})" for name, rx in _PATTERNS))
_SPACE_RE = re.compile(r"\s+")


def _placeholder(match: re.Match[str]) -> str:
    return f"<{match.lastgroup}>"


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
    while True:
        following = _pass(current)
        if following == current:
            return current
        current = following


def fingerprint(error_type: str, message: str) -> str:
    """Stable group id for an error: same across processes, runs and hosts.

    Uses ``blake2b`` rather than ``hash()`` because the latter is salted per process.
    """
    key = f"{error_type}\n{normalize_message(message)}".encode()
    return "err_" + hashlib.blake2b(key, digest_size=8).hexdigest()
