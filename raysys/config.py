"""One typed config for the whole system, loaded from YAML and validated once.

Every section is a pydantic model that forbids unknown keys, so a typo is an error that names
the file and the field path (``configs/x.yaml: data.source.path: field required``).
"""

from __future__ import annotations

import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from raysys.errors import ConfigError
from raysys.secrets import remember_env

DEFAULT_CONFIG_PATH = "raysys.yaml"
CONFIG_ENV_VAR = "RAYSYS_CONFIG"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- project, storage


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _storage_name(value: str) -> str:
    """A name that becomes a directory under the storage root: no '/', '..', spaces."""
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name: use letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit (it names a directory under storage.root)")
    return value


StorageName = Annotated[str, AfterValidator(_storage_name)]


class ProjectConfig(Section):
    name: StorageName = "raysys"
    description: str = ""
    intended_use: str = Field(
        "Not stated: set project.intended_use to say who uses the model, for what decisions, on "
        "which population, and where it must not be used.",
        description="The intended use, as the model card states it (`raysys models card`).")


class StorageConfig(Section):
    root: str = Field("./.raysys", description="Local path or any pyarrow.fs URI (s3://, gs://).")
    shared: bool = Field(
        False, description="The local path in storage.root is a mount every node of the Ray cluster sees (NFS, "
                           "a shared disk). Without it raysys refuses a local root on a cluster of several nodes.")


class RegistryConfig(Section):
    db_path: str | None = Field(
        None, description="Local SQLite file of the model registry's metadata. Default: "
                          "models/registry.db under storage.root, which must then be on a local disk "
                          "(not NFS/SMB, not an object store).")


def _ip_address(value: str) -> str:
    """An IP address literal (127.0.0.1, 0.0.0.0, a node's address)."""
    import ipaddress

    ipaddress.ip_address(value)
    return value


class RayConfig(Section):
    address: str | None = Field(None, description="None or 'local' starts a local Ray; 'auto' joins one.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (default: all).")
    host: Annotated[str, AfterValidator(_ip_address)] = Field(
        "127.0.0.1",
        description="Where a Ray that raysys starts listens (node IP, GCS, dashboard, agents, HAProxy's stats and "
                    "metrics ports): 127.0.0.1 keeps it to this machine; the node's IP or 0.0.0.0 opens it to the "
                    "network (e.g. for worker nodes to join a head `serve up` started). A cluster raysys joins "
                    "keeps its own.")
    serve_mode: Literal["high_throughput", "proxy"] = Field(
        "high_throughput",
        description="Ray Serve's data plane on a Ray that raysys starts: 'high_throughput' (HAProxy ingress and "
                    "throughput-optimized replicas, Ray >= 2.55) or 'proxy' (Serve's Python proxy actor). A cluster "
                    "raysys joins keeps its own (cluster/ sets it on its nodes).")
    serve_drain_s: float = Field(
        5.0, ge=0, description="high_throughput mode: how long Serve keeps a removed replica open so HAProxy stops "
                               "sending to it (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S; Ray's default 30 s is "
                               "for external load balancers, HAProxy here is on the same node). `serve down` and "
                               "every scale-down wait this long.")


# --------------------------------------------------------------------------- data sources


class FileSource(Section):
    path: str = Field(description="A file, a directory or a glob.")


class CsvSource(FileSource):
    kind: Literal["csv"]
    delimiter: str = Field(",", min_length=1, max_length=1)


class ParquetSource(FileSource):
    kind: Literal["parquet"]


class JsonLinesSource(FileSource):
    kind: Literal["jsonl"]


class SqlSource(Section):
    kind: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL, e.g. sqlite:///shop.db or postgresql://u:p@h/db.")
    query: str | None = None
    table: str | None = None
    connect_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _query_or_table(self) -> SqlSource:
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of 'query' or 'table'")
        return self


class Pagination(Section):
    style: Literal["none", "page", "cursor", "next_link"] = "none"
    page_param: str = "page"
    size_param: str = "per_page"
    page_size: int = Field(100, ge=1)
    first_page: int = 1
    cursor_param: str = "cursor"
    cursor_field: str = "next_cursor"
    next_field: str = "next"
    max_pages: int | None = Field(None, ge=1)


