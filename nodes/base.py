"""The agent protocol: what every background agent is and how it reports.

An agent does a bounded slice of work per step and reports through an ``AgentContext``:
metrics, errors, insights, progress and its own small persistent data (e.g. a cursor). The
context turns those into a partial state update that the reducers merge; agents never touch
the state directly, so parallel agents cannot clobber each other.
"""

from __future__ import annotations

import abc
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from state import events
from state.context import Clock
from state.fold import DeltaBuilder, apply_event
from state.models import InvalidInput, PerformanceMetric, check_json

NODE_ORIGIN = 0  # stamp origin of events made inside the graph (inbox streams start at 1)


class AgentSettings(BaseModel):
    """Agent-specific settings; subclasses add typed fields (all must be tunable JSON values)."""

    model_config = ConfigDict(extra="ignore")


class Emitter:
    """Turns validated events (``state.events``) into one node's partial state update.

    The events are kept too (``events``), so the same reports can instead go through the
    inbox when the agent runs in a worker process outside the graph. ``now`` (from the run's
    clock) stamps what the node itself writes (``stamp()``).
    """

    def __init__(self, now: float) -> None:
        self.now = now
        self._builder = DeltaBuilder()
        self._seq = 0
        self.events: list[events.Event] = []

    def emit(self, event: events.Event) -> None:
        self._seq += 1
        self.events.append(event)
        kind, payload = event
        apply_event(self._builder, kind, payload, NODE_ORIGIN, self._seq)

    def stamp(self) -> list:
        self._seq += 1
        return [self.now, NODE_ORIGIN, self._seq]

    def update(self) -> dict[str, Any]:
        return self._builder.build()


class AgentContext(Emitter):
    """Collects one step's reports; ``update()`` is the node's partial state update.

    Every report is stamped with ``clock()`` when it is made (the run's clock inside the
    graph, the worker's outside it); ``now`` is the clock when the step started."""

    def __init__(self, agent_id: str, *, data: dict[str, Any] | None = None,
                 state: dict[str, Any] | None = None, clock: Clock = time.time,
                 database_url: str | None = None) -> None:
        super().__init__(clock())
        self.clock = clock
        self.agent_id = agent_id
        self.database_url = database_url
        self.data: dict[str, Any] = dict(data or {})
        self.state = state or {}
        self.progress: dict[str, Any] = {}
        self.rejected: list[str] = []
        self._data_changed = False

    def metric(self, name: str, value: float, unit: str | None = None,
               timestamp: float | None = None) -> None:
        """Record a measurement; an invalid one is reported as an error, not raised."""
        try:
            self.emit(events.metric(PerformanceMetric.checked(
                source_agent=self.agent_id, name=name, value=value, unit=unit,
                timestamp=timestamp), now=self.clock()))
        except InvalidInput as exc:
            self.rejected.append(str(exc))
            self.error("InvalidMetric", str(exc))

    def error(self, error_type: str, message: str) -> str:
        kind, payload = events.error(error_type, message, self.agent_id, now=self.clock())
        self.emit((kind, payload))
        return payload["id"]

    def insight(self, insight_type: str, content: dict[str, Any], priority: str = "medium",
                key: str | None = None) -> str:
        kind, payload = events.insight(insight_type, content, self.agent_id, priority, key,
                                       now=self.clock())
        self.emit((kind, payload))
        return payload["id"]

    def set_data(self, **values: Any) -> None:
        """Persist small per-agent data (cursors, progress) in the shared state."""
        self.data.update(check_json("agent data", values))
        self._data_changed = True

    def heartbeat(self, status: str, **data: Any) -> None:
        self.emit(events.heartbeat(self.agent_id, {"status": status, **self.progress, **data},
                                    now=self.clock()))

    def _close(self) -> None:
        """Turn changed data into its event, once, after every other report of the step."""
        if self._data_changed:
            self._data_changed = False
            self.emit(events.agent_data(self.agent_id, self.data, now=self.clock()))

    def update(self) -> dict[str, Any]:
        """The step's reports as a partial state update (the agent ran inside the graph)."""
        self._close()
        return super().update()

    def outbox(self) -> list[events.Event]:
        """The step's reports as events for the inbox (the agent ran in a worker process)."""
        self._close()
        return list(self.events)


class Agent(abc.ABC):
    """Base class of background agents.

    Subclasses set ``kind``, optionally ``Settings`` (typed, validated settings from the
    agent's config section), and implement ``step``. Construction must be cheap: an agent
    object is made per step from its current config.
    """

    kind: ClassVar[str] = "agent"
    Settings: ClassVar[type[AgentSettings]] = AgentSettings

    def __init__(self, agent_id: str, settings: AgentSettings | None = None) -> None:
        self.agent_id = agent_id
        self.settings = settings if settings is not None else self.Settings()

    @abc.abstractmethod
    async def step(self, ctx: AgentContext) -> None:
        """Do one bounded slice of work and report it through ``ctx``."""
