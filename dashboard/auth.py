"""Who is using the dashboard, and whether they may write: the login and the role gate.

Users never come from the shared state. ``BGA_DASHBOARD_USERS`` (environment or ``.env``)
names a users file, one user a line::

    # name:role:argon2 hash   (make a hash with `bga hash-password`)
    alice:operator:$argon2id$v=19$m=65536,t=3,p=4$...
    bob:viewer:$argon2id$v=19$m=65536,t=3,p=4$...

Roles: a ``viewer`` sees every page; an ``operator`` can also act on insights, edit the
configuration and request optimization cycles. The file is read again when it changes, and a
signed-in user's role is looked up on every run: removing or demoting someone takes effect on
their next click. A file that cannot be read or has a bad line stops the dashboard with one
message naming the file and line (fail closed: nothing is shown).

``BGA_DASHBOARD_ANONYMOUS`` is what a visitor who has not logged in may do: ``none`` (only the
login form), ``viewer`` or ``operator``. Default: ``none`` when users are configured,
``viewer`` (read-only) when there are none.

The gate is ``require``: every write in ``dashboard.data`` calls it first, so a control drawn
for an operator, a stale or forged widget event, or a direct call from a page all meet the same
check on the server. It returns who to record (``dashboard:<user>``; an anonymous operator is
``dashboard:<session>``), which the lifecycle history and the system values keep.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from streamlit.runtime.scriptrunner import get_script_run_ctx

from state.settings import current as current_settings

ROLES = ("viewer", "operator")
ANONYMOUS = ("none", *ROLES)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
SESSION_KEY = "_bga_signed_in"  # the signed-in user's name; only ``log_in`` sets it
LOGIN_FAILED = "Wrong user name or password."

_hasher = PasswordHasher()  # argon2id with the library's current defaults
# checked against when the user does not exist, so an unknown name costs what a wrong
# password costs (the reply time does not tell which names exist)
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AuthConfigError(ValueError):
    """The users file or ``BGA_DASHBOARD_ANONYMOUS`` is wrong; the message says where."""


class Forbidden(PermissionError):
    """A write by someone whose role does not allow it; nothing was written."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str = field(repr=False)


@dataclass(frozen=True)
class Identity:
    """Who this session acts as: a signed-in user, or the anonymous visitor."""

    name: str
    role: str  # "none", "viewer" or "operator"
    signed_in: bool
    by: str  # recorded on every write


