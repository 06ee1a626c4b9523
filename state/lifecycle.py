"""The insight lifecycle, like an issue tracker's: open -> acknowledged -> resolved, regressed
when an acknowledged or resolved insight fires again, muted (by insight or by type) for a time.

What is stored (``state.fold`` writes it, ``state.reducers.merge_insight`` merges it):

- ``status``: a last-writer-wins register ``{"s", "at", "by", "stamp"}`` set by an action
  (acknowledge, resolve, reopen) or by :func:`settle` when the insight regressed;
- ``mute``: a register ``{"until", "at", "by", "stamp"}`` (unmute sets ``until`` to its time);
- ``history``: the newest ``reducers.MAX_HISTORY`` state changes, who and when;
- type mutes and "last looked" markers live in the ``triage`` channel (``mute_type:<type>``,
  ``seen:<viewer>``), last writer wins.

What an insight *is* right now is derived here, from those and the clock, so every reader (the
API, ``bga status``, the dashboard, the coordinator) says the same. An acknowledged or resolved
insight whose ``last_seen`` is after its status change is ``regressed`` at once, even before
:func:`settle` records it in the history.
"""

from __future__ import annotations

from typing import Any

from state import reducers

# Lifecycle status (what was decided) and the state shown (status, or "muted" while muted).
STATUSES: tuple[str, ...] = ("open", "regressed", "acknowledged", "resolved")
STATES: tuple[str, ...] = (*STATUSES, "muted")
ACTIVE: frozenset[str] = frozenset({"open", "regressed"})  # needs attention, counts, alerts
# Action -> the status it sets (mute / unmute set the mute register instead).
ACTIONS: dict[str, str | None] = {"acknowledge": "acknowledged", "resolve": "resolved",
                                  "reopen": "open", "mute": None, "unmute": None}
MAX_MUTE_S = 366 * 86_400.0
MUTE_TYPE = "mute_type:"
SEEN = "seen:"


def type_mutes(state: dict[str, Any]) -> dict[str, float]:
    """Insight type -> muted until (unix time), as stored (expired ones included)."""
    out = {}
    for key, rec in (state.get("triage") or {}).items():
        if key.startswith(MUTE_TYPE):
            out[key[len(MUTE_TYPE):]] = float((rec.get("value") or {}).get("until") or 0.0)
    return out


def type_mute_records(state: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """Type mutes in force now: type, until, who and when."""
    out = []
    for key, rec in sorted((state.get("triage") or {}).items()):
        value = rec.get("value") or {}
        if key.startswith(MUTE_TYPE) and float(value.get("until") or 0) > now:
            out.append({"insight_type": key[len(MUTE_TYPE):], "until": value["until"],
                        "by": value.get("by"), "at": value.get("at")})
    return out


def seen_at(state: dict[str, Any], viewer: str) -> float | None:
    """When ``viewer`` last marked the insights as seen (None: never)."""
    rec = (state.get("triage") or {}).get(f"{SEEN}{viewer}") or {}
    at = (rec.get("value") or {}).get("at")
    return None if at is None else float(at)


def status_register(rec: dict[str, Any]) -> dict[str, Any] | None:
    return reducers.insight_status(rec)


def _regressed(rec: dict[str, Any], status: dict[str, Any] | None) -> bool:
    return status is not None and status["s"] in ("acknowledged", "resolved") \
        and (rec.get("last_seen") or 0) > status["at"]


def view(rec: dict[str, Any], now: float, mutes: dict[str, float]) -> dict[str, Any]:
    """One insight's lifecycle now: ``status``, ``state`` (status, or ``muted``), ``since`` (when
    it entered its status), ``by``, ``muted_until`` and whether it is ``active`` (open or
    regressed, not muted: counts as open and alerts)."""
    status = status_register(rec)
    body = rec.get("body") or {}
    if status is None:
        name, since, by = "open", rec.get("first_seen"), body.get("source_agent")
    elif _regressed(rec, status):
        name, since, by = "regressed", rec.get("last_seen"), body.get("source_agent")
    else:
        name, since, by = status["s"], status["at"], status.get("by")
    mute = rec.get("mute") or {}
    until = max(float(mute.get("until") or 0.0), mutes.get(body.get("insight_type", ""), 0.0))
    muted = until > now
    return {"status": name, "state": "muted" if muted else name, "since": since, "by": by,
            "muted_until": until if muted else None,
            "active": name in ACTIVE and not muted}


def is_active(rec: dict[str, Any], now: float, mutes: dict[str, float]) -> bool:
    """Open or regressed and not muted: what counts as open and what alerts."""
    return rec.get("body") is not None and view(rec, now, mutes)["active"]


def settle(insights: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Record regressions: an acknowledged or resolved insight that fired again after it gets
    the status ``regressed`` (at its last occurrence, by the producer that fired it) and a
    history entry. Pure and idempotent; deterministic stamps, so the fold and the coordinator
    may both apply it. A person's later action (stamped later) still wins."""
    out: dict[str, dict[str, Any]] | None = None
    for iid, rec in insights.items():
        status = status_register(rec)
        if rec.get("body") is None or status is None or not _regressed(rec, status):
            continue
        at = rec["last_seen"]
        by = rec["body"]["source_agent"]
        register = {"s": "regressed", "at": at, "by": by, "stamp": [at, 0, 0]}
        entry = {"action": "regressed", "at": at, "by": by,
                 "note": f"fired again after it was {status['s']}", "stamp": [at, 0, 0]}
        if out is None:
            out = dict(insights)
        out[iid] = reducers.merge_insight(rec, {"status": register, "history": [entry]})
    return insights if out is None else out
