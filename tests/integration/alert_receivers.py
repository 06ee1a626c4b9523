"""Real receivers on localhost for the alert tests: an HTTP server that records webhook and
Slack-format calls (verifying the HMAC signature of the webhook), and an SMTP server
(aiosmtpd). Each can answer with scripted failures or hold a request until told to answer,
so a test can kill the sender while a delivery is in flight."""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from graph.alerts import verify


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool | None = None

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def key(self) -> str:
        return self.headers.get("idempotency-key", "")


@dataclass
class HttpReceiver:
    """Records every POST. ``script`` is a list of (status, headers) answered in turn (then
    200); ``hold`` blocks each answer until it is set; ``secret`` verifies signatures."""

    secret: str | None = None
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    hold: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                call = Call(self.path, headers, body)
                if receiver.secret is not None:
                    call.verified = verify(receiver.secret, headers.get("x-bga-timestamp", ""),
                                           body, headers.get("x-bga-signature", ""))
                receiver.calls.append(call)
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                status, extra, text = receiver.script.pop(0) if receiver.script \
                    else (200, {}, "ok")
                try:
                    self.send_response(status)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(text.encode())))
                    self.end_headers()
                    self.wfile.write(text.encode())
                except OSError:
                    pass  # the sender is gone (killed mid-delivery)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class Mail:
    envelope_to: list[str]
    message: Message

    @property
    def key(self) -> str:
        return str(self.message["X-BGA-Idempotency-Key"])


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1: records every message; ``hold`` blocks the reply to DATA."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.hold: threading.Event | None = None
        self.arrived = threading.Event()
        self.port = free_port()
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any
                                  ) -> str:
                receiver.mails.append(Mail(list(envelope.rcpt_tos),
                                           email.message_from_bytes(envelope.content)))
                receiver.arrived.set()
                if receiver.hold is not None:
                    await asyncio.get_running_loop().run_in_executor(None, receiver.hold.wait,
                                                                     60)
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.controller.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Poll ``condition`` until true; fail (not flake) only after a generous deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


@contextlib.contextmanager
def running_receivers(secret: str) -> Iterator[dict[str, Any]]:
    """A signed webhook (``hook``, checking ``secret``), a Slack-format webhook (``chat``) and
    an SMTP server (``mail``) on localhost, stopped at the end."""
    hook = HttpReceiver(secret=secret).start()
    chat = HttpReceiver().start()
    mail = SmtpReceiver().start()
    try:
        yield {"hook": hook, "chat": chat, "mail": mail}
    finally:
        for r in (hook, chat, mail):
            r.stop()
