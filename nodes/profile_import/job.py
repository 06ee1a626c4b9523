"""What an import job run is given and what it reports per batch (shared by graph and agent)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nodes.profile_import.models import DEFAULT_REGION
from nodes.profile_import.readers import Limits

DEFAULT_BATCH_SIZE = 5_000


@dataclass(frozen=True)
class ImportOptions:
    """How a job reads and validates (not stored: each run may tune them, e.g. batch_size)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    region: str = DEFAULT_REGION
    limits: Limits = field(default_factory=Limits)
    test_email_domains: bool = False  # accept e-mail addresses at .test domains


@dataclass(frozen=True)
class BatchInfo:
    """What one committed batch did (progress bars, agent metrics)."""

    job_id: str
    rows: int
    counts: dict[str, int]
    rejected: int
    reasons: dict[str, int]
    latency_ms: float
    offset: int
    size: int
    read_total: int