class HttpSource(Section):
    kind: Literal["http"]
    url: str
    records_field: str | None = Field(
        "data", description="Key of the record list in each JSON page; null if the page is a list."
    )
    params: dict[str, str | int | float] = {}
    headers: dict[str, str] = {}
    pagination: Pagination = Pagination()
    timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, ge=0)


class SklearnSource(Section):
    kind: Literal["sklearn"]
    dataset: Literal["breast_cancer", "wine", "digits", "diabetes"]


class DriftConfig(Section):
    start_row: int | None = Field(None, ge=0, description="First drifted row; null = no drift.")
    covariate: float = Field(0.0, ge=0, description="Strength of the shift in feature distributions.")
    concept: float = Field(0.0, ge=0, description="Strength of the change in how the label depends on features.")
    label: float = Field(0.0, ge=-1, le=1, description="Shift of the positive rate (prior shift).")
    quality: float = Field(0.0, ge=0, le=1, description="Fraction of rows with data-quality faults.")


class SyntheticSource(Section):
    kind: Literal["synthetic"]
    rows: int = Field(100_000, ge=1)
    seed: int = 0
    offset: int = Field(0, ge=0, description="Index of the first row: continue a stream past earlier rows.")
    start_time: datetime = datetime(2026, 1, 1)
    rows_per_day: int = Field(10_000, ge=1)
    drift: DriftConfig = DriftConfig()


SourceConfig = Annotated[
    CsvSource | ParquetSource | JsonLinesSource | SqlSource | HttpSource | SklearnSource | SyntheticSource,
    Field(discriminator="kind"),
]

# --------------------------------------------------------------------------- data expectations

ColumnType = Literal["int", "float", "bool", "string", "category", "timestamp"]


class ColumnSpec(Section):
    type: ColumnType
    required: bool = Field(True, description="Column must exist and every row must have a value.")
    min: float | None = None
    max: float | None = None
    allowed: list[str | int] | None = None
    max_null_rate: float | None = Field(None, ge=0, le=1)
    unique: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float", "timestamp"):
            raise ValueError(f"min/max need a numeric or timestamp column, not {self.type}")
        return self


class SchemaConfig(Section):
    columns: dict[str, ColumnSpec] = Field(
        default_factory=dict, description="Expected columns; empty = take the source's columns as they are."
    )
    extra_columns: Literal["error", "drop"] = "error"


class SplitConfig(Section):
    kind: Literal["random", "stratified", "time"] = "random"
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.2, ge=0, lt=1)
    seed: int = 0
    column: str | None = Field(None, description="Stratify column (default: the label) or time column.")
    key: list[str] | None = Field(None, description="Columns identifying a row (default: all columns).")

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError(f"val + test must be below 1, got {self.val + self.test:g}")
        return self


class DataConfig(Section):
    name: StorageName
    source: SourceConfig
    schema_: SchemaConfig = Field(default_factory=SchemaConfig, alias="schema")
    label: str | None = None
    task: Literal["binary", "multiclass", "regression"] | None = None
    split: SplitConfig = SplitConfig()
    batch_rows: int = Field(100_000, ge=1, description="Rows per batch in the ingest pipeline.")

    @model_validator(mode="after")
    def _label_and_task(self) -> DataConfig:
        if (self.label is None) != (self.task is None):
            raise ValueError("'label' and 'task' go together: set both or neither")
        cols = self.schema_.columns
        if self.label and cols and self.label not in cols:
            raise ValueError(f"label '{self.label}' is not among schema.columns")
        if self.split.kind == "time" and not self.split.column:
            raise ValueError("split.kind 'time' needs split.column (the time column)")
        if self.split.kind == "stratified" and not (self.split.column or self.label):
            raise ValueError("split.kind 'stratified' needs split.column or data.label")
        return self


# --------------------------------------------------------------------------- features


