"""A small front for the dashboard: refuses requests for a foreign Host or from a foreign Origin.

Streamlit checks Host and Origin on its websocket only (``server.allowedHosts``); its HTTP routes
answer any Host. A page on another domain whose name is rebound to 127.0.0.1 (DNS rebinding) or
any other site's page must get nothing, so ``bga dashboard`` listens here and forwards to
Streamlit on an internal port: every request's head is read, a foreign ``Host`` or ``Origin`` gets
``403`` naming the rule, an allowed one is forwarded as it is. Every request of a keep-alive
connection is checked (request bodies are forwarded by their ``Content-Length``; chunked
request bodies are refused); a websocket upgrade is raw bytes once its handshake passed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from urllib.parse import urlsplit

MAX_HEAD = 65_536
HEAD_TIMEOUT_S = 30.0
RULE = "dashboard-hosts"


def hostname(value: str) -> str | None:
    """``Host`` header -> lower-case name without port (None if malformed)."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        _ = parts.port  # validates the port
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None or parts.path:
        return None
    return (parts.hostname or "").rstrip(".") or None


def refusal(head: bytes, allowed: Iterable[str]) -> str | None:
    """Why this request is refused (its Host or Origin is not allowed), or None."""
    allowed = set(allowed)
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    host = hostname(headers.get("host", ""))
    names = ", ".join(sorted(allowed))
    if host not in allowed:
        return (f"refused by rule '{RULE}': Host {headers.get('host', '')!r} is not one of "
                f"{names} (BGA_DASHBOARD_HOSTS adds names)")
    origin = headers.get("origin")
    if origin is not None and origin != "null":
        origin_host = urlsplit(origin).hostname
        if origin_host is None or origin_host.lower().rstrip(".") not in allowed:
            return (f"refused by rule '{RULE}': Origin {origin!r} is not one of {names} "
                    "(a page of another site may not use the dashboard)")
    return None


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65_536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _reply(writer: asyncio.StreamWriter, status: bytes, body: bytes = b"") -> None:
    writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 b"Content-Length: " + str(len(body)).encode() +
                 b"\r\nConnection: close\r\n\r\n" + body)


async def _handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                  upstream_port: int, allowed: frozenset[str]) -> None:
    """Check each request of a keep-alive connection before it is forwarded (clients do not
    pipeline: the next head is read after the previous request's body)."""
    upstream: tuple[asyncio.StreamWriter, asyncio.Task] | None = None
    try:
        while True:
            try:
                head = await asyncio.wait_for(client_r.readuntil(b"\r\n\r\n"),
                                              HEAD_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                    ConnectionError):
                return
            why = refusal(head[:-4], allowed)
            if why is None and _header(head, b"transfer-encoding") is not None:
                why = "chunked request bodies are not accepted"
            if why is not None:
                _reply(client_w, b"403 Forbidden", why.encode())
                with contextlib.suppress(ConnectionError):
                    await client_w.drain()
                return
            if upstream is None:
                try:
                    up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
                except OSError:
                    _reply(client_w, b"502 Bad Gateway")
                    return
                upstream = (up_w, asyncio.create_task(_pipe(up_r, client_w)))
            up_w = upstream[0]
            up_w.write(head)
            if _header(head, b"upgrade") is not None:  # a websocket: checked, now raw bytes
                await _pipe(client_r, up_w)
                return
            length = int(_header(head, b"content-length") or b"0")
            if length:
                up_w.write(await client_r.readexactly(length))
            await up_w.drain()
    except (ConnectionError, ValueError, asyncio.IncompleteReadError):
        return
    finally:
        if upstream is not None:
            upstream[0].close()
            await asyncio.gather(upstream[1], return_exceptions=True)
        with contextlib.suppress(Exception):
            client_w.close()


async def start(port: int, upstream_port: int, allowed: Iterable[str]) -> asyncio.Server:
    """Listen on 127.0.0.1:``port`` and forward allowed requests to ``upstream_port``."""
    names = frozenset(h.lower() for h in allowed)
    return await asyncio.start_server(
        lambda r, w: _handle(r, w, upstream_port, names), "127.0.0.1", port, limit=MAX_HEAD)
