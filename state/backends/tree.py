"""Checkpoints of a linear thread stored as versioned entries: a tick writes what changed.

LangGraph's SQLite saver stores every channel whole in every checkpoint (its PostgreSQL saver
one blob per channel version, so one changed series rewrites the whole ``metrics`` channel):
at 500 series an idle tick rewrote 13.8 MB. A linear thread (``state.backends.history``) has
one chain of checkpoints whose ids grow with time, so each piece of its state can be stored
once, with the interval of checkpoints it is valid for: ``born <= checkpoint < died``.

**Layout.** A checkpoint's channel values are a tree of *entries*, each addressed by its
``path`` (the msgpack of its list of keys; the channel values themselves are ``()``). A dict
whose keys are all ``str`` or ``int`` is *split* when it has more than ``SPLIT_MIN`` items or a
split child: its entry holds its keys in order (type ``NODE``), each child an entry of its own
(a series' 1-minute bucket is the entry ``("metrics", series, "tiers", "1m", start)``).
Everything else is a *leaf*, encoded whole with the saver's serde. The checkpoint row itself
holds the checkpoint without its channel values: on SQLite with type ``ROW_PREFIX + <serde
type>`` (older code refuses such a row loudly instead of reading an empty state), on
PostgreSQL with ``channel_values`` ``{TREE_KEY: 1}`` (LangGraph's SQL walks that object).

**Writing** checkpoint ``n`` over its parent: the new values are walked against the parent's
tree (``Node``). The same Python object as before is unchanged with all it holds (the reducers
and ``state.compact`` return unchanged parts as the objects they were given: values are never
mutated), so an idle tick looks at the channels and the top of each split dict only; a new
leaf is encoded and compared with the old bytes. Entries that do not carry on are closed
(``died = n``), new ones inserted (``born = n``), in the checkpoint's own transaction: rows
written are proportional to what changed, not to the size of the state.

**Loading** checkpoint ``c`` reads the entries valid at ``c``. A process keeps the tree of the
newest checkpoint it wrote or loaded per thread (``EntryStore.latest``): loading that one
reads nothing, an older one decodes only the entries that differ from it (the others are the
same objects, shared: never mutate a loaded value).

**Pruning**: once the oldest kept root checkpoint is ``K``, an entry with ``died <= K`` is
valid for none of the kept ones; one indexed ``DELETE`` removes exactly those (cost
proportional to what died). Old-layout checkpoints (whole values in the row) load as before.

The SQL is written once (``state.backends.aiodb.Sql``: ``?`` placeholders) over the table
``bga_tree_entries`` (``state.backends.migrations``): a backend whose saver runs its
statements inside the checkpoint's transaction can store its linear threads this way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ormsgpack

from state.backends.aiodb import Sql

NODE = "bga-node"
ROW_PREFIX = "bga-tree:"  # SQLite: the row's type column
TREE_KEY = "__bga_tree__"  # PostgreSQL: the row's channel_values are {TREE_KEY: 1}
SPLIT_MIN = 16
TABLE = "bga_tree_entries"
_INT_RANGE = range(-(1 << 63), 1 << 64)  # what msgpack holds as an int


class EntriesMissing(RuntimeError):
    """A checkpoint's entries are not all there (pruned while it was being read, or a
    damaged database): names the checkpoint and the first missing path."""


@dataclass(slots=True)
class Node:
    """One entry of a loaded or written tree: the checkpoint it was born at, its value (for
    a split dict: the dict built from its children), and a leaf's serde type and bytes."""

    born: str
    obj: Any
    type: str
    data: bytes | None = None
    children: dict[Any, Node] | None = None


def pack_path(path: tuple[Any, ...]) -> bytes:
    return ormsgpack.packb(list(path))


def unpack_path(data: bytes) -> tuple[Any, ...]:
    return tuple(ormsgpack.unpackb(data))


def splits(value: Any) -> bool:
    """Whether ``value`` is stored as a node (see the module docstring)."""
    if type(value) is not dict or not value:
        return False
    for key in value:
        if type(key) is not str and not (type(key) is int and key in _INT_RANGE):
            return False
    return len(value) > SPLIT_MIN or any(splits(v) for v in value.values())


@dataclass
class Changes:
    """What writing one checkpoint does to the entries: rows to close, rows to insert."""

    born: str
    closed: list[tuple[bytes, str]] = field(default_factory=list)  # (path, born)
    added: list[tuple[bytes, str, bytes]] = field(default_factory=list)  # (path, type, value)

    @property
    def bytes_added(self) -> int:
        return sum(len(p) + len(v) for p, _, v in self.added)