class NumericFeature(Section):
    impute: Literal["mean", "median", "constant", "none"] = "median"
    fill_value: float = 0.0
    scale: Literal["standard", "minmax", "none"] = "standard"


class CategoricalFeature(Section):
    encode: Literal["onehot", "ordinal"] = "onehot"
    max_categories: int = Field(50, ge=1, description="Rarer categories fold into '__other__'.")


class DerivedFeature(Section):
    name: str
    expr: str = Field(description="Arithmetic over numeric columns, e.g. 'spend / (tenure + 1)': + - * / // % **, "
                                  "comparisons, and/or/not, numbers, numpy functions (log1p, sqrt, minimum, "
                                  "clip, where, ...; raysys.data.expressions) and ts.dt.hour etc.; no method "
                                  "calls or other attributes.")


class FeaturesConfig(Section):
    auto: bool = Field(True, description="Columns not listed get defaults by type.")
    exclude: list[str] = Field(default_factory=list, description="Columns never used as features.")
    derived: list[DerivedFeature] = Field(default_factory=list)
    numeric: dict[str, NumericFeature] = Field(default_factory=dict)
    categorical: dict[str, CategoricalFeature] = Field(default_factory=dict)


# --------------------------------------------------------------------------- later layers


class ModelConfig(Section):
    """Which model and its shape; ``type`` names an entry of the model registry."""

    type: str = Field("mlp", description="A registered model type (raysys.modeling.models).")
    hidden: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    embedding_dim: int = Field(8, ge=1, description="Size of embeddings for ordinal-encoded categoricals.")

    @model_validator(mode="after")
    def _positive_layers(self) -> ModelConfig:
        if any(width < 1 for width in self.hidden):
            raise ValueError(f"hidden layer sizes must be positive, got {self.hidden}")
        return self


