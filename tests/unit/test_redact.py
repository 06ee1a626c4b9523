"""Secret redaction: credentials vanish, ordinary text and token-count metrics stay intact."""

from __future__ import annotations

import copy

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from state.redact import SECRET_PLACEHOLDER, is_secret_key, redact, redact_obj

R = SECRET_PLACEHOLDER
LSV2 = "lsv2_pt_0123456789abcdef0123456789abcdef_0123456789"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {LSV2} here", f"key {R} here"),
        ("key lsv2_sk_abcdef0123456789abcdef", f"key {R}"),
        ("legacy ls__0123456789abcdef0123", f"legacy {R}"),
        ("OPENAI=sk-proj-ABCDEFGHIJKLMNOPQRST1", f"OPENAI={R}"),
        ("use sk-ant-api03-abcdefghijklmnopqrstuv now", f"use {R} now"),
        ("Authorization: Bearer abc.def-ghi_123", f"Authorization: Bearer {R}"),
        ("curl -H 'bearer abcdefghij0123'", f"curl -H 'bearer {R}'"),
        ("aws AKIAIOSFODNN7EXAMPLE.", f"aws {R}."),
        ("gh ghp_abcdefghijklmnopqrstuvwxyz0123", f"gh {R}"),
        ("gh github_pat_11ABCDEFG0123456789_abcdefghijkl", f"gh {R}"),
        ("gh gho_abcdefghijklmnopqrstuvwxyz0123", f"gh {R}"),
        (f"jwt {JWT}", f"jwt {R}"),
        ("password=hunter2 user=bob", f"password={R} user=bob"),
        ("db.password: hunter2", f"db.password: {R}"),
        ('{"api_key": "abc", "max_tokens": 100}', f'{{"api_key": "{R}", "max_tokens": 100}}'),
        ("{'client_secret': 'x y'}", f"{{'client_secret': '{R}'}}"),
        ('{\\"password\\": \\"abc\\"}', f'{{\\"password\\": \\"{R}\\"}}'),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {R}"),
        ("postgres://app:p@ss@db:5432/x", f"postgres://app:{R}@db:5432/x"),
        ("redis://:s3cret@cache/0", f"redis://:{R}@cache/0"),
        ("n_tokens=5 token_count: 7 auth_token=x", f"n_tokens=5 token_count: 7 auth_token={R}"),
        ("API-KEY = 'k1'; PWD=x", f"API-KEY = '{R}'; PWD={R}"),
    ],
)
def test_redact_replaces_secrets(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "timeout after 31 s",
        "user bob@example.com not found",
        "run 550e8400-e29b-41d4-a716-446655440000",
        "the secret garden",
        "missing Bearer token",
        "max_tokens=4096, prompt_tokens: 12, tokens_total=99",
        "task-manager-for-everything-big and tools__init__",
        "see https://example.com/a?b=1 and http://host:8080/x",
        'password=""',
        "",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    "name",
    ["LANGSMITH_API_KEY", "db.password", "openaiApiKey", "auth_token", "APIKey", "x-api-key",
     "client_secret", "AWS_SECRET_ACCESS_KEY", "private_key", "credentials", "Authorization",
     "PASSWD", "pwd", "token", "access_token", "dbPassword"],
)
def test_secret_key_names(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name",
    ["tokens_total", "prompt_tokens", "max_tokens", "completion_tokens", "token_count",
     "totalTokenCount", "batch_size", "keyboard", "key", "dedupe_key", "secretary", "monkey"],
)
def test_non_secret_key_names(name: str) -> None:
    assert not is_secret_key(name)


def test_redact_obj_copies_and_redacts_nested_values() -> None:
    data = {
        "password": "hunter2",
        "api_key": 12345,
        "credentials": {"user": "bob"},
        "token": "",
        "auth_token": None,
        "password_set": True,
        "max_tokens": 100,
        "items": [{"msg": f"using {LSV2}"}, ("Bearer abcdef0123456789", 1.5)],
    }
    before = copy.deepcopy(data)
    assert redact_obj(data) == {
        "password": R,
        "api_key": R,
        "credentials": R,
        "token": "",
        "auth_token": None,
        "password_set": True,
        "max_tokens": 100,
        "items": [{"msg": f"using {R}"}, (f"Bearer {R}", 1.5)],
    }
    assert data == before  # the input is not mutated


@pytest.mark.parametrize("scalar", [0, -3, 2.5, True, None])
def test_redact_obj_returns_scalars_unchanged(scalar: object) -> None:
    assert redact_obj(scalar) is scalar


# --- properties -------------------------------------------------------------------------------

