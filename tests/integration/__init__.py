"""Multi-process integration tests (SQLite file shared by several OS processes)."""
