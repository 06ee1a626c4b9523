"""Which agents exist: built-in kinds from entry points, the rest from configuration.

Adding an agent is one module (an ``Agent`` subclass) and one config line: either an entry
point in the ``background_agents.agents`` group and ``agents.<id>.kind``, or
``agents.<id>.class = "package.module:Class"`` for a class the operator allow-listed in
``BGA_AGENT_CLASSES`` (``state.policy``: the shared config never names code to import). The
graph never changes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points

from nodes.base import Agent
from state import policy
from state.config import AgentSection, SystemConfig

ENTRY_POINT_GROUP = "background_agents.agents"


class AgentLoadError(ValueError):
    """An agent section names a kind or class that cannot be loaded."""


@cache
def builtin_kinds() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_class(path: str) -> type[Agent]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise AgentLoadError(f"agent class must look like 'package.module:Class', got {path!r}")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AgentLoadError(f"cannot load agent class {path!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise AgentLoadError(f"{path!r} is not an Agent subclass")
    return cls


@dataclass(frozen=True)
class AgentSpec:
    agent_id: str
    cls: type[Agent]
    section: AgentSection

    @property
    def kind(self) -> str:
        return self.section.kind or self.cls.kind

    def build(self) -> Agent:
        # unset section fields (None) must not override the Settings' own defaults
        fields = self.section.model_dump(exclude={"options"}, exclude_none=True)
        settings = self.cls.Settings.model_validate({**self.section.options, **fields})
        return self.cls(self.agent_id, settings)


def resolve(agent_id: str, section: AgentSection) -> AgentSpec:
    if section.class_path:
        try:
            policy.agent_class(f"agents.{agent_id}.class", section.class_path,
                               builtin_kinds().values())
        except policy.PolicyRefused as exc:
            raise AgentLoadError(str(exc)) from None
        return AgentSpec(agent_id, load_class(section.class_path), section)
    kind = section.kind or agent_id
    path = builtin_kinds().get(kind)
    if path is None:
        raise AgentLoadError(f"agent {agent_id!r}: unknown kind {kind!r} "
                             f"(known: {', '.join(sorted(builtin_kinds())) or 'none'})")
    return AgentSpec(agent_id, load_class(path), section)


def configured_agents(config: SystemConfig) -> tuple[dict[str, AgentSpec], dict[str, str]]:
    """Enabled agents that load, and the reason for each that does not."""
    specs: dict[str, AgentSpec] = {}
    broken: dict[str, str] = {}
    for agent_id, section in sorted(config.agents.items()):
        if not section.enabled:
            continue
        try:
            specs[agent_id] = resolve(agent_id, section)
        except AgentLoadError as exc:
            broken[agent_id] = str(exc)
    return specs, broken
