"""A PostgreSQL server of a test's (or benchmark's) own: ``initdb`` and ``pg_ctl`` on a free
port in a temporary directory, so the test may restart or stop it. The server binaries come
from ``/usr/lib/postgresql/<version>/bin`` (Debian) or ``PATH``; as root they run as the
``postgres`` user (the server refuses to run as root)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

MISSING = ("PostgreSQL server binaries (initdb, pg_ctl) not found under "
           "/usr/lib/postgresql/*/bin or on PATH (Debian: apt-get install postgresql)")


def find_bin() -> Path | None:
    """The newest directory holding both ``initdb`` and ``pg_ctl``."""
    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.name
        return tuple(int(p) for p in part.split(".") if p.isdigit())

    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all((Path(found) / tool).exists() for tool in ("initdb", "pg_ctl")):
            return Path(found)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One throw-away cluster: ``start``, ``restart`` (fast: every session is ended with an
    administrator shutdown, as a real restart does), ``stop``; ``url`` reaches it."""

    def __init__(self, bin_dir: Path, *, listen: str = "127.0.0.1") -> None:
        self.bin = bin_dir
        self.listen = listen
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="bga-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user: str | None = None
        if os.geteuid() == 0:  # the server refuses root: run it as postgres (or nobody)
            self.user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
            if self.user is None:
                raise RuntimeError("running as root without a postgres or nobody user")
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")
        if listen != "127.0.0.1":  # initdb trusts only loopback; this server is a test's
            hba = self.data / "pg_hba.conf"
            self._run("sh", "-c", f"echo 'host all all 0.0.0.0/0 trust' >> {hba}")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.listen.split(',')[0]}:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool) if (self.bin / tool).exists() else tool, *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120,
                              cwd=self.root)

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses='{self.listen}' "
                   "-c fsync=off -c max_connections=200")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l",
                  str(self.log), "-o", options)

    def restart(self) -> None:
        # stop + start, not `pg_ctl restart`: that one forgets -l and logs to our pipe
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data))
        self.start()

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "immediate", "-D", str(self.data),
                  check=False)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def own_server(*, listen: str = "127.0.0.1") -> Iterator[PgServer]:
    """A started server, stopped and deleted on exit; RuntimeError(MISSING) without binaries."""
    bin_dir = find_bin()
    if bin_dir is None:
        raise RuntimeError(MISSING)
    server = PgServer(bin_dir, listen=listen)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
