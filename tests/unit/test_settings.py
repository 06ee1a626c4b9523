"""``state.settings.current()`` is ``Settings()`` as of now: a change to the environment or to
the working directory's ``.env`` shows at the next call, and an unchanged one costs no rebuild."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from state import settings
from state.policy import PolicyRefused, agent_class

CLS = "some.module:Agent"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("BGA_AGENT_CLASSES", "BGA_DATABASE_URL", "BGA_FAILOVER_S"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_environment_changes_show_at_once(workdir: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    assert settings.current().agent_classes == ""
    with pytest.raises(PolicyRefused):
        agent_class("agents.x.class", CLS, ())
    monkeypatch.setenv("BGA_AGENT_CLASSES", CLS)
    assert settings.current().agent_classes == CLS
    assert agent_class("agents.x.class", CLS, ()) == CLS
    monkeypatch.setenv("bga_agent_classes", "other:*")  # names are case-insensitive
    monkeypatch.delenv("BGA_AGENT_CLASSES")
    assert settings.current().agent_classes == "other:*"
    monkeypatch.delenv("bga_agent_classes")
    with pytest.raises(PolicyRefused):
        agent_class("agents.x.class", CLS, ())


def test_env_file_changes_show_at_once(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = workdir / ".env"
    env.write_text("BGA_FAILOVER_S=20\n")
    assert settings.failover_s() == 20
    env.write_text("BGA_FAILOVER_S=30\n")  # same size, same second: the content decides
    assert settings.failover_s() == 30
    env.unlink()
    assert settings.failover_s() == settings.Settings().failover_s
    other = workdir / "other"
    other.mkdir()
    (other / ".env").write_text("BGA_DATABASE_URL=sqlite:///elsewhere.db\n")
    monkeypatch.chdir(other)  # the .env of the working directory
    assert settings.database_url() == "sqlite:///elsewhere.db"
    monkeypatch.setenv("BGA_DATABASE_URL", "sqlite:///env.db")  # the environment wins
    assert settings.database_url() == "sqlite:///env.db"


def test_unchanged_inputs_share_one_frozen_settings(workdir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    first = settings.current()
    assert settings.current() is first
    with pytest.raises(pydantic.ValidationError):
        first.agent_classes = CLS  # type: ignore[misc]  # shared: nobody may change it
    monkeypatch.setenv("BGA_AGENT_CLASSES", CLS)
    assert settings.current() is not first


def test_invalid_settings_raise_every_time(workdir: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setenv("BGA_FAILOVER_S", "0")
    for _ in range(2):
        with pytest.raises(pydantic.ValidationError):
            settings.current()