_FRAGMENTS = ["password", "token", "api_key", "Bearer ", "Basic ", "sk-", "lsv2_pt_", "eyJ",
              "AKIA", "ghp_", "http://", "u:", "@", "=", ": ", " ", "'", '"', "\\", R, "[",
              "{", "a", "0", "ABCDEFGHIJ", "abcdefghij0123456789", ".", "-", "_", "\n", ",",
              "xoxb-", "AIza", "sk_live_", "-----BEGIN PRIVATE KEY-----", "DB_PASS=", "key ",
              "token is ", "-----END PRIVATE KEY-----"]
texts = st.one_of(st.text(), st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map("".join))


@settings(max_examples=500, deadline=None)
@given(texts)
@example("http://lsv2_pt_password=:password@")  # the URL match hides the LangSmith key
def test_redact_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


_KEYS = st.one_of(st.sampled_from(["password", "api_key", "max_tokens", "name", "token"]), texts)
json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_redact_obj_is_idempotent(obj: object) -> None:
    once = redact_obj(obj)
    assert redact_obj(once) == once


_HEX = "0123456789abcdef"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
lsv2_keys = st.builds(
    lambda kind, a, b: f"lsv2_{kind}_{a}_{b}",
    st.sampled_from(["pt", "sk"]),
    st.text(_HEX, min_size=32, max_size=32),
    st.text(_HEX, min_size=10, max_size=10),
)
sk_keys = st.builds(
    lambda prefix, body: f"sk-{prefix}{body}",
    st.sampled_from(["", "ant-api03-", "proj-"]),
    st.text(_ALNUM, min_size=20, max_size=48),
)
_SEPARATORS = st.sampled_from([" ", "\n", "=", ": ", "'", '"', "(", ",", "Bearer ", "key="])


@settings(max_examples=300, deadline=None)
@given(st.one_of(lsv2_keys, sk_keys), st.text(), st.text(), _SEPARATORS, _SEPARATORS)
def test_generated_secrets_never_survive(
    secret: str, before: str, after: str, left: str, right: str
) -> None:
    out = redact(before + left + secret + right + after)
    assert secret not in out
    tail = secret[-16:]  # no partial leak either (unless the surrounding text had it)
    assert tail not in out or tail in before + after


@settings(max_examples=200, deadline=None)
@given(st.one_of(lsv2_keys, sk_keys), st.sampled_from(["api_key", "note", "LANGSMITH_API_KEY"]))
def test_generated_secrets_never_survive_redact_obj(secret: str, key: str) -> None:
    out = redact_obj({key: [f"value {secret}"], "nested": {key: secret}})
    assert secret not in repr(out)


# --- the broader pattern set (issue 15) ------------------------------------------------------

PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq9\nZ2x4c3Rh\n"
       "-----END RSA PRIVATE KEY-----")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bot xoxb-1234567890-abcdefghijkl ok", f"bot {R} ok"),
        ("user xoxp-1234-5678-abcdefABCDEF ok", f"user {R} ok"),
        ("maps AIzaSyD-0123456789abcdefghijklmnopqrstu", f"maps {R}"),
        ("pay sk_live_4eC39HqLyjWDarjtT1zdp7dc.", f"pay {R}."),
        ("pay rk_live_4eC39HqLyjWDarjtT1zdp7dc", f"pay {R}"),
        (f"key {PEM} end", f"key {R} end"),
        ("cut -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0", f"cut {R}"),  # truncated
        ("X-API-Key: 0a1b2c3d4e5f", f"X-API-Key: {R}"),
        ("DB_PASS=s3cr3t-pw\nDB_USER=app", f"DB_PASS={R}\nDB_USER=app"),
        ("MYSQL_PWD=abc PGPASSWORD=def", f"MYSQL_PWD={R} PGPASSWORD={R}"),
        ("my api key 8f3kq02jd93kdl20x here", f"my api key {R} here"),
        ("the token is Zm9vYmFyYmF6cXV4MTIz", f"the token is {R}"),
        ("secret (a9Fk2LmQ8zXc7VbN)", f"secret ({R})"),
    ],
)
def test_redact_replaces_the_broader_shapes(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    ["pass_rate=0.97 pass_count: 12", "the key is configuration_value",
     "token counts rose to 1234567890123", "see file:/tmp/test_no_secret_here0/runs.jsonl",
     "monkey 8f3kq02jd93kdl20x", "api key rotation scheduled for tomorrow",
     "password reset link sent"],
)
def test_the_broader_shapes_leave_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("name", ["DB_PASS", "smtp_pass", "PW"])
def test_pass_names_are_secret(name: str) -> None:
    assert is_secret_key(name)
