"""What retention (flows.gc, nightly and on demand) deletes, and what it always keeps (ml.registry.retention)."""

from __future__ import annotations

from pydantic import Field

from ml.config.section import Section


class RetentionConfig(Section):
    """Ages are measured from the last write (a run folder's newest file, an object's modification time; a
    version's from its id). Versions any alias points at are never deleted, whatever these say."""

    # a published run's folder goes this long after its publish (the flow still reads its report meanwhile)
    published_runs_hours: float = Field(1.0, ge=0)
    # unpublished run folders (failed, interrupted: resumable) untouched this long go; younger ones are kept
    failed_runs_days: float = Field(7.0, ge=0)
    keep_history: int = Field(3, ge=0)  # production's previous versions kept, newest first (rollback targets)
    unpromoted_days: float = Field(14.0, ge=0)  # any other version younger than this is kept (to promote by hand)
    # files of a version whose publish never finished (no metadata.json, never listed) go after this
    incomplete_hours: float = Field(24.0, gt=0)
    logs_days: float = Field(90.0, gt=0)  # prediction-log days and retrain markers older than this go
    reports_days: float = Field(90.0, ge=0)  # monitor reports (reports/monitor/<model>/<run>/) older than this go
    # ... and beyond the newest `reports_keep`, whatever their age (an hourly monitor writes ~4 MB of HTML a run)
    reports_keep: int = Field(100, ge=1)
    cache_versions: int = Field(1, ge=0)  # downloaded versions kept in the production cache besides production's
