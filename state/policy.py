"""Operator policy: configuration is data, never capability.

The shared configuration can be edited by anyone who reaches the dashboard or the database,
so it may *choose* among what the operator allowed, never *name* something new:

- code: an agent class or an importer runner is a registered entry point or is listed in the
  environment (``BGA_AGENT_CLASSES``, ``BGA_IMPORT_RUNNERS``); a ``module:Class`` string from
  the shared state is never imported (rule ``code-from-environment``);
- files: a path an agent reads is inside a root set in the environment (``BGA_IMPORT_ROOTS``,
  ``BGA_EXPORT_ROOTS``), checked after resolving symlinks (rule ``read-roots``);
- endpoints: a URL that receives a credential is the one configured next to the credential
  (``LANGSMITH_ENDPOINT``) or listed in ``BGA_LANGSMITH_ENDPOINTS`` (rule
  ``credential-endpoint``).

Each refusal is a ``PolicyRefused`` naming the field and the rule; nothing is read, imported
or sent. The settings are read from the environment / ``.env`` of the process that acts (the
worker or coordinator), not of the one that edited the configuration.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from state.models import InvalidInput
from state.redact import redact
from state.settings import current as current_settings

RULE_CODE = "code-from-environment"
RULE_ROOTS = "read-roots"
RULE_ENDPOINT = "credential-endpoint"
DEFAULT_LANGSMITH_ENDPOINT = "https://api.smith.langchain.com"

# roots the operator granted for this call only (a path given on the command line)
_operator_roots: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar(
    "bga_operator_roots", default=())


class PolicyRefused(InvalidInput):
    """Shared configuration asked for a capability the operator did not grant."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(field, f"refused by rule '{rule}': {message}")
        self.rule = rule


def split_list(raw: str) -> list[str]:
    """``a, b`` / ``a:b`` lists from one environment variable (paths split on os.pathsep)."""
    return [item.strip() for item in raw.split(",") if item.strip()]


def allowed_code(field: str, path: str, builtin: Iterable[str], env_value: str,
                 env_name: str) -> str:
    """``path`` (``module:attr``) if it is built in or allow-listed (``module:attr`` or
    ``module:*``) in the environment; else PolicyRefused."""
    allowed = set(builtin)
    if path in allowed:
        return path
    module, _, _ = path.partition(":")
    for item in split_list(env_value):
        if item == path or (item.endswith(":*") and item[:-2] == module):
            return path
    raise PolicyRefused(field, RULE_CODE,
                        f"{redact(path)!r} is not a registered entry point nor listed in "
                        f"{env_name}; code is never named by the shared configuration")


def agent_class(field: str, path: str, builtin: Iterable[str]) -> str:
    return allowed_code(field, path, builtin, current_settings().agent_classes,
                        "BGA_AGENT_CLASSES")


def import_runner(field: str, path: str, builtin: Iterable[str]) -> str:
    return allowed_code(field, path, builtin, current_settings().import_runners,
                        "BGA_IMPORT_RUNNERS")


def roots_of(raw: str) -> list[Path]:
    """Resolved roots from a list of folders (``,`` or ``os.pathsep`` separated)."""
    parts = [p for chunk in raw.split(",") for p in chunk.split(os.pathsep)]
    return [Path(p.strip()).expanduser().resolve() for p in parts if p.strip()]


@contextlib.contextmanager
def operator_roots(*paths: Path) -> Iterator[None]:
    """Grant folders for the duration of one operator command (``bga bridge sync FILE``):
    a path typed on the command line is the operator's choice, not the shared config's."""
    token = _operator_roots.set((*_operator_roots.get(),
                                 *(Path(p).expanduser().resolve() for p in paths)))
    try:
        yield
    finally:
        _operator_roots.reset(token)


def confine(field: str, path: str | Path, roots: Iterable[Path], env_name: str) -> Path:
    """``path`` resolved (symlinks followed) if it lies inside one of ``roots`` or a folder
    the operator granted for this command; else PolicyRefused."""
    resolved = Path(path).expanduser().resolve()
    granted = [*roots, *_operator_roots.get()]
    if any(resolved == root or resolved.is_relative_to(root) for root in granted):
        return resolved
    where = ", ".join(str(r) for r in granted) or "none set"
    raise PolicyRefused(field, RULE_ROOTS,
                        f"{redact(str(path))!r} resolves to {redact(str(resolved))!r}, outside "
                        f"the folders set in {env_name} ({where})")


def import_roots(default: Path | None) -> list[Path]:
    """``BGA_IMPORT_ROOTS``, plus the default inbox beside a SQLite state database."""
    roots = roots_of(current_settings().import_roots)
    return [*roots, default.expanduser().resolve()] if default is not None else roots


def export_roots() -> list[Path]:
    return roots_of(current_settings().export_roots)


def _norm(url: str) -> str:
    return url.strip().rstrip("/")


def langsmith_endpoint(field: str, requested: str | None) -> str:
    """The LangSmith API the key may be sent to: ``LANGSMITH_ENDPOINT`` (or LangSmith's own)
    unless ``requested`` is one of the endpoints listed in ``BGA_LANGSMITH_ENDPOINTS``."""
    env = current_settings()
    default = _norm(env.langsmith_endpoint or DEFAULT_LANGSMITH_ENDPOINT)
    if requested is None or not requested.strip():
        return default
    allowed = {default, *(_norm(u) for u in split_list(env.langsmith_endpoints))}
    if _norm(requested) in allowed:
        return _norm(requested)
    raise PolicyRefused(field, RULE_ENDPOINT,
                        f"{redact(requested)!r} is not LANGSMITH_ENDPOINT nor listed in "
                        "BGA_LANGSMITH_ENDPOINTS; the API key only goes to endpoints set in the "
                        "environment next to it")


DEFAULT_DASHBOARD_HOSTS = ("127.0.0.1", "localhost")


def dashboard_hosts() -> list[str]:
    """Host names the dashboard answers to: 127.0.0.1, localhost and ``BGA_DASHBOARD_HOSTS``
    (a page on any other name, e.g. after DNS rebinding, is refused)."""
    extra = [h.lower() for h in split_list(current_settings().dashboard_hosts)]
    return list(dict.fromkeys([*DEFAULT_DASHBOARD_HOSTS, *extra]))
