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
    values = (23_415, 9_999, 999_999, 1_234_567, 0.5, -23_415, None)
    assert [_num(v) for v in values] == ["23.4k", "10k", "1M", "1.23M", "0.5", "-23.4k", "-"]


@given(st.floats(min_value=1.0, max_value=9.9e14) | st.floats(min_value=-9.9e14, max_value=-1.0))
def test_short_and_within_half_a_percent(value: float) -> None:
    text = _num(value)
    assert len(text) <= 6 + (value < 0)
    assert math.isclose(parse(text), value, rel_tol=0.005)
