"""Config sections for operating a published model: scoring and drift monitoring (flows.score, flows.monitor),
active learning (flows.select_for_labeling) and where alerts go (the retrain's gate alerts too). They are saved
with each version, so these flows run with the settings the production version was published with;
`--set monitor.k=v` (labeling.k, alerts.k) overrides them for one run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ml.config.section import Section

# Columns of the reference frame and the prediction log that flows.monitor tests for drift (ml.monitoring.reference).
IMAGE_PROPERTIES = ("brightness", "contrast", "blur", "width", "height", "red", "green", "blue")
PREDICTION_COLUMNS = ("pred", "confidence", "margin", "entropy")
NUM_STATTESTS = ("ks", "wasserstein", "psi", "kl_div", "jensenshannon", "hellinger", "anderson", "cramer_von_mises",
                 "mannw", "ed", "es", "t_test", "empirical_mmd")  # fmt: skip
# chi2_homogeneity (ml.monitoring.drift) is two-sample; Evidently's chisquare takes the reference shares as exact
CAT_STATTESTS = ("chi2_homogeneity", "chisquare", "z", "fisher_exact", "g_test", "TVD", "psi", "kl_div",
                 "jensenshannon", "hellinger")  # fmt: skip
# the tests among these whose score is a p-value (drifted when p < threshold); the rest are distances (>= threshold)
P_VALUE_STATTESTS = ("ks", "anderson", "cramer_von_mises", "mannw", "es", "t_test", "empirical_mmd",
                     "chi2_homogeneity", "chisquare", "z", "fisher_exact", "g_test")  # fmt: skip


def parse_window(text: str) -> timedelta:
    """'7d' -> 7 days, '12h' -> 12 hours (the MonitorConfig.window syntax)."""
    return timedelta(hours=int(text[:-1])) if text.endswith("h") else timedelta(days=int(text[:-1]))


class AlertConfig(Section):
    """Where gate failures, regressions and crashes go besides the Prefect event (which is always emitted)."""

    # Slack-compatible incoming webhook; default $VISIONFLOW_ALERT_WEBHOOK. A secret: never saved with a version.
    webhook_url: str | None = Field(None, exclude=True, pattern=r"^https?://")
    webhook_attempts: int = Field(3, ge=1, le=10)  # retried with backoff 0.5 s, 1 s, 2 s ...
    webhook_timeout_s: float = Field(5.0, gt=0)


class ColumnTest(Section):
    """Evidently's drift method and threshold for one column (None: the monitor's defaults)."""

    method: str | None = None  # one of NUM_STATTESTS (CAT_STATTESTS for `pred`)
    threshold: float | None = Field(None, gt=0)


class MonitorConfig(Section):
    """Scoring (flows.score) and drift monitoring (flows.monitor) of the production model. Saved with each
    version; the monitor uses the production version's section, `--set monitor.k=v` overrides it.

    A column drifts when Evidently's test says so: p-value < threshold for tests (ks, chisquare, ...), distance
    >= threshold for distances (wasserstein: use ~0.1). A group (image properties, prediction, confidence) drifts
    when `drift_share` of its columns drift; embeddings drift when a classifier tells window from reference
    better than chance (p < embedding_threshold). Any drifted group is a drift alert; with `correction` the p-value
    thresholds are shared among the groups (Bonferroni, which for "any group drifted" is also Holm's decision)."""

    embedding_dims: int = Field(16, ge=2, le=64)  # PCA components of the pooled features kept per image
    batch_size: int = Field(256, ge=1)  # images per onnxruntime call when scoring
    workers: int = Field(4, ge=1)  # threads decoding images while the model runs
    chunk_rows: int = Field(10_000, ge=1)  # rows per prediction-log parquet file
    # large sources: score in shards of this many files, one task each (retried alone); unset: one streaming task
    shard_files: int | None = Field(None, ge=1)
    # where the shards run: unset = threads of the flow's process; "local" = a Dask cluster of worker processes on
    # this machine; tcp://host:8786 = a Dask scheduler (its workers need this repo and requirements.lock)
    dask_address: str | None = Field(None, pattern=r"^(local|(tcp|tls)://.+)$")
    window: str = Field("7d", pattern=r"^[1-9][0-9]*(h|d)$")  # log rows this recent are compared (h: hours, d: days)
    min_rows: int = Field(30, ge=2)  # fewer readable rows in the window: no verdict
    max_rows: int = Field(50_000, ge=100)  # larger windows are sampled down (seeded) before testing
    stattest: str = "ks"  # numerical columns
    cat_stattest: str = "chi2_homogeneity"  # the predicted class
    threshold: float = Field(0.01, gt=0)
    columns: dict[str, ColumnTest] = {}  # per-column overrides, keys from IMAGE_PROPERTIES + PREDICTION_COLUMNS
    drift_share: float = Field(0.5, gt=0, le=1)
    embedding_threshold: float = Field(0.01, gt=0, lt=1)
    # bonferroni: each p-value threshold is divided by the number of groups judged (4 with embeddings), so a night
    # with no drift alerts with probability <= the threshold, not ~4x it; distance thresholds are left as set
    correction: Literal["bonferroni", "none"] = "bonferroni"
    metric_tolerance: float = Field(0.05, ge=0, le=1)  # live accuracy/macro_f1 may be this far below validation
    min_labels: int = Field(20, ge=1)  # labelled rows needed before live metrics are judged
    retrain_on_drift: bool = False  # start the retrain deployment on drift (once per window and day)
    retrain_deployment: str | None = None  # "flow/deployment"; default "retrain/<model>"

    @model_validator(mode="after")
    def _known_tests(self) -> MonitorConfig:
        if self.dask_address and not self.shard_files:
            raise ValueError("dask_address spreads shards over a Dask cluster: set shard_files too")
        if self.stattest not in NUM_STATTESTS or self.cat_stattest not in CAT_STATTESTS:
            raise ValueError(f"stattest must be in {list(NUM_STATTESTS)}, cat_stattest in {list(CAT_STATTESTS)}")
        known = IMAGE_PROPERTIES + PREDICTION_COLUMNS
        for column, test in self.columns.items():
            allowed = CAT_STATTESTS if column == "pred" else NUM_STATTESTS
            if column not in known:
                raise ValueError(f"columns: unknown column {column!r}; known: {list(known)}")
            if test.method is not None and test.method not in allowed:
                raise ValueError(f"columns.{column}.method {test.method!r} not in {list(allowed)}")
        return self


class LabelStudioConfig(Section):
    """The Label Studio server a batch is pushed to and annotations are pulled from (none: tasks.json only). The API
    key is never a setting: $LABEL_STUDIO_API_KEY, else the Prefect Secret block `secret_block`."""

    url: str | None = Field(None, pattern=r"^https?://")
    secret_block: str = "label-studio-api-key"
    project: str | None = None  # the project's title; default: the model's name
    # several annotations of one task: the majority label (a segmenter: pixels most annotators marked; ties are
    # left out and listed), or refuse: any disagreement is left out and listed
    resolve: Literal["majority", "refuse"] = "majority"
    timeout_s: float = Field(60, gt=0)


class LabelingConfig(Section):
    """Active learning (flows.select_for_labeling): which pool images go to Label Studio next. Saved with each
    version; the flow uses the production version's section, `--set labeling.k=v` overrides it.

    Scores are uncertainties, higher = more worth a label: least_confidence (1 - top probability), margin
    (1 - (top1 - top2)), entropy (nats); for segmenters the mean over pixels, or uncertain_share (the share of
    pixels whose foreground probability lies in uncertain_band)."""

    strategy: Literal["uncertainty", "diversity", "balanced", "random"] = "diversity"
    measure: Literal["entropy", "least_confidence", "margin", "uncertain_share"] = "entropy"
    budget: int = Field(100, ge=1)  # images per batch (--budget overrides)
    candidates: float = Field(10.0, ge=1)  # diversity: k-center greedy among the candidates x budget most uncertain
    uncertain_band: tuple[float, float] = (0.25, 0.75)  # segment: foreground probabilities counted as uncertain
    seed: int = 0  # the random strategy's draw
    url_expiry_s: int = Field(7 * 24 * 3600, ge=60, le=7 * 24 * 3600)  # pre-signed S3 URLs (SigV4: 7 days at most)
    # local pools: data.image = /data/local-files/?d=<path below this root>; default: the pool's parent folder
    document_root: Path | None = None
    label_studio: LabelStudioConfig = Field(default_factory=LabelStudioConfig)
    image_name: str = "image"  # names in the Label Studio labeling config (label_config.xml is written beside)
    choices_name: str = "choice"
    brush_name: str = "mask"
    thumbnails: int = Field(48, ge=0)  # selected images shown in the Prefect artifact

    @field_validator("uncertain_band")
    @classmethod
    def _band(cls, band: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= band[0] < band[1] <= 1:
            raise ValueError(f"uncertain_band {band} must be (low, high) with 0 <= low < high <= 1")
        return band
