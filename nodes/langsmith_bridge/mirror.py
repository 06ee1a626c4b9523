"""Turn runs into metrics, error patterns and insights in one agent step's state update.

Series are named after the project and the run name, under the bridge's agent id:

    <agent>/<project>/<run name>/<metric>               root runs (traces)
    <agent>/<project>/<run type>:<run name>/<metric>    child runs (nodes, tools, LLM calls)

with ``latency_ms`` (end - start, timestamped at the run's end; its count and rate are the
throughput), ``error`` (1 for a failed run, 0 otherwise: the mean is the error rate),
``prompt_tokens``, ``completion_tokens``, ``total_tokens``, ``cost_usd`` and ``first_token_ms``
where the run has them, and ``feedback_<key>``: one observation per feedback score on the run,
timestamped when the score was given (count, mean and distribution come from the sketch).
A failed run also becomes an error pattern through the usual
fingerprinting, with the run name as its source.

Insights are decided by the one rule engine (``nodes.rules``, thresholds in ``RulesConfig``):
the mirror feeds it each series' current and baseline windows, from the metrics already in the
shared state plus the runs of this step, and its own evidence (a few example run ids and, for
LangSmith, links). The coordinator leaves these series to the bridge (``judged_by_bridge``), so
one regression is one insight.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from nodes import rules
from nodes.base import AgentContext
from nodes.langsmith_bridge.records import RUN_TYPES, FeedbackScore, TraceRun, split_error
from state import events, sketch
from state.fold import KIND_METRIC
from state.models import InvalidInput, PerformanceMetric
from state.queries import config_of, span_agg
from state.redact import redact

METRIC_UNITS: dict[str, str | None] = {
    "latency_ms": "ms", "error": None, "prompt_tokens": "tokens", "completion_tokens": "tokens",
    "total_tokens": "tokens", "cost_usd": "USD", "first_token_ms": "ms",
}
FEEDBACK_PREFIX = "feedback_"
MINUTE = 60
MAX_PROJECT = 50
MAX_LABEL = 110
MAX_NEW_PATTERN_INSIGHTS = 10


@lru_cache(maxsize=4_096)  # run names repeat: redact each distinct one once
def clean(text: str, limit: int) -> str:
    """A series or source name part: no '/', no control characters, bounded length.

    Redacted first: turning '/' into '_' would hide a URL's password from the redactor."""
    out = redact("".join(ch for ch in text if ch >= " ")).replace("/", "_").strip()
    return (out or "unnamed")[:limit]


def series_label(run: TraceRun) -> str:
    name = clean(run.name, MAX_LABEL - 12)
    return f"{clean(run.project, MAX_PROJECT)}/{name}" if run.is_root \
        else f"{clean(run.project, MAX_PROJECT)}/{run.run_type}:{name}"


def is_child_label(label: str) -> bool:
    head, _, rest = label.rpartition("/")[2].partition(":")
    return bool(rest) and head in RUN_TYPES


