"""``bga hash-password``: a line for the dashboard's users file (``dashboard/auth.py``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from graph.cli_errors import CommandError


def hash_password(
        name: Annotated[str, typer.Argument(help="User name (letters, digits, _.@+-)")],
        role: Annotated[str, typer.Option(help="viewer or operator")] = "viewer",
        stdin: Annotated[bool, typer.Option(
            "--stdin", help="Read the password from the first line of standard input")] = False,
) -> None:
    """Print `name:role:argon2-hash` for the file BGA_DASHBOARD_USERS names.

    The password is asked twice (not echoed), or read from stdin with --stdin; it is never
    printed, and only its argon2id hash leaves this command."""
    from dashboard import auth  # streamlit is heavy: only this command needs it

    if not auth.NAME.fullmatch(name):
        raise CommandError(f"bad user name {name[:64]!r}",
                           "use letters, digits and _.@+- (at most 64 characters)")
    if role not in auth.ROLES:
        raise CommandError(f"unknown role {role[:20]!r}", "use --role viewer or --role operator")
    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise CommandError("the password is empty", "type a password (or pipe one with --stdin)")
    typer.echo(f"{name}:{role}:{auth.hash_password(password)}")


def register(app: typer.Typer) -> None:
    app.command("hash-password")(hash_password)
