"""Secret redaction: secrets must never reach shared state, exports, logs or the dashboard.

Everything an agent reports passes through here before it is stored, so redaction must be
idempotent (stored data may be redacted again on export) and must leave ordinary text alone:
token *counts* such as ``prompt_tokens`` are metrics, not credentials.

Three stages: well-known credential shapes anywhere in free text (one alternation, so the
leftmost match wins and overlapping shapes never split a key: URL passwords, bearer tokens,
LangSmith, OpenAI/Anthropic, AWS, GitHub, JWT, Slack, Google, Stripe, PEM private keys), then
``key=value`` / ``key: value`` / ``"key": "value"`` where the key name looks secret (``x-api-key:``
headers, ``DB_PASS=`` lines), keeping the key, then a high-entropy word right after a word such
as key/token/secret/password. This module is the one owner of the rule: every string that
enters the state (names, ids, keys and values alike) passes through ``redact``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from itertools import pairwise
from typing import overload

SECRET_PLACEHOLDER = "[REDACTED]"

_A = r"(?<![A-Za-z0-9_])"  # left boundary for prefixes that also occur inside words
_SHAPES = re.compile(
    "|".join(
        (
            # user:password@ in URLs (the password runs to the last "@" of the authority)
            r"(?P<url>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s/]+(?=@)",
            r"(?P<bearer>\b(?i:bearer)[ \t]+)(?P<tok>[\w.~+/=-]+)",
            r"lsv2_(?:pt|sk)_[A-Za-z0-9_]{8,}",  # LangSmith
            _A + r"ls__[A-Za-z0-9_-]{8,}",  # LangSmith (legacy)
            _A + r"sk-[A-Za-z0-9_-]{17,}",  # OpenAI / Anthropic (sk-ant-, sk-proj-)
            _A + r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])",  # AWS access key id
            _A + r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",  # GitHub
            _A + r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",  # JWT
            _A + r"xox[abposre]-[A-Za-z0-9-]{10,}",  # Slack bot / user / app tokens
            _A + r"AIza[0-9A-Za-z_-]{30,}",  # Google API key
            _A + r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,}",  # Stripe secret / restricted
            # PEM private key: to its END line, or to the end of a truncated text
            r"(?s:-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----.*?"
            r"(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----|\Z))",
        )
    )
)
# a long random-looking word right after a word that names a secret ("api key 8f3kq02...",
# "token is 9fz..."), even without "=" or ":" between them
_AFTER_WORD = re.compile(
    r"(?i:(?<![A-Za-z0-9_])(?:api[ _-]?key|key|token|secret|password|passwd|pwd|pass|"
    r"credential|auth)s?)(?![A-Za-z0-9_])(?P<gap>[ \t:=,'\"()\[\]{}-]{1,3}(?:(?i:is|was|of)"
    r"[ \t:=,'\"()\[\]{}-]{1,3})?)(?P<val>[A-Za-z0-9_+/=.~-]{12,})"
)
# every stage needs one of these: text without any (most names, ids and units) is returned
# as it is after one cheap scan, which keeps redaction fast on the write path
_TRIGGER = re.compile(
    r"[:=@]|lsv2_|ls__|sk-|AKIA|ASIA|gh[pousr]_|github_pat_|eyJ|xox|AIza|_live_|_test_|"
    r"-----BEGIN|(?i:bearer|key|token|secret|pass|pwd|credential|auth)"
)
MIN_ENTROPY_BITS = 3.0  # per character: ``0123456789ab`` has 3.6, ``configuration`` 3.0
_KEY_SEP = re.compile(
    r"(?P<q>\\?[\"']|)(?<![\w.-])(?P<key>[A-Za-z_][\w.-]*)(?P=q)[ \t]*[:=][ \t]*"
)
_VALUE = re.compile(
    r"(?P<scheme>(?i:bearer|basic|token|digest)[ \t]+(?=\S))?(?:"
    + re.escape(SECRET_PLACEHOLDER)
    + r"|(?P<eq>\\[\"'])(?P<e>(?:(?!(?P=eq)).)*)(?P=eq)"  # \"escaped\" inside a JSON string
    r"|(?P<pq>[\"'])(?P<p>(?:\\.|(?!(?P=pq))[^\\])*)(?P=pq)"  # quoted, with escapes
    r"|[^\s,;&'\"\\{\[][^\s,;&'\"\\]*)"  # bare, up to a separator; not a JSON object/list
)

_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "secret", "secrets", "token", "apikey", "credential",
     "credentials", "authorization", "passphrase", "passwords", "pass", "pw"}
)
_QUALIFIED_WORDS = frozenset({"token", "pass"})  # "token_count", "pass_rate": not secrets
_SECRET_SUFFIXES = ("password", "passwd", "secret", "apikey", "accesskey", "privatekey")
_SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key")})
# "token" next to one of these names a metric or a property of a token, not a credential.
_TOKEN_QUALIFIERS = frozenset(
    {"count", "counts", "total", "usage", "limit", "limits", "max", "min", "num", "number",
     "budget", "used", "remaining", "estimate", "len", "length", "size", "rate", "cost",
     "prompt", "completion", "input", "output", "type", "expiry", "expires", "ttl",
     "fail", "failed", "pct", "percent", "ratio", "through", "by"}
)


def is_secret_key(name: str) -> bool:
    """True if a key name looks like it holds a credential (``LANGSMITH_API_KEY``, ``db.password``).

    Names are split on separators and camelCase so ``keyboard`` or ``max_tokens`` don't match.
    """
    words = [w.lower() for w in _WORD_RE.findall(name)]
    if any(pair in _SECRET_PAIRS for pair in pairwise(words)):
        return True
    for word in words:
        if word in _QUALIFIED_WORDS:
            if not _TOKEN_QUALIFIERS.intersection(words):
                return True
        elif word in _SECRET_WORDS or word.endswith(_SECRET_SUFFIXES):
            return True
    return False


def _shape(match: re.Match[str]) -> str:
    if match.group("url") is not None:
        return match.group("url") + SECRET_PLACEHOLDER
    if match.group("bearer") is not None:
        token = match.group("tok")
        if token.isalpha() and len(token) < 20:  # prose ("Bearer token"), not a credential
            return match.group(0)
        return match.group("bearer") + SECRET_PLACEHOLDER
    return SECRET_PLACEHOLDER


def entropy_bits(word: str) -> float:
    """Shannon entropy per character of ``word``."""
    n = len(word)
    return -sum(c / n * math.log2(c / n) for c in Counter(word).values()) if n else 0.0


def _random_looking(word: str) -> bool:
    """Letters and digits mixed, high entropy: a generated credential, not a word or a number."""
    has_digit = any(ch.isdigit() for ch in word)
    has_alpha = any(ch.isalpha() for ch in word)
    return has_digit and has_alpha and entropy_bits(word) >= MIN_ENTROPY_BITS


def _after_word(match: re.Match[str]) -> str:
    value = match.group("val")
    if SECRET_PLACEHOLDER in value or not _random_looking(value):
        return match.group(0)
    return match.group(0)[: match.start("val") - match.start()] + SECRET_PLACEHOLDER


def _redact_values(text: str) -> str:
    """Replace the value after every secret-looking key; other keys are skipped, not consumed."""
    out: list[str] = []
    pos = 0
    while (kv := _KEY_SEP.search(text, pos)) is not None:
        value = _VALUE.match(text, kv.end()) if is_secret_key(kv.group("key")) else None
        if value is None:
            out.append(text[pos : kv.end()])
            pos = kv.end()
            continue
        quote = value.group("eq") or value.group("pq")
        if quote is None:
            body = SECRET_PLACEHOLDER
        elif value.group("e") or value.group("p"):
            body = quote + SECRET_PLACEHOLDER + quote
        else:
            body = quote * 2  # an empty value hides nothing
        out.append(text[pos : value.start()] + (value.group("scheme") or "") + body)
        pos = value.end()
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``SECRET_PLACEHOLDER``; idempotent.

    A pass is repeated until nothing changes because a replacement can expose a shape that
    an overlapping match hid (``http://lsv2_pt_x=:pw@`` reveals ``lsv2_pt_x``). This ends:
    matches never start or end inside a placeholder, so each changing pass lowers the number
    of characters outside placeholders, or else the number of placeholders.
    """
    if _TRIGGER.search(text) is None:
        return text
    while (following := _AFTER_WORD.sub(_after_word,
                                        _redact_values(_SHAPES.sub(_shape, text)))) != text:
        text = following
    return text


@overload
def redact_obj(obj: dict) -> dict: ...
@overload
def redact_obj(obj: object) -> object: ...


def redact_obj(obj: object) -> object:
    """Redacted copy of a JSON-like value: strings are redacted and non-empty values under
    secret-looking keys are replaced whole; other scalars are returned unchanged."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        out: dict[object, object] = {}
        for key, value in obj.items():
            new_key = redact(key) if isinstance(key, str) else key
            secret = isinstance(key, str) and (is_secret_key(key) or is_secret_key(new_key))
            hidden = secret and _non_empty(value)
            out[new_key] = SECRET_PLACEHOLDER if hidden else redact_obj(value)
        return out
    if isinstance(obj, list):
        return [redact_obj(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(redact_obj(item) for item in obj)
    return obj


def _non_empty(value: object) -> bool:
    """Booleans and None can't carry a secret; empty strings and containers hide nothing."""
    if value is None or isinstance(value, bool):
        return False
    return not (isinstance(value, str | list | tuple | dict) and len(value) == 0)
