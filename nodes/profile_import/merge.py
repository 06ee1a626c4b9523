"""The merge policy: what one more row about a known person changes.

Rows are applied in import order (files in the order they are imported, rows in file order),
one at a time, whether the earlier row came from the same batch, an earlier batch or an earlier
file, so the result does not depend on batch size or on where a job was interrupted:

1. No record with the row's identity: the row is **inserted**.
2. Otherwise each non-empty field of the row replaces the stored value (newer wins); empty
   fields never erase anything. ``extra`` is merged key by key the same way.
3. Exception: when both the row and the record carry the source's own ``updated_at`` and the
   row's is older, the row only fills fields that are still empty (an old export imported
   late cannot overwrite fresher data).
4. The outcome is **updated** if anything changed, else **unchanged**.
"""

from __future__ import annotations

from typing import Any

from nodes.profile_import.models import FIELDS, Profile

Record = dict[str, Any]  # FIELDS + source_updated_at + extra (a dict)
INSERTED, UPDATED, UNCHANGED = "inserted", "updated", "unchanged"


def new_record(profile: Profile) -> Record:
    record: Record = dict(profile.__dict__)  # the validated fields (pydantic keeps them there)
    record["source_updated_at"] = record.pop("updated_at")
    extra = record["extra"]
    if extra:
        record["extra"] = {k: v for k, v in extra.items() if v not in (None, "")}
    return record


def merge(current: Record | None, profile: Profile) -> tuple[Record, str]:
    """The record after applying ``profile``, and the row's outcome."""
    if current is None:
        return new_record(profile), INSERTED
    incoming_ts, stored_ts = profile.updated_at, current.get("source_updated_at")
    older = incoming_ts is not None and stored_ts is not None and incoming_ts < stored_ts
    merged = dict(current)
    changed = False
    incoming = profile.__dict__
    for f in FIELDS:
        value = incoming[f]
        if value is None or (older and merged.get(f) is not None) or merged.get(f) == value:
            continue
        merged[f] = value
        changed = True
    if profile.extra:
        extra = dict(current.get("extra") or {})
        for key, value in profile.extra.items():
            if value in (None, "") or (older and key in extra) or extra.get(key) == value:
                continue
            extra[key] = value
            changed = True
        merged["extra"] = extra
    if incoming_ts is not None and (stored_ts is None or incoming_ts > stored_ts):
        merged["source_updated_at"] = incoming_ts
        changed = True
    return merged, (UPDATED if changed else UNCHANGED)
