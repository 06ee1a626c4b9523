"""Every importer test needs SQL tables (profiles, import jobs): none runs on Redis."""

from __future__ import annotations

import pytest

REASON = "the profile importer keeps its profiles in SQL tables, which Redis does not have"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/importer/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.needs_sql(REASON))