@dataclass(frozen=True)
class AuthSettings:
    users: dict[str, User]
    anonymous: str
    source: str | None  # the users file, for messages


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` for the users file."""
    if not password:
        raise ValueError("the password must not be empty")
    return _hasher.hash(password)


def parse_users(text: str, source: str = "users file") -> dict[str, User]:
    """The users of a users file; a bad line raises ``AuthConfigError`` naming it."""
    users: dict[str, User] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":", 2)
        where = f"{source} line {n}"
        if len(parts) != 3:
            raise AuthConfigError(f"{where}: expected name:role:hash")
        name, role, hashed = (p.strip() for p in parts)
        if not NAME.fullmatch(name):
            raise AuthConfigError(f"{where}: bad user name {name[:64]!r} (letters, digits, "
                                  "_.@+- ; at most 64)")
        if role not in ROLES:
            raise AuthConfigError(f"{where}: role must be viewer or operator, got {role[:20]!r}")
        if not hashed.startswith("$argon2"):
            raise AuthConfigError(f"{where}: the hash is not an argon2 hash (make one with "
                                  "`bga hash-password`; never a plain password)")
        if name in users:
            raise AuthConfigError(f"{where}: user {name!r} appears twice")
        users[name] = User(name, role, hashed)
    return users


_cache: dict[tuple[str, int, int], dict[str, User]] = {}


def _read_users(path: str) -> dict[str, User]:
    try:
        info = os.stat(path)
        key = (path, info.st_mtime_ns, info.st_size)
        if key not in _cache:
            users = parse_users(Path(path).read_text(encoding="utf-8"), path)
            _cache.clear()
            _cache[key] = users
        return _cache[key]
    except OSError as exc:
        raise AuthConfigError(f"cannot read the users file {path} (BGA_DASHBOARD_USERS): "
                              f"{exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise AuthConfigError(f"the users file {path} is not UTF-8 text") from None


def settings() -> AuthSettings:
    """The users and the anonymous role in force now (the file is re-read when it changes)."""
    env = current_settings()
    path = env.dashboard_users.strip()
    users = _read_users(path) if path else {}
    anonymous = env.dashboard_anonymous.strip().lower() or ("none" if users else "viewer")
    if anonymous not in ANONYMOUS:
        raise AuthConfigError("BGA_DASHBOARD_ANONYMOUS must be none, viewer or operator, got "
                              f"{anonymous[:20]!r}")
    return AuthSettings(users, anonymous, path or None)


def verify(users: dict[str, User], name: str, password: str) -> User | None:
    """The user if ``password`` is theirs, else None (same work for an unknown name)."""
    user = users.get(name.strip())
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return user


# -- the session --------------------------------------------------------------------------------


def _session_tag() -> str:
    ctx = get_script_run_ctx()
    return f"dashboard:{ctx.session_id[:8]}" if ctx is not None else "dashboard"


def _signed_in_name() -> str | None:
    if get_script_run_ctx() is None:  # a call from outside a dashboard session
        return None
    name = st.session_state.get(SESSION_KEY)
    return name if isinstance(name, str) else None


def current(conf: AuthSettings | None = None) -> Identity:
    """This session's identity, its role looked up in the users file as it is now."""
    conf = conf or settings()
    name = _signed_in_name()
    user = conf.users.get(name) if name else None
    if user is not None:
        return Identity(user.name, user.role, True, f"dashboard:{user.name}")
    return Identity("anonymous", conf.anonymous, False, _session_tag())


def _rank(role: str) -> int:
    return ANONYMOUS.index(role)


def allowed(role: str = "operator") -> bool:
    """May this session do what ``role`` may? (For drawing controls; ``require`` decides.)"""
    try:
        return _rank(current().role) >= _rank(role)
    except AuthConfigError:
        return False


def require(role: str = "operator") -> str:
    """The role gate every dashboard write calls before writing: returns who to record, or
    raises ``Forbidden`` (and nothing is written)."""
    me = current()
    if _rank(me.role) < _rank(role):
        who = f"signed in as {me.name} ({me.role})" if me.signed_in else "not signed in"
        raise Forbidden(f"Refused: this needs the {role} role; you are {who}.")
    return me.by


def viewer() -> str:
    """Whose "last looked" mark the Insights page keeps: the user, or the shared one."""
    me = current()
    return me.by if me.signed_in else "dashboard"


def log_in(conf: AuthSettings, name: str, password: str) -> bool:
    user = verify(conf.users, name, password)
    if user is None:
        st.session_state.pop(SESSION_KEY, None)
        return False
    st.session_state[SESSION_KEY] = user.name
    return True


def log_out() -> None:
    st.session_state.pop(SESSION_KEY, None)


# -- drawing ------------------------------------------------------------------------------------


def _login_form(conf: AuthSettings) -> None:
    with st.form("bga_login", clear_on_submit=True):
        name = st.text_input("User", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        if st.form_submit_button("Log in", type="primary"):
            if log_in(conf, name, password):
                st.rerun()
            st.error(LOGIN_FAILED)


def may_look() -> bool:
    """Whether this session may see the pages (False: only the login form)."""
    return allowed("viewer")


def gate_page() -> Identity:
    """Called by the entry page before anything is drawn: returns the session's identity, or
    shows the login form (or the configuration error) and stops the run."""
    try:
        conf = settings()
    except AuthConfigError as exc:
        st.error(f"The dashboard login is misconfigured: {exc}", icon=":material/lock:")
        st.stop()
    me = current(conf)
    if me.role == "none":
        st.title("Background Agents")
        st.caption("Log in to see the dashboard.")
        _login_form(conf)
        st.stop()
    return me


def sidebar(me: Identity) -> None:
    """Who is signed in, with a log-out button (or a login, when visitors may look)."""
    if me.signed_in:
        st.caption(f"Signed in as **{me.name}** ({me.role})")
        if st.button("Log out", key="logout", icon=":material/logout:"):
            log_out()
            st.rerun()
        return
    conf = settings()
    text = {"viewer": "read-only", "operator": "operator, no login"}.get(me.role, me.role)
    st.caption(f"Not signed in: {text}")
    if conf.users:
        with st.popover("Log in", icon=":material/login:"):
            _login_form(conf)