def judged_by_bridge(state: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Series the bridge judges itself (its run series: latency, error, cost, tokens) and the
    error sources of its runs (run names), for the coordinator to leave alone."""
    bridges = {a for a, rec in (state.get("agents") or {}).items()
               if ((rec.get("reg") or {}).get("kind")) == "langsmith_bridge"}
    series, sources = set(), set()
    for name in state.get("metrics") or {}:
        agent, _, rest = name.partition("/")
        label, _, metric = rest.rpartition("/")
        if agent in bridges and "/" in label and (metric in METRIC_UNITS
                                                  or metric.startswith(FEEDBACK_PREFIX)):
            series.add(name)
            run = label.split("/", 1)[1]
            head, sep, tail = run.partition(":")
            sources.add(tail if sep and head in RUN_TYPES else run)
    return series, sources


@dataclass
class Report:
    """What one step (or a whole sync) did."""

    read: int = 0
    mirrored: int = 0
    skipped: int = 0
    quarantined: int = 0
    in_progress: int = 0
    abandoned: int = 0
    filtered: int = 0
    errored: int = 0
    feedback: int = 0
    polls: int = 0
    more: bool = False
    reasons: list[str] = field(default_factory=list)

    COUNTS = ("read", "mirrored", "skipped", "quarantined", "in_progress", "abandoned",
              "filtered", "errored", "feedback")

    def as_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.COUNTS}, "more": self.more,
                "reasons": self.reasons[:5]}

    def add(self, other: dict[str, Any]) -> None:
        for k in self.COUNTS:
            setattr(self, k, getattr(self, k) + int(other.get(k, 0)))
        self.more = bool(other.get("more", False))
        for reason in other.get("reasons") or []:
            if len(self.reasons) < 5:
                self.reasons.append(reason)


class _Series:
    __slots__ = ("base_cost", "base_err", "base_lat", "base_n", "base_tok", "cur_cost",
                 "cur_err", "cur_lat", "cur_n", "cur_tok", "errors", "feedback", "label", "name",
                 "names", "project", "root", "slow", "source")

    def __init__(self, label: str, run: TraceRun, names: dict[str, str]) -> None:
        self.label = label
        self.project = clean(run.project, MAX_PROJECT)
        self.name = run.name
        self.root = run.is_root
        self.source = clean(run.name, 200)
        self.names = names
        self.cur_lat = sketch.Accumulator()
        self.base_lat = sketch.Accumulator()
        self.cur_n = self.cur_err = self.base_n = self.base_err = 0
        self.cur_cost = [0.0, 0]
        self.base_cost = [0.0, 0]
        self.cur_tok = [0.0, 0]
        self.base_tok = [0.0, 0]
        self.slow: list[tuple[float, str, str | None]] = []  # min-heap of the slowest runs
        self.errors: list[tuple[str, str | None]] = []
        self.feedback: dict[str, list[float]] = {}  # series -> [cur sum, n, base sum, n]


class Mirror:
    """Emits one step's runs into its ``AgentContext`` and evaluates the bridge's insights."""

    def __init__(self, ctx: AgentContext, settings: Any, state: dict[str, Any] | None,
                 slowest: dict[str, str] | None = None) -> None:
        self.ctx = ctx
        self.agent = ctx.agent_id
        self.s = settings
        self.now = ctx.now
        self.state = state or {}
        self.rules = config_of(self.state).rules  # the thresholds, as the coordinator's
        self.metrics: dict[str, Any] = self.state.get("metrics") or {}
        self.known_patterns = set(self.state.get("error_patterns") or {})
        self.slowest = dict(slowest or {})
        self.base_start, self.cur_start, self.window_end = rules.windows(self.now, self.rules)
        self.series: dict[tuple[str, str, str, bool], _Series] = {}
        self.patterns: dict[str, dict[str, Any]] = {}
        self.child_types = frozenset(settings.child_run_types)
        self.report = Report()

    # -- emitting -------------------------------------------------------------------------
    def _series(self, run: TraceRun) -> _Series:
        key = (run.project, run.name, run.run_type, run.is_root)
        found = self.series.get(key)
        if found is not None:
            return found
        label = series_label(run)
        names = {}
        for metric, unit in METRIC_UNITS.items():
            checked = PerformanceMetric.checked(source_agent=self.agent,
                                                name=f"{label}/{metric}", value=0.0, unit=unit)
            names[metric] = checked.series
        found = self.series[key] = _Series(label, run, names)
        return found

    def wanted(self, run: TraceRun) -> bool:
        return run.is_root or run.run_type in self.child_types

    def add(self, run: TraceRun) -> None:
        """Mirror one finished run (validated by ``records.parse_run``)."""
        if not self.wanted(run):
            self.report.filtered += 1
            return
        ser = self._series(run)
        names = ser.names
        emit = self.ctx.emit
        ts = run.end
        assert ts is not None, "only finished runs are mirrored"
        latency = run.latency_ms
        failed = run.error is not None
        emit((KIND_METRIC, {"s": names["latency_ms"], "v": latency, "t": ts, "u": "ms"}))
        emit((KIND_METRIC, {"s": names["error"], "v": 1.0 if failed else 0.0, "t": ts}))
        if run.prompt_tokens is not None:
            emit((KIND_METRIC, {"s": names["prompt_tokens"], "v": run.prompt_tokens, "t": ts,
                                "u": "tokens"}))
        if run.completion_tokens is not None:
            emit((KIND_METRIC, {"s": names["completion_tokens"], "v": run.completion_tokens,
                                "t": ts, "u": "tokens"}))
        if run.total_tokens is not None:
            emit((KIND_METRIC, {"s": names["total_tokens"], "v": run.total_tokens, "t": ts,
                                "u": "tokens"}))
        if run.cost is not None:
            emit((KIND_METRIC, {"s": names["cost_usd"], "v": run.cost, "t": ts, "u": "USD"}))
        if run.first_token_s is not None:
            emit((KIND_METRIC, {"s": names["first_token_ms"], "v": run.first_token_s * 1000.0,
                                "t": ts, "u": "ms"}))
        self.report.mirrored += 1
        if ts >= self.cur_start:
            ser.cur_lat.add(latency)
            ser.cur_n += 1
            if run.cost is not None:
                ser.cur_cost[0] += run.cost
                ser.cur_cost[1] += 1
            if run.total_tokens is not None:
                ser.cur_tok[0] += run.total_tokens
                ser.cur_tok[1] += 1
            if len(ser.slow) < self.s.max_examples:
                heapq.heappush(ser.slow, (latency, run.id, run.url))
            elif latency > ser.slow[0][0]:
                heapq.heapreplace(ser.slow, (latency, run.id, run.url))
            if failed:
                ser.cur_err += 1
                if len(ser.errors) < self.s.max_examples:
                    ser.errors.append((run.id, run.url))
        elif ts >= self.base_start:
            ser.base_lat.add(latency)
            ser.base_n += 1
            ser.base_err += failed
            if run.cost is not None:
                ser.base_cost[0] += run.cost
                ser.base_cost[1] += 1
            if run.total_tokens is not None:
                ser.base_tok[0] += run.total_tokens
                ser.base_tok[1] += 1
        if failed:
            self.report.errored += 1
            self._error(run, ser)

    def add_feedback(self, score: FeedbackScore) -> None:
        """Mirror one feedback score as an observation of its run's series."""
        if not self.wanted(score.run):
            self.report.filtered += 1
            return
        ser = self._series(score.run)
        name = ser.names.get(FEEDBACK_PREFIX + score.key)
        if name is None:
            name = ser.names[FEEDBACK_PREFIX + score.key] = PerformanceMetric.checked(
                source_agent=self.agent, name=f"{ser.label}/{FEEDBACK_PREFIX}{score.key}",
                value=0.0, unit=None).series
        self.ctx.emit((KIND_METRIC, {"s": name, "v": score.score, "t": score.ts}))
        self.report.feedback += 1
        sums = ser.feedback.setdefault(name, [0.0, 0, 0.0, 0])
        if score.ts >= self.cur_start:
            sums[0] += score.score
            sums[1] += 1
        elif score.ts >= self.base_start:
            sums[2] += score.score
            sums[3] += 1

    def _error(self, run: TraceRun, ser: _Series) -> None:
        error_type, message = split_error(run.error or "")
        try:
            event = events.error(error_type, message, ser.source, now=run.end)
        except InvalidInput:
            event = events.error("RunError", message[:1000] or "run failed", ser.source,
                                 now=run.end)
        self.ctx.emit(event)
        pid = event[1]["id"]
        pat = self.patterns.get(pid)
        if pat is None:
            pat = self.patterns[pid] = {"error_type": event[1]["type"],
                                        "normalized": event[1]["norm"], "count": 0,
                                        "project": ser.project, "run_name": run.name,
                                        "examples": []}
        pat["count"] += 1
        if len(pat["examples"]) < self.s.max_examples:
            pat["examples"].append(_example(run.id, run.url))

    # -- insights (decided by nodes.rules) ---------------------------------------------------
    def _state_agg(self, series: str, start: int, end: int) -> sketch.Agg | None:
        return span_agg(self.state, series, start, end)

    def _both(self, series: str, acc: sketch.Accumulator, start: int, end: int
              ) -> sketch.Agg | None:
        state = self._state_agg(series, start, end)
        mine = acc.freeze() if acc.count else None
        if state is None or mine is None:
            return state or mine
        return sketch.merge(state, mine)

    def _sum_count(self, series: str, extra: list | tuple, start: int, end: int
                   ) -> tuple[float, int]:
        agg = self._state_agg(series, start, end)
        total, n = (agg[sketch.SUM], agg[sketch.COUNT]) if agg else (0.0, 0)
        return total + extra[0], n + int(extra[1])

    def insights(self) -> list[tuple[str, dict[str, Any], str, str]]:
        found: list[rules.Finding | None] = []
        r = self.rules
        cur, base, end = self.cur_start, self.base_start, self.window_end
        for ser in self.series.values():
            common = {"project": ser.project, "run_name": ser.name}
            for name, (cs, cn, bs, bn) in ser.feedback.items():
                if not cn:
                    continue
                sc, nc = self._sum_count(name, (cs, cn), cur, end)
                sb, nb = self._sum_count(name, (bs, bn), base, cur)
                found.append(rules.feedback_drop_finding(
                    name, sc, nc, sb, nb, r, label=f"{ser.label} {name.rsplit('/', 1)[1]}",
                    evidence=common))
            if not ser.cur_n:
                continue
            slow = [_example(rid, url) for _, rid, url in sorted(ser.slow, reverse=True)]
            lat = ser.names["latency_ms"]
            found.append(rules.latency_finding(
                lat, self._both(lat, ser.cur_lat, cur, end),
                self._both(lat, ser.base_lat, base, cur), r, label=ser.label, unit="ms",
                evidence={**common, "examples": slow}))
            err = ser.names["error"]
            ce, cn = self._sum_count(err, (ser.cur_err, ser.cur_n), cur, end)
            be, bn = self._sum_count(err, (ser.base_err, ser.base_n), base, cur)
            found.append(rules.error_rate_finding(
                err, ce, cn, be, bn, r, label=ser.label,
                evidence={**common, "examples": [_example(i, u) for i, u in ser.errors]}))
            for kind, metric, mine_c, mine_b, unit in (
                    ("cost_spike", "cost_usd", ser.cur_cost, ser.base_cost, "USD"),
                    ("token_spike", "total_tokens", ser.cur_tok, ser.base_tok, "tokens")):
                name = ser.names[metric]
                sc, nc = self._sum_count(name, mine_c, cur, end)
                sb, nb = self._sum_count(name, mine_b, base, cur)
                found.append(rules.per_run_spike_finding(
                    kind, name, unit, sc, nc, sb, nb, r, label=ser.label,
                    evidence={**common, "examples": slow}))
        out = [(f.insight_type, f.content, f.priority, f.key) for f in found if f is not None]
        new = [(pid, p) for pid, p in self.patterns.items() if pid not in self.known_patterns
               and rules.judged(f"{self.agent}/{p['project']}/", r)]
        for pid, p in new[:MAX_NEW_PATTERN_INSIGHTS]:
            out.append(("new_failure_mode", {
                "pattern_id": pid, "error_type": p["error_type"], "normalized": p["normalized"],
                "project": p["project"], "run_name": p["run_name"], "count": p["count"],
                "examples": p["examples"],
                "summary": f"new failure in {p['project']}/{p['run_name']}: {p['error_type']}: "
                           f"{p['normalized'][:200]}"}, "medium", f"new_failure_mode:{pid}"))
        out.extend(self._slowest_nodes())
        return out

    def _slowest_nodes(self) -> list[tuple[str, dict[str, Any], str, str]]:
        """Per project, the child run (node, tool, LLM call) with the highest p95 latency."""
        out = []
        prefix = f"{self.agent}/"
        projects = {ser.project for ser in self.series.values() if not ser.root and ser.cur_n
                    and rules.judged(f"{prefix}{ser.project}/", self.rules)}
        for project in sorted(projects):
            labels: dict[str, sketch.Agg] = {}
            head = f"{prefix}{project}/"
            for series in self.metrics:
                if series.startswith(head) and series.endswith("/latency_ms"):
                    label = series[len(prefix):-len("/latency_ms")]
                    if is_child_label(label):
                        agg = self._state_agg(series, self.cur_start, self.window_end)
                        if agg:
                            labels[label] = agg
            for ser in self.series.values():
                if ser.project == project and not ser.root and ser.cur_lat.count:
                    mine = ser.cur_lat.freeze()
                    labels[ser.label] = sketch.merge(labels[ser.label], mine) \
                        if ser.label in labels else mine
            ranked = sorted(((sketch.quantile(a, 0.95) or 0.0, label, a)
                             for label, a in labels.items()
                             if a[sketch.COUNT] >= self.rules.min_node_samples), reverse=True)
            if not ranked:
                continue
            p95, label, agg = ranked[0]
            node = label.split("/", 1)[1]
            if self.slowest.get(project) == node:
                continue
            self.slowest[project] = node
            examples = [_example(rid, url) for ser in self.series.values()
                        if ser.label == label for _, rid, url in sorted(ser.slow, reverse=True)]
            out.append(("slowest_node", {
                "project": project, "node": node, "p95_ms": round(p95, 3),
                "mean_ms": round(sketch.mean(agg) or 0.0, 3), "count": agg[sketch.COUNT],
                "window_s": self.rules.window_s,
                "runner_up": [{"node": lbl.split("/", 1)[1], "p95_ms": round(p, 3)}
                              for p, lbl, _ in ranked[1:3]],
                "examples": examples[: self.s.max_examples],
                "summary": f"{project}: slowest step is {node} (p95 {p95:.0f} ms)"}, "low",
                f"slowest_node:{project}"))
        return out


def _example(run_id: str, url: str | None) -> dict[str, str]:
    return {"run_id": run_id, "url": url} if url else {"run_id": run_id}
