"""``check_name``: a name it has seen before answers from its cache exactly as the full check
would (same value, same errors), and nothing secret is kept in the cache."""

from __future__ import annotations

import pytest

from state import models
from state.models import InvalidInput, PerformanceMetric, check_name

BAD = [
    ("", "name: must not be empty"),
    ("   ", "name: must not be empty"),
    ("a" * 201, "name: longer than 200 characters"),
    ("a/b", "name: must not contain '/'"),
    ("a\tb", "name: must not contain control characters"),
    ("a\x1fb", "name: must not contain control characters"),
    ("a\ud800", "name: is not valid Unicode (lone surrogate)"),
    (3, "name: must be a string, got int"),
]


@pytest.mark.parametrize(("value", "message"), BAD)
def test_a_bad_name_fails_the_same_way_every_time(value: object, message: str) -> None:
    for _ in range(3):
        with pytest.raises(InvalidInput) as err:
            check_name("name", value, allow_slash=False)
        assert str(err.value) == message
        assert err.value.field == "name"


def test_a_known_name_answers_from_the_cache_with_the_same_value() -> None:
    models._NAMES.clear()
    assert check_name("unit", "ms") == "ms"
    assert models._NAMES[("unit", "ms", True)] == "ms"
    assert check_name("unit", "ms") == "ms"
    # the cache is per field and per rule: a slash allowed for one is refused by the other
    assert check_name("name", "a/b") == "a/b"
    with pytest.raises(InvalidInput, match="must not contain '/'"):
        check_name("name", "a/b", allow_slash=False)


def test_names_that_change_when_checked_are_never_cached() -> None:
    models._NAMES.clear()
    assert check_name("name", "  padded ") == "padded"
    secret = "sk-" + "a1B2c3D4e5F6g7H8i9J0k"
    redacted = check_name("name", f"key {secret}")
    assert secret not in redacted and "[REDACTED]" in redacted
    assert check_name("name", f"key {secret}") == redacted
    assert all(secret not in key[1] for key in models._NAMES)
    assert ("name", "  padded ", True) not in models._NAMES


def test_the_cache_stays_bounded() -> None:
    models._NAMES.clear()
    for i in range(models._NAMES_MAX + 10):
        check_name("name", f"series_{i}")
    assert len(models._NAMES) <= models._NAMES_MAX


def test_a_str_subclass_takes_the_full_check() -> None:
    class Name(str):
        pass

    assert check_name("name", Name(" x ")) == "x"
    assert check_name("name", Name("y")) == "y"
    assert not any(type(key[1]) is not str for key in models._NAMES)


def test_metric_errors_are_unchanged() -> None:
    for _ in range(2):  # once to fill the cache, once from it
        with pytest.raises(InvalidInput, match=r"^source_agent: must not contain '/'$"):
            PerformanceMetric.checked(source_agent="a/b", name="n", value=1.0)
        with pytest.raises(InvalidInput, match=r"^name: must not be empty$"):
            PerformanceMetric.checked(source_agent="a", name=" ", value=1.0)
        m = PerformanceMetric.checked(source_agent=" a ", name="n", value=1, unit="ms")
        assert (m.source_agent, m.name, m.value, m.unit) == ("a", "n", 1.0, "ms")