class _Walk:
    def __init__(self, serde: Any, born: str) -> None:
        self.serde = serde
        self.changes = Changes(born)

    def close(self, node: Node, path: tuple[Any, ...]) -> None:
        self.changes.closed.append((pack_path(path), node.born))
        if node.children:
            for key, child in node.children.items():
                self.close(child, (*path, key))

    def walk(self, value: Any, old: Node | None, path: tuple[Any, ...]) -> Node:
        if old is not None and old.obj is value:
            return old
        born = self.changes.born
        if splits(value):
            old_children = old.children if old is not None else None
            if old is not None and old_children is None:
                self.close(old, path)  # it was a leaf
            children: dict[Any, Node] = {}
            for key, v in value.items():
                oc = old_children.get(key) if old_children else None
                children[key] = oc if oc is not None and oc.obj is v else \
                    self.walk(v, oc, (*path, key))
            if old is not None and old_children is not None:
                for key, oc in old_children.items():
                    if key not in children:
                        self.close(oc, (*path, key))
                if list(old_children) == list(children):  # same keys, same order
                    return Node(old.born, value, NODE, None, children)
                self.changes.closed.append((pack_path(path), old.born))
            self.changes.added.append((pack_path(path), NODE, ormsgpack.packb(list(value))))
            return Node(born, value, NODE, None, children)
        type_, data = self.serde.dumps_typed(value)
        if old is not None:
            if old.children is None and old.type == type_ and old.data == data:
                return Node(old.born, value, type_, data)
            self.close(old, path)
        self.changes.added.append((pack_path(path), type_, data))
        return Node(born, value, type_, data)


def diff(serde: Any, values: Mapping[str, Any], base: Node | None, born: str
         ) -> tuple[Node, Changes]:
    """The tree of channel values ``values`` written as checkpoint ``born`` over ``base``
    (the open entries: the tree of the thread's newest checkpoint, None if it has none), and
    the entry rows that takes."""
    walk = _Walk(serde, born)
    root = walk.walk(dict(values), base, ())
    return root, walk.changes


def build(serde: Any, rows: Mapping[bytes, tuple[str, str, bytes]], reuse: Node | None,
          checkpoint_id: str, *, since_reuse: bool = False) -> Node:
    """The tree of the entry rows (path -> (born, type, value)) valid at one checkpoint,
    sharing what ``reuse`` (another tree of the thread) holds under the same path and born.

    ``since_reuse``: ``reuse`` is the tree of an older checkpoint of the thread and ``rows``
    only the entries born after it (and valid at this one). A path with no row then holds
    the entry it held in ``reuse``: an entry valid at both checkpoints (a path that went away
    changed its parent's key list, so its parent has a new row that no longer names it)."""

    # since_reuse: the paths with a new row at or below them, as a tree of their keys (a
    # child untouched since reuse is then found by its key, without building its path)
    touched: dict[Any, Any] | None = None
    if since_reuse:
        touched = {}
        for packed in rows:
            at = touched
            for key in unpack_path(packed):
                at = at.setdefault(key, {})

    def node(path: tuple[Any, ...], same: Node | None, below: dict[Any, Any] | None) -> Node:
        if since_reuse and same is not None and below is None:
            return same  # nothing at or below it changed since reuse: not walked
        row = rows.get(pack_path(path))
        if row is None and since_reuse and same is not None:
            if same.children is None:
                return same  # a leaf unchanged since reuse
            born, type_, keys = same.born, NODE, list(same.children)  # its children may not be
        elif row is None:
            raise EntriesMissing(f"checkpoint {checkpoint_id} has no entry {list(path)!r} "
                                 "(pruned while it was read, or a damaged database)")
        else:
            born, type_, raw = row
            data = bytes(raw)
            keys = ormsgpack.unpackb(data) if type_ == NODE else []
        if type_ == NODE:
            kids = same.children if same is not None and same.children is not None else None
            children: dict[Any, Node]
            if since_reuse and kids and not below and all(map(kids.__contains__, keys)):
                children = {k: kids[k] for k in keys}  # only its key list changed
            else:
                children = {}
                for k in keys:
                    kid = kids.get(k) if kids else None
                    sub = below.get(k) if below is not None else None
                    children[k] = kid if since_reuse and kid is not None and sub is None \
                        else node((*path, k), kid, sub)
            if same is not None and kids is not None and same.born == born \
                    and len(kids) == len(children) \
                    and all(kids.get(k) is c for k, c in children.items()):
                return same  # the whole subtree is the same: the same objects
            return Node(born, {k: c.obj for k, c in children.items()}, NODE, None, children)
        if same is not None and same.children is None and same.born == born:
            return same
        return Node(born, serde.loads_typed((type_, data)), type_, data)

    return node((), reuse, touched)


def count(node: Node) -> int:
    """Entries in a tree."""
    return 1 + sum(count(c) for c in (node.children or {}).values())


