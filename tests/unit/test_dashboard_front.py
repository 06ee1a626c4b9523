"""The dashboard front's rule (``graph.dashboard_front``): which request heads are refused."""

from __future__ import annotations

import pytest

from graph.dashboard_front import hostname, refusal

ALLOWED = {"127.0.0.1", "localhost", "dash.internal"}


def head(*lines: str) -> bytes:
    return "\r\n".join(["GET / HTTP/1.1", *lines]).encode()


@pytest.mark.parametrize("host", ["127.0.0.1:8501", "localhost", "LOCALHOST:1", "dash.internal.",
                                  "dash.internal:443"])
def test_allowed_hosts_pass(host: str) -> None:
    assert refusal(head(f"Host: {host}"), ALLOWED) is None
    assert refusal(head(f"Host: {host}", f"Origin: http://{host}"), ALLOWED) is None


@pytest.mark.parametrize("lines", [
    (),  # no Host at all
    ("Host: evil.example:8501",),
    ("Host: 127.0.0.1.evil.example",),
    ("Host: user@127.0.0.1",),
    ("Host: 127.0.0.1:99999",),
    ("Host: 127.0.0.1", "Origin: http://evil.example"),
    ("Host: 127.0.0.1", "Origin: file://"),
])
def test_foreign_host_or_origin_is_refused_naming_the_rule(lines: tuple[str, ...]) -> None:
    why = refusal(head(*lines), ALLOWED)
    assert why is not None and "rule 'dashboard-hosts'" in why


def test_hostname_parsing() -> None:
    assert hostname("[::1]:8501") == "::1"
    assert hostname("a/b") is None and hostname("") is None
