"""What every ``bga`` command module shares: the ``--db`` option, the consoles, the error policy.

``graph.cli`` (the app and the state commands), ``graph.cli_import``, ``graph.cli_bridge`` and
``graph.cli_cluster`` each import this module and nothing of each other but their
``register`` functions, so the command modules form no cycle.

The error policy: a command that fails because of something the person can fix (a database
that cannot be reached, a missing file, a directory where a file belongs, a file of the wrong
type, a bad value) prints ONE short message on stderr, naming what was wrong and what to do,
and exits non-zero: 2 for bad input (wrong value, wrong or missing file), 1 when the
environment failed (database unreachable, disk full). No traceback, unless
``bga --debug COMMAND`` (or ``BGA_DEBUG=1``) asks for it. Every command of the ``bga`` app
gets the policy because the app and its sub-apps are made with :class:`Typer`, which wraps
each command's function.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape

from state.backends import LockBusy
from state.models import InvalidInput
from state.redact import redact

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
console = Console(soft_wrap=True)
"""Standard output: what a command reports."""
err = Console(stderr=True, soft_wrap=True)
"""Standard error: failures, hints and progress."""

DB_HELP = "Database URL (default: $BGA_DATABASE_URL, then sqlite:///./data/state.db)"
DbOption = Annotated[str | None, typer.Option("--db", help=DB_HELP)]
"""The ``--db URL`` option of every command that opens the state (``state.settings.database_url``
resolves it)."""

USAGE, ENVIRONMENT = 2, 1
DB_HINT = "check --db (or BGA_DATABASE_URL): is the server running, does the database exist?"
_debug = {"on": False}


class CommandError(Exception):
    """A failure with its message and hint already worded for a person."""

    def __init__(self, message: str, hint: str | None = None, code: int = USAGE) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


def set_debug(on: bool) -> None:
    _debug["on"] = on


def debugging() -> bool:
    return _debug["on"] or os.environ.get("BGA_DEBUG", "") not in ("", "0", "false")


def fail(message: str, hint: str | None = None, code: int = USAGE) -> NoReturn:
    """Print the message (and hint) and exit with ``code``."""
    err.print(f"[red]error:[/red] {escape(redact(message))}", highlight=False)
    if hint:
        err.print(f"  {escape(redact(hint))}", highlight=False)
    raise typer.Exit(code)


def _os_error(exc: OSError) -> CommandError:
    where = f"{exc.filename}" if exc.filename else "a file"
    if isinstance(exc, IsADirectoryError):
        return CommandError(f"{where} is a directory", "give the path of a file")
    if isinstance(exc, NotADirectoryError):
        return CommandError(f"{where}: a part of this path is a file, not a directory",
                            "check the path")
    if isinstance(exc, FileNotFoundError):
        parent = Path(str(exc.filename)).parent if exc.filename else None
        if parent is not None and not parent.exists():
            return CommandError(f"{where}: the directory {parent} does not exist",
                                "create it first or give another path")
        return CommandError(f"no such file: {where}", "check the path")
    if isinstance(exc, PermissionError):
        return CommandError(f"permission denied: {where}", "check the file's permissions")
    return CommandError(f"{where}: {exc.strerror or exc}", None, ENVIRONMENT)


def describe(exc: BaseException) -> CommandError | None:
    """The person-facing form of a failure; None when it is a bug (shown as such)."""
    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, InvalidInput | LockBusy):
        return CommandError(str(exc))
    if isinstance(exc, UnicodeDecodeError):
        return CommandError(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                            "give a UTF-8 file")
    if isinstance(exc, json.JSONDecodeError):
        return CommandError(f"not valid JSON (line {exc.lineno}, column {exc.colno})")
    if isinstance(exc, ConnectionError):  # the backends raise it naming the database
        return CommandError(str(exc), DB_HINT, ENVIRONMENT)
    if isinstance(exc, sqlite3.Error):
        return CommandError(f"SQLite: {exc}", DB_HINT, ENVIRONMENT)
    if type(exc).__module__.startswith("psycopg"):
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CommandError(f"PostgreSQL: {text}", DB_HINT, ENVIRONMENT)
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, TimeoutError):
        return CommandError(str(exc) or "timed out", "try again", ENVIRONMENT)
    if isinstance(exc, ValueError | PermissionError):
        return CommandError(str(exc))
    return None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; its failures reach the error policy (``guarded``) that
    wraps the command."""
    return asyncio.run(coro)


def guarded(fn: F) -> F:
    """Wrap a command's function in the error policy."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.ClickException, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if debugging():
                raise
            known = describe(exc)
            if known is None:
                fail(f"unexpected {type(exc).__name__}: {exc}",
                     "this is a bug; run again with `bga --debug ...` for the traceback and "
                     "report it", ENVIRONMENT)
            fail(str(known), known.hint, known.code)

    return wrapper  # type: ignore[return-value]


def writable_file(path: Path) -> Path:
    """Check an output path before any work: not a directory, its directory exists."""
    if path.is_dir():
        fail(f"{path} is a directory", f"give a file name, e.g. {path / 'state.json'}")
    if not path.parent.is_dir():
        fail(f"cannot write {path}: the directory {path.parent} does not exist",
             "create it first or give another path")
    return path


def readable_file(path: Path, what: str) -> Path:
    """Check an input path: it exists and is a file (not a directory)."""
    if path.is_dir():
        fail(f"{path} is a directory, not {what}", "give the path of one file")
    if not path.exists():
        fail(f"no such file: {path}", "check the path")
    return path


class Typer(typer.Typer):
    """``typer.Typer`` whose every command runs under the error policy (:func:`guarded`)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(fn: F) -> F:
            register(guarded(fn))
            return fn

        return decorator