class EntryStore:
    """The entries of one saver's linear threads, over the statements of its transaction.

    ``latest`` keeps, per thread, the tree of the newest checkpoint this process wrote or
    loaded: a write over it reads nothing, a load of it neither."""

    def __init__(self, serde: Any) -> None:
        self.serde = serde
        self.latest: dict[str, tuple[str, Node]] = {}

    def remember(self, thread_id: str, checkpoint_id: str, root: Node) -> None:
        have = self.latest.get(thread_id)
        if have is None or have[0] <= checkpoint_id:
            self.latest[thread_id] = (checkpoint_id, root)

    def forget(self, thread_ids: Iterable[str]) -> None:
        for thread_id in thread_ids:
            self.latest.pop(str(thread_id), None)

    async def open_tree(self, sql: Sql, thread_id: str, parent: str | None) -> Node | None:
        """The tree of the open entries (``died`` NULL), which a write closes or carries on:
        the cached one when it is the tree of ``parent`` (the thread's newest checkpoint, as
        the compare-and-swap has just checked), else read."""
        have = self.latest.get(thread_id)
        if have is not None and parent is not None and have[0] == parent:
            return have[1]
        rows = await sql.all(f"SELECT path, born, type, value FROM {TABLE} "
                             "WHERE thread_id=? AND died IS NULL", (thread_id,))
        if not rows:
            return None
        return build(self.serde, {bytes(p): (b, t, v) for p, b, t, v in rows},
                     have[1] if have else None, f"after {parent}")

    async def write(self, sql: Sql, thread_id: str, changes: Changes) -> None:
        """Close and insert the rows of ``changes`` (inside the checkpoint's transaction)."""
        await sql.many(f"UPDATE {TABLE} SET died=? WHERE thread_id=? AND path=? AND born=?",
                       [(changes.born, thread_id, p, b) for p, b in changes.closed])
        await sql.many(f"INSERT INTO {TABLE} (thread_id, path, born, type, value) "
                       "VALUES (?, ?, ?, ?, ?)",
                       [(thread_id, p, changes.born, t, v) for p, t, v in changes.added])

    async def load(self, sql: Sql, thread_id: str, checkpoint_id: str) -> Node:
        """The tree of checkpoint ``checkpoint_id`` (EntriesMissing if its entries are not
        all there)."""
        have = self.latest.get(thread_id)
        if have is not None and have[0] == checkpoint_id:
            return have[1]
        if have is not None and have[0] < checkpoint_id:  # a newer one: what was born since
            # (the index on (thread_id, born) reads only those, not every open entry)
            rows = await sql.all(f"SELECT path, born, type, value FROM {TABLE} WHERE "
                                 "thread_id=? AND born>? AND born<=? AND (died IS NULL OR "
                                 "died>?)", (thread_id, have[0], checkpoint_id, checkpoint_id))
        else:
            rows = await sql.all(f"SELECT path, born, type, value FROM {TABLE} WHERE "
                                 "thread_id=? AND born<=? AND (died IS NULL OR died>?)",
                                 (thread_id, checkpoint_id, checkpoint_id))
        root = build(self.serde, {bytes(p): (b, t, v) for p, b, t, v in rows},
                     have[1] if have else None, checkpoint_id,
                     since_reuse=have is not None and have[0] < checkpoint_id)
        self.remember(thread_id, checkpoint_id, root)
        return root

    @staticmethod
    async def collect(sql: Sql, thread_id: str, oldest_kept: str | None,
                      tree_rows_left: bool) -> None:
        """Delete the entries no kept checkpoint of the thread uses: those that died at or
        before the oldest kept root checkpoint; all of them when no checkpoint kept is
        stored as entries."""
        if oldest_kept is None or not tree_rows_left:
            await sql.all(f"DELETE FROM {TABLE} WHERE thread_id=?", (thread_id,))
        else:
            await sql.all(f"DELETE FROM {TABLE} WHERE thread_id=? AND died<=?",
                          (thread_id, oldest_kept))

    @staticmethod
    async def delete_threads(sql: Sql, thread_ids: Sequence[str]) -> None:
        await sql.many(f"DELETE FROM {TABLE} WHERE thread_id=?", [(t,) for t in thread_ids])

    @staticmethod
    async def copy_thread(sql: Sql, source: str, target: str) -> None:
        await sql.all(f"INSERT INTO {TABLE} (thread_id, path, born, died, type, value) "
                      f"SELECT ?, path, born, died, type, value FROM {TABLE} "
                      "WHERE thread_id=?", (target, source))


def is_tree_row(type_: str | None) -> bool:
    return bool(type_) and str(type_).startswith(ROW_PREFIX)


class Unloaded(dict):
    """The channel values of a checkpoint row stored as entries, until the saver loads them
    (a dict, empty, so code that only looks at the checkpoint's other fields works)."""


class TreeSerde:
    """The saver's serde, able to read a checkpoint row stored as entries (its channel values
    come back ``Unloaded``, for the saver to fill in); everything else is the serde's own."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return self.inner.dumps_typed(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_, blob = data
        if is_tree_row(type_):
            checkpoint = self.inner.loads_typed((type_[len(ROW_PREFIX):], blob))
            checkpoint["channel_values"] = Unloaded()
            return checkpoint
        return self.inner.loads_typed(data)

    def dump_row(self, checkpoint: Mapping[str, Any]) -> tuple[str, bytes]:
        """A checkpoint row stored as entries: the checkpoint without its channel values."""
        type_, blob = self.inner.dumps_typed({**checkpoint, "channel_values": {}})
        return ROW_PREFIX + type_, blob
