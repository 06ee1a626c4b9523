"""Process settings from the environment and ``.env`` (never stored in the shared state)."""

from __future__ import annotations

import os

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from state.backends import DEFAULT_FAILOVER_S, DEFAULT_URL

ENV_FILE = ".env"


class Settings(BaseSettings):
    """Read them with ``current()``; a ``Settings`` is frozen (``current`` shares it)."""

    model_config = SettingsConfigDict(env_file=ENV_FILE, extra="ignore", frozen=True)

    database_url: str = Field(DEFAULT_URL, validation_alias="BGA_DATABASE_URL")
    failover_s: float = Field(DEFAULT_FAILOVER_S, ge=1, le=3600, validation_alias="BGA_FAILOVER_S")
    langsmith_api_key: SecretStr | None = Field(None, validation_alias="LANGSMITH_API_KEY")
    langsmith_projects: str = Field("", validation_alias="BGA_LANGSMITH_PROJECTS")
    # operator policy (state/policy.py): what the shared configuration may choose among
    langsmith_endpoint: str | None = Field(None, validation_alias="LANGSMITH_ENDPOINT")
    langsmith_endpoints: str = Field("", validation_alias="BGA_LANGSMITH_ENDPOINTS")
    agent_classes: str = Field("", validation_alias="BGA_AGENT_CLASSES")
    import_runners: str = Field("", validation_alias="BGA_IMPORT_RUNNERS")
    import_roots: str = Field("", validation_alias="BGA_IMPORT_ROOTS")
    export_roots: str = Field("", validation_alias="BGA_EXPORT_ROOTS")
    dashboard_hosts: str = Field("", validation_alias="BGA_DASHBOARD_HOSTS")
    # dashboard login (dashboard/auth.py): a users file, and what a visitor who has not logged
    # in may do (none, viewer, operator)
    dashboard_users: str = Field("", validation_alias="BGA_DASHBOARD_USERS")
    dashboard_anonymous: str = Field("", validation_alias="BGA_DASHBOARD_ANONYMOUS")


_last: tuple[tuple, Settings] | None = None


def _inputs() -> tuple:
    """Everything ``Settings()`` reads: the environment, and the ``.env`` file of the working
    directory (the same checks pydantic-settings makes: a regular file, read whole)."""
    cwd = os.getcwd()
    path = os.path.join(cwd, ENV_FILE)
    env_file: bytes | None = None
    if os.path.isfile(path):
        try:
            with open(path, "rb") as f:
                env_file = f.read()
        except OSError:
            env_file = None
    return cwd, env_file, tuple(os.environ.items())


def current() -> Settings:
    """The settings in force now: the same as ``Settings()``, which is re-made only when the
    environment or the ``.env`` file changed since the last call (building one costs ~1 ms;
    the policy reads them once per agent per tick, ``state.policy``)."""
    global _last
    key = _inputs()
    last = _last
    if last is not None and last[0] == key:
        return last[1]
    made = Settings()
    _last = (key, made)
    return made


def database_url(override: str | None = None) -> str:
    """``--db`` if given, else ``BGA_DATABASE_URL`` (environment or .env), else the default."""
    return override or current().database_url


def failover_s(override: float | None = None) -> float:
    """``--failover-s`` if given, else ``BGA_FAILOVER_S``, else 15 s."""
    return override if override is not None else current().failover_s