class EarlyStopping(Section):
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(Section):
    """How to train: optimisation, schedule, seed, and the Ray Train scaling."""

    epochs: int = Field(20, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps in all.")
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["none", "cosine", "step"] = "cosine"
    early_stopping: EarlyStopping | None = EarlyStopping()
    seed: int = 0
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = Field(default_factory=lambda: {"CPU": 1.0})
    max_failures: int = Field(0, ge=0, description="Restarts from the last checkpoint after a worker dies.")
    poll_s: float = Field(
        0.25, gt=0, le=60,
        description="How often Ray Train's controller polls its workers. Each epoch's report waits for a poll, "
                    "so an epoch takes at least this long (Ray's own default is 2 s). An operator's "
                    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S wins.")
    promote_first: bool = Field(
        True, description="A trained model becomes the champion when the model has none yet and it beats the "
                          "trivial baseline on the test split (lower log loss for classifiers, lower RMSE for "
                          "regression).")


class ParamSpace(Section):
    type: Literal["uniform", "loguniform", "choice", "randint"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ParamSpace:
        if self.type == "choice":
            if not self.values:
                raise ValueError("'choice' needs a non-empty 'values' list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"'{self.type}' needs low < high")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError("'loguniform' needs low > 0")
        return self


class TuneConfig(Section):
    """The search: a space over ``model.*`` and ``train.*`` keys, ASHA, Optuna."""

    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(2, ge=1)
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    search: Literal["optuna", "random"] = "optuna"
    grace_period: int = Field(2, ge=1)
    reduction_factor: int = Field(2, ge=2)
    space: dict[str, ParamSpace] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _space_keys(self) -> TuneConfig:
        for key in self.space:
            section, _, name = key.partition(".")
            fields = {"model": ModelConfig.model_fields, "train": TrainConfig.model_fields}.get(section)
            if fields is None or name not in fields:
                raise ValueError(f"space key '{key}' must name a model.* or train.* setting")
            if section == "train" and name in ("num_workers", "use_gpu", "resources_per_worker", "max_failures"):
                raise ValueError(f"space key '{key}' is Ray Train scaling, not a hyperparameter: set it in "
                                 f"'train' (every trial and the final run use train.num_workers workers)")
        return self


class EvaluateConfig(Section):
    folds: int = Field(5, ge=2)
    slices: list[str] = Field(default_factory=list, description="Columns to report metrics by.")


class TrackingConfig(Section):
    wandb: bool = True
    project: str | None = Field(None, description="W&B project (default: project.name).")
    entity: str | None = None


class AutoscalingConfig(Section):
    """Ray Serve ``autoscaling_config`` of the model server."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    upscale_delay_s: float = Field(3.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class BatchingConfig(Section):
    """Dynamic batching (``@serve.batch``): requests arriving together are predicted as one batch."""

    enabled: bool = True
    max_batch_size: int = Field(32, ge=1)
    wait_timeout_s: float = Field(
        0.0, ge=0,
        description="How long a batch waits for more requests. 0: take the requests already queued; under load "
                    "they pile up while the previous batch computes, so batches grow with the load and a lone "
                    "request never waits (benchmarks/README.md).")


class PredictionLogConfig(Section):
    """Every prediction written to ``logs/predictions/`` off the request path, micro-batched."""

    enabled: bool = True
    flush_rows: int = Field(1000, ge=1)
    flush_s: float = Field(2.0, gt=0)
    max_pending_rows: int = Field(
        100_000, ge=1, description="Rows buffered per replica; more (storage slow or down) are spilled to "
                                   "local disk at once.")
    spill_dir: str | None = Field(
        None, description="Local directory for batches storage refused, delivered first by later flushes "
                          "(default: <tmp>/raysys-spill-<user>).")


class ServeConfig(Section):
    """Online serving on Ray Serve: where, how big, how batched, and the canary defaults."""

    app_name: StorageName | None = Field(None, description="Serve application name (default: project.name).")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    route_prefix: str = "/"
    model: str = Field("champion", description="Version or alias that `serve up` serves when nothing is deployed.")
    num_cpus: float = Field(0.25, gt=0, description="CPUs per replica (fractional so several fit).")
    max_ongoing_requests: int = Field(64, ge=1)
    max_records: int = Field(1000, ge=1, description="Records per request; more is a 413.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Request body size; more is a 413, unread.")
    max_string_chars: int = Field(1024, ge=1, description="Characters per string value; more is a 422.")
    input_checks: Literal["flag", "reject", "off"] = Field(
        "flag", description="Online inputs against data.schema.columns (min, max, allowed, required): "
                            "flag marks the record in the prediction log, reject answers 422.")
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    batching: BatchingConfig = BatchingConfig()
    canary_percent: float = Field(10.0, ge=0, le=100)
    sticky_canary: bool = Field(False, description="Route by the request key, so one key sees one version.")
    max_shadow_in_flight: int = Field(
        64, ge=1, description="Shadow copies in flight per replica; more are dropped and counted.")
    fault_report_s: float = Field(
        5.0, gt=0, description="How often each replica writes its request, failure and drop counts to "
                               "serving/<app>/replicas/ (read by `serve status`).")
    prediction_log: PredictionLogConfig = PredictionLogConfig()
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="API keys on the HTTP API (`raysys keys`): auto = required once an unrevoked key "
                            "exists; on = always (no key: only /healthz and /v2/health/* answer); off = never "
                            "(`serve up` warns).")
    auth_refresh_s: float = Field(2.0, gt=0, description="Replicas see created and revoked keys within this time.")
    dashboard: bool = Field(True, description="The web dashboard at GET / (its data and admin actions need an "
                                              "admin key when auth is on).")

    @model_validator(mode="before")
    @classmethod
    def _auth_yaml_words(cls, data: Any) -> Any:
        """YAML reads a bare ``on``/``off`` as true/false: take them as the words meant."""
        if isinstance(data, dict) and isinstance(data.get("auth"), bool):
            return {**data, "auth": "on" if data["auth"] else "off"}
        return data


class WindowConfig(Section):
    """How the monitor cuts the prediction log into windows: by row count, by time, or both."""

    rows: int | None = Field(500, ge=1, description="Close a window after this many logged records.")
    seconds: float | None = Field(None, gt=0, description="Close a window this many seconds after it opened.")
    min_rows: int = Field(50, ge=1, description="A window with fewer records is not tested for drift.")

    @model_validator(mode="after")
    def _bounded(self) -> WindowConfig:
        if self.rows is None and self.seconds is None:
            raise ValueError("set rows or seconds (or both): a window must close")
        if self.rows is not None and self.min_rows > self.rows:
            raise ValueError(f"min_rows ({self.min_rows}) is above rows ({self.rows}): no window "
                             "would ever be tested")
        return self


class DriftDetectionConfig(Section):
    """Which detectors compare each window with the champion's training data."""

    backend: Literal["alibi", "scipy"] = Field(
        "alibi", description="alibi: alibi-detect 0.13 (Business Source License: non-production use "
                             "only); scipy: KS, chi-square and PSI on scipy/numpy, for production.")
    p_value: float = Field(0.05, gt=0, lt=1, description="Significance of each drift test (after correction).")
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    numeric_test: Literal["ks", "cvm"] = Field("ks", description="cvm needs the alibi backend.")
    multivariate: Literal["none", "tabular", "mmd"] = Field(
        "tabular", description="A test over the whole row after the model's preprocessing "
                               "(tabular: per-feature tests combined; mmd: alibi's MMD, torch backend).")
    online: bool = Field(False, description="Also run an online detector over the stream (alibi backend).")
    online_ert: int = Field(500, ge=10, description="Online detector: expected run time (records) without drift.")
    online_window: int = Field(50, ge=2, description="Online detector: window size (records).")
    psi_threshold: float = Field(0.2, gt=0, description="scipy backend: PSI above this counts as drift too.")
    predictions: bool = Field(True, description="Test the distribution of the model's outputs.")
    labels: bool = Field(True, description="Test the distribution of labels from feedback.")


class AlertRulesConfig(Section):
    """When the monitor opens an incident; null turns a rule off."""

    drift: bool = Field(True, description="Any feature, the row or the predictions drifted.")
    quality_floor: float | None = Field(None, description="Live primary metric below this value.")
    quality_margin: float | None = Field(
        0.05, ge=0, description="Live primary metric worse than the champion's offline test metric by more.")
    min_labelled: int = Field(50, ge=1, description="Labelled records a window needs before quality rules apply.")
    latency_p99_ms: float | None = Field(1000.0, gt=0)
    error_rate: float | None = Field(0.01, ge=0, le=1, description="Failed requests / requests per version.")
    no_traffic_s: float | None = Field(None, gt=0, description="No request for this long.")
    input_violations: float | None = Field(
        0.05, ge=0, le=1, description="Share of records that broke a data.schema rule (serve.input_checks).")
    resolve_after: int = Field(3, ge=1, description="Clean windows after which an incident resolves.")


class WebhookConfig(Section):
    url: str = Field(pattern=r"^https?://\S+$", description="Receives each incident change as HTTP POST JSON.")
    timeout_s: float = Field(5.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with each POST (masked in logs).")
    max_backoff_s: float = Field(300.0, gt=0, description="Longest wait between retries of an undelivered alert.")


class AlertSinksConfig(Section):
    log: bool = True
    webhook: WebhookConfig | None = None
    wandb: bool = Field(False, description="wandb.alert on the monitor's W&B run.")


class AlertsConfig(Section):
    rules: AlertRulesConfig = AlertRulesConfig()
    sinks: AlertSinksConfig = AlertSinksConfig()


class RetrainConfig(Section):
    """When the monitor retrains, on what, and whether the result goes out on its own."""

    triggers: list[Literal["drift", "quality", "schedule"]] = Field(
        default_factory=lambda: ["drift", "quality"], description="`raysys retrain` always works.")
    schedule_s: float | None = Field(None, gt=0, description="Retrain this often (with the schedule trigger).")
    cooldown_s: float = Field(600.0, ge=0, description="No automatic retrain sooner after the last one.")
    max_per_day: int = Field(4, ge=0)
    auto_release: bool = Field(True, description="Send a better retrained model out as a canary on its own.")
    recent_rows: int = Field(5000, ge=1, description="Newest labelled production records added to the data.")
    reference_rows: int = Field(
        1000, ge=0, description="Rows of the champion's training split kept beside them (a sample): few, so "
                                "that a changed concept outweighs the old one.")
    min_labelled: int = Field(200, ge=1, description="Labelled production records a retrain needs.")
    label_wait_s: float = Field(
        1800.0, ge=0, description="A retrain for an incident trains on records newer than the incident: it "
                                  "waits this long for min_labelled of them, then gives up (recorded).")
    holdout: float = Field(0.3, gt=0, lt=1, description="Share of them held out to compare with the champion.")
    min_gain: float = Field(0.0, description="Held-out primary metric the candidate must beat the champion by.")

    @model_validator(mode="after")
    def _schedule(self) -> RetrainConfig:
        if "schedule" in self.triggers and self.schedule_s is None:
            raise ValueError("the schedule trigger needs schedule_s")
        return self


class ReleaseConfig(Section):
    """How a canary is judged: on labelled canary traffic, with a stated significance."""

    min_labelled: int = Field(200, ge=10, description="Labelled records per version before a decision.")
    significance: float = Field(0.05, gt=0, lt=1, description="Of the test that challenger != champion.")
    settle_labelled: int = Field(
        1000, ge=10, description="Labelled records per version after which a comparison that is still "
                                 "not significant is settled: promoted if the challenger is at least as good.")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="A canary failing more often is rolled back.")
    timeout_s: float = Field(3600.0, gt=0, description="Roll back a canary still undecided after this long.")

    @model_validator(mode="after")
    def _settle_after_deciding(self) -> ReleaseConfig:
        if self.settle_labelled < self.min_labelled:
            raise ValueError(f"settle_labelled ({self.settle_labelled}) is below min_labelled ({self.min_labelled})")
        return self


class MonitorConfig(Section):
    """The closed loop: windows, drift, live quality, alerts, retraining and release."""

    enabled: bool = Field(True, description="`raysys serve up` starts the monitor.")
    interval_s: float = Field(5.0, gt=0, description="How often the monitor reads new log files.")
    window: WindowConfig = WindowConfig()
    reference_rows: int = Field(5000, ge=100, description="Rows of the champion's training split to compare with.")
    feedback_ttl_s: float = Field(86400.0, gt=0, description="Keep labels of unknown requests this long.")
    drift: DriftDetectionConfig = DriftDetectionConfig()
    alerts: AlertsConfig = AlertsConfig()
    retrain: RetrainConfig = RetrainConfig()
    release: ReleaseConfig = ReleaseConfig()
    wandb: bool = Field(True, description="Log each window to W&B (tracking.project, group 'production').")

    @model_validator(mode="after")
    def _consistent(self) -> MonitorConfig:
        if self.drift.backend == "scipy" and (self.drift.numeric_test == "cvm" or self.drift.online
                                              or self.drift.multivariate == "mmd"):
            raise ValueError("drift.numeric_test cvm, drift.online and drift.multivariate mmd need "
                             "drift.backend alibi")
        if self.window.min_rows > self.reference_rows:
            raise ValueError(f"window.min_rows ({self.window.min_rows}) is above reference_rows "
                             f"({self.reference_rows})")
        return self


# --------------------------------------------------------------------------- decisions, explanations


class DecisionRule(Section):
    """One business rule: a score within ``[min, max)`` → ``action`` (a bound left out is open)."""

    action: str = Field(description="The label this rule answers, e.g. approve, review, block.")
    min: float | None = Field(None, description="Matches a score >= min.", allow_inf_nan=False)
    max: float | None = Field(None, description="Matches a score < max.", allow_inf_nan=False)

    @model_validator(mode="after")
    def _bounded(self) -> DecisionRule:
        if not self.action.strip():
            raise ValueError("action: empty; name what the rule decides")
        if self.min is None and self.max is None:
            raise ValueError("set min or max (or both): a rule without a threshold always matches; "
                             "use decisions.default for that")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min:g}) must be below max ({self.max:g})")
        return self


Rules = Annotated[list[DecisionRule], Field(min_length=1)]


class DecisionSegments(Section):
    """Per-segment rules: records whose ``column`` holds one of ``values`` use that value's rules."""

    column: str = Field(description="A model input column (compared as categorical features are: as text).")
    values: dict[str, Rules] = Field(min_length=1, description="Column value → its rules (instead of decisions.rules).")

    @model_validator(mode="before")
    @classmethod
    def _text_keys(cls, data: Any) -> Any:
        """YAML reads ``1:`` or ``true:`` as non-strings; a segment value is compared as text."""
        if isinstance(data, dict) and isinstance(data.get("values"), dict):
            data = {**data, "values": {(str(int(k)) if isinstance(k, float) and k.is_integer() else str(k)): v
                                       for k, v in data["values"].items()}}
        return data


class DecisionsConfig(Section):
    """Business rules applied after the model: the first rule whose thresholds hold decides."""

    class_: str | int | None = Field(
        None, alias="class", description="Classifiers: the class whose probability the rules compare (default for "
                                         "binary: the positive class, the last in sorted order); regression rules "
                                         "compare the predicted value.")
    rules: list[DecisionRule] = Field(default_factory=list, description="In order; the first match wins.")
    default: str = Field(description="The action when no rule matches.")
    segment: DecisionSegments | None = None

    @model_validator(mode="after")
    def _reachable(self) -> DecisionsConfig:
        if not self.default.strip():
            raise ValueError("default: empty; name the action when no rule matches")
        for where, rules in self.rule_sets().items():
            for index in range(1, len(rules)):
                if _covered(rules[index], rules[:index]):
                    raise ValueError(f"{where}[{index}]: never matches, the rules before it take every score it "
                                     f"would (order rules from the most specific; the first match wins)")
        return self

    def rule_sets(self) -> dict[str, list[DecisionRule]]:
        """Every rule list by its field path: ``rules`` and ``segment.values.<value>``."""
        sets = {"rules": self.rules}
        if self.segment is not None:
            sets.update({f"segment.values.{value}": rules for value, rules in self.segment.values.items()})
        return sets


def _covered(rule: DecisionRule, earlier: list[DecisionRule]) -> bool:
    """Whether the scores ``[min, max)`` of ``rule`` all fall into the earlier rules' ranges."""
    reach = -math.inf if rule.min is None else rule.min
    end = math.inf if rule.max is None else rule.max
    for low, high in sorted((-math.inf if r.min is None else r.min, math.inf if r.max is None else r.max)
                            for r in earlier):
        if low > reach:
            return False
        reach = max(reach, high)
        if reach >= end:
            return True
    return False


def check_decisions(decisions: DecisionsConfig, data: DataConfig) -> None:
    """The rules against the data section: probability ranges, the class, the segment column."""
    columns = data.schema_.columns
    if data.task in ("binary", "multiclass"):
        for where, rules in decisions.rule_sets().items():
            for index, rule in enumerate(rules):
                for bound in ("min", "max"):
                    value = getattr(rule, bound)
                    if value is not None and not 0 <= value <= 1:
                        raise ValueError(f"{where}[{index}].{bound}: {value:g} is not a probability (0..1); "
                                         f"the rules of a {data.task} model compare class probabilities")
        label = columns.get(data.label) if data.label else None
        if decisions.class_ is None and data.task == "multiclass":
            raise ValueError("class: required for a multiclass model (whose probability the rules compare)")
        if decisions.class_ is not None and label is not None and label.allowed is not None \
                and str(decisions.class_) not in {str(v) for v in label.allowed}:
            raise ValueError(f"class: {decisions.class_!r} is not a class of {data.label} "
                             f"({', '.join(map(str, label.allowed))})")
    elif decisions.class_ is not None:
        raise ValueError(f"class: a {data.task or 'model without data.task'} has no classes; "
                         "its rules compare the predicted value")
    segment = decisions.segment
    if segment is not None:
        if segment.column == data.label:
            raise ValueError(f"segment.column: '{segment.column}' is the label, unknown when predicting")
        if columns and segment.column not in columns:
            raise ValueError(f"segment.column: no column '{segment.column}' in data.schema.columns")


class ExplainConfig(Section):
    """Per-prediction attributions (``"explain": true`` on /v1/predict) and global importance."""

    method: Literal["integrated_gradients", "gradient_x_input"] = Field(
        "integrated_gradients", description="Attribution of the output to the preprocessed features, summed back "
                                            "to raw input columns.")
    steps: int = Field(32, ge=1, le=1024, description="Integrated gradients: points on the path from the baseline.")
    permutation_repeats: int = Field(
        3, ge=0, description="Shuffles per input column for the permutation importance computed at training "
                             "(registered as importance.json); 0 turns it off.")
    importance_rows: int = Field(5000, ge=10, description="Rows of the validation split it uses (at most).")


# --------------------------------------------------------------------------- the whole system


class SystemConfig(Section):
    project: ProjectConfig = ProjectConfig()
    storage: StorageConfig = StorageConfig()
    registry: RegistryConfig = RegistryConfig()
    ray: RayConfig = RayConfig()
    data: DataConfig
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    decisions: DecisionsConfig | None = Field(None, description="Business rules applied after the model.")
    explain: ExplainConfig = ExplainConfig()

    @field_validator("decisions")
    @classmethod
    def _decisions_fit_the_data(cls, decisions: DecisionsConfig | None, info: ValidationInfo) -> DecisionsConfig | None:
        if decisions is not None and "data" in info.data:  # data is validated first (declared before)
            check_decisions(decisions, info.data["data"])
        return decisions


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, source: str = "config", path: tuple = ()) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in the string values of parsed YAML.

    Expanding after parsing means comments are never expanded, an environment value can hold
    any character, and an unset variable is reported with its field path.
    """
    if isinstance(value, dict):
        return {key: expand_env(item, source, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, source, (*path, index)) for index, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            remember_env(name, os.environ[name])  # scrubbed from what leaves the process
            return os.environ[name]
        if default is not None:
            return default
        field = ".".join(map(str, path)) or "(top level)"
        raise ConfigError(f"{source}: {field}: environment variable {name} is not set (used as ${{{name}}})")

    return _ENV_PATTERN.sub(substitute, value)


def format_validation_error(error: ValidationError, source: str) -> str:
    """Render pydantic errors as one line: ``file: a.b.c: message; ...``."""
    parts = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        if loc[:2] == ["data", "source"] and len(loc) > 2 and loc[2] in _SOURCE_KINDS:
            del loc[2]  # the discriminated union's tag: data.source.csv.path -> data.source.path
        message = item["msg"]
        if item["type"] == "missing":
            message = "field required"
        elif item["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        field = ".".join(loc) or "(top level)"
        parts.append(f"{field}: {message[:1].lower()}{message[1:]}")
    return f"{source}: " + "; ".join(parts)


_SOURCE_KINDS = {"csv", "parquet", "jsonl", "sql", "http", "sklearn", "synthetic"}


def parse_config(data: Any, source: str = "config") -> SystemConfig:
    """Validate a mapping into a SystemConfig, raising ConfigError with field paths."""
    if data is None:
        raise ConfigError(f"{source}: the config is empty (it needs at least a 'data' section)")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return SystemConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_config(path: str | os.PathLike | None = None) -> SystemConfig:
    """Load a config from YAML: ``path``, else ``$RAYSYS_CONFIG``, else ``./raysys.yaml``."""
    path = Path(path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML{_yaml_location(error, text)}: {_yaml_problem(error)}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    return parse_config(expand_env(data, source=str(path)), source=str(path))


def _yaml_location(error: yaml.YAMLError, text: str) -> str:
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return f" at line {mark.line + 1}"
    if isinstance(error, yaml.reader.ReaderError):  # a bad character: no mark, a 2-line str()
        return f" at line {text.count(chr(10), 0, error.position) + 1}"
    return ""


def _yaml_problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return " ".join(str(problem).split())
