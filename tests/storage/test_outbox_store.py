"""The alert outbox's semantics, the same on every backend (``SqlOutboxStore`` on SQLite,
``memory://`` and PostgreSQL, ``RedisOutboxStore`` on Redis): keys count once, orders break
ties by key, a message's members are fixed once, a try is recorded whole, a test message goes
straight to the history, and pruning forgets only finished messages and their alerts."""

from __future__ import annotations

from typing import Any

from state import SharedState
from state.outbox import OutboxStore


def alert(key: str, subject: str = "disk", channel: str = "hook", **extra: Any) -> dict[str, Any]:
    return {"key": key, "channel": channel, "subject": subject, "event": "firing",
            "summary": f"alert {key}", "priority": "high", **extra}


async def keys_waiting(store: OutboxStore, channel: str = "hook") -> list[str]:
    return [a["key"] for a in await store.unbatched(channel)]


async def test_enqueue_orders_and_the_newest_event(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        store = shared.backend.outbox()
        assert await store.enqueue([], 1.0) == 0
        assert await store.enqueue([alert("b"), alert("a"), alert("c", channel="chat")],
                                   1.5) == 3
        assert await store.enqueue([alert("a", summary="changed"), alert("d")], 2.0) == 1
        got = await store.unbatched("hook")
        assert [(a["key"], a["created_at"], a["summary"]) for a in got] == [
            ("a", 1.5, "alert a"), ("b", 1.5, "alert b"), ("d", 2.0, "alert d")]
        assert await keys_waiting(store, "chat") == ["c"]
        assert await keys_waiting(store, "nobody") == []
        assert (await store.last_event("hook", "disk") or {})["key"] == "d"
        await store.enqueue([alert("e", "cpu"), alert("f", "cpu")], 3.0)
        assert (await store.last_event("hook", "cpu") or {})["key"] == "f"  # tie: key desc
        assert await store.last_event("chat", "cpu") is None
        assert await store.counts() == {"waiting": 6}


async def test_members_are_fixed_once_and_tries_are_recorded(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        store = shared.backend.outbox()
        await store.enqueue([alert("a"), alert("b"), alert("c")], 1.0)
        await store.make_message("m1", "hook", ["a", "b"], 5.0)
        await store.make_message("m1", "hook", ["a", "b"], 6.0)  # a resumed sender: no change
        await store.make_message("m2", "hook", ["b", "c", "zz"], 7.0)  # b is taken already
        assert await keys_waiting(store) == []
        assert await store.due(4.0) == []
        due = await store.due(7.0)
        assert [(m["key"], m["created_at"], m["attempts"], [a["key"] for a in m["alerts"]])
                for m in due] == [("m1", 5.0, 0, ["a", "b"]), ("m2", 7.0, 0, ["c"])]
        await store.record("m1", now=8.0, ok=False, error="503", next_at=20.0)
        assert [m["key"] for m in await store.due(19.0)] == ["m2"]
        await store.record("m2", now=8.5, ok=False, error="refused", drop=True)
        await store.record("m1", now=20.0, ok=True)
        await store.record("nope", now=20.0, ok=True)  # unknown: changes nothing
        assert await store.due(1e9) == []
        assert await store.counts() == {"waiting": 0, "sent": 1, "dropped": 1}
        history = {m["key"]: m for m in await store.history()}
        assert set(history) == {"m1", "m2"}
        m1 = history["m1"]
        assert (m1["status"], m1["attempts"], m1["last_error"], m1["sent_at"], m1["alerts"],
                m1["last_try_at"]) == ("sent", 2, None, 20.0, 2, 20.0)
        assert m1["events"] == [
            {"key": k, "event": "firing", "subject": "disk", "insight_type": None,
             "priority": "high", "summary": f"alert {k}"} for k in ("a", "b")]
        m2 = history["m2"]
        assert (m2["status"], m2["attempts"], m2["last_error"], m2["sent_at"]) == (
            "dropped", 1, "refused", None)


async def test_a_test_message_goes_straight_to_the_history(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        store = shared.backend.outbox()
        await store.add_sent("t1", "chat", 3.0, ok=True, error=None, alert=alert("x", "test"))
        await store.add_sent("t2", "chat", 4.0, ok=False, error="403",
                             alert=alert("y", "test"))
        assert await keys_waiting(store, "chat") == []
        assert await store.due(1e9) == []
        assert await store.counts() == {"waiting": 0, "sent": 1, "dropped": 1}
        got = [(m["key"], m["channel"], m["status"], m["attempts"], m["last_error"],
                [e["key"] for e in m["events"]]) for m in await store.history()]
        assert got == [("t2", "chat", "dropped", 1, "403", ["y"]),
                       ("t1", "chat", "sent", 1, None, ["x"])]
        assert [m["key"] for m in await store.history(limit=1)] == ["t2"]


async def test_prune_forgets_only_finished_messages(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        store = shared.backend.outbox()
        await store.enqueue([alert(f"a{i}") for i in range(5)], 1.0)
        for i in range(5):
            await store.make_message(f"m{i}", "hook", [f"a{i}"], 10.0 + i)
        for i in (0, 2, 3):
            await store.record(f"m{i}", now=20.0, ok=True)
        await store.record("m1", now=20.0, ok=False, error="x", next_at=30.0)  # still pending
        await store.enqueue([alert("w")], 50.0)  # waiting: never pruned
        await store.prune(100.0, keep_s=88.5)  # older than 11.5: m0 (m1 is pending)
        assert sorted(m["key"] for m in await store.history()) == ["m1", "m2", "m3", "m4"]
        await store.prune(100.0, keep_s=1e6, keep_messages=2)  # beyond the newest two: m2
        assert sorted(m["key"] for m in await store.history()) == ["m1", "m3", "m4"]
        assert await store.counts() == {"waiting": 1, "pending": 2, "sent": 1}
        assert await keys_waiting(store) == ["w"]
        assert (await store.last_event("hook", "disk") or {})["key"] == "w"
        # a pruned alert's key is forgotten: the same key counts as new again
        assert await store.enqueue([alert("a0"), alert("a1")], 60.0) == 1
