"""``bga import`` that SIGKILLs itself at an exact point of its N-th batch (for resume tests).

    python -m tests.importer.killer before_commit 3 import FILE --db URL ...

``before_commit``: inside the batch transaction, after every write, before COMMIT (the whole
batch must vanish); ``after_commit``: right after COMMIT, before the job graph writes its
checkpoint (the batch must count exactly once).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from nodes.profile_import.store import ProfileStore


def main() -> None:
    point, batch, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    assert point in ("before_commit", "after_commit")
    seen = [0]
    original = ProfileStore.__init__

    def killing_init(self: ProfileStore, *a: Any, **kw: Any) -> None:
        original(self, *a, **kw)

        def hook(info: dict[str, Any]) -> None:
            seen[0] += 1
            if seen[0] == batch:
                os.kill(os.getpid(), signal.SIGKILL)

        setattr(self, point, hook)

    ProfileStore.__init__ = killing_init  # type: ignore[method-assign]
    from graph.cli import app

    app(args, prog_name="bga")


if __name__ == "__main__":
    main()
