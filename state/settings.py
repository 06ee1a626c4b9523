"""Process settings from the environment and ``.env`` (never stored in the shared state)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from state.backends import DEFAULT_FAILOVER_S, DEFAULT_URL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(DEFAULT_URL, validation_alias="BGA_DATABASE_URL")
    thread_id: str = Field("system", validation_alias="BGA_THREAD_ID")
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


def database_url(override: str | None = None) -> str:
    """``--db`` if given, else ``BGA_DATABASE_URL`` (environment or .env), else the default."""
    return override or Settings().database_url


def failover_s(override: float | None = None) -> float:
    """``--failover-s`` if given, else ``BGA_FAILOVER_S``, else 15 s."""
    return override if override is not None else Settings().failover_s
