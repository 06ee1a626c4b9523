"""``bga status`` prints percentiles in at most 6 characters, each within 0.5 % of the value."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from graph.cli import _num

SCALE = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse(text: str) -> float:
    if text[-1] in SCALE:
        return float(text[:-1]) * SCALE[text[-1]]
    return float(text)


def test_examples() -> None:
    values = (23_415, 1_006, 9_999, 999_999, 1_234_567, 0.5, -23_415, None)
    assert [_num(v) for v in values] == ["23.4k", "1006", "9999", "1M", "1.23M", "0.5",
                                         "-23.4k", "-"]


@given(st.floats(min_value=1.0, max_value=9.9e14) | st.floats(min_value=-9.9e14, max_value=-1.0))
def test_short_and_within_half_a_percent(value: float) -> None:
    text = _num(value)
    assert len(text) <= 6 + (value < 0)
    assert math.isclose(parse(text), value, rel_tol=0.005)


def test_every_integer_magnitude_up_to_a_million() -> None:
    for value in (*range(1, 100_000), *range(100_000, 1_000_000, 97)):
        text = _num(value)
        assert len(text) <= 6, (value, text)
        assert math.isclose(parse(text), value, rel_tol=0.005), (value, text)
