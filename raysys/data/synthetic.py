"""A synthetic, drifting "subscription churn" table: deterministic, chunked and fast.

Rows are made in fixed chunks of ``CHUNK_ROWS`` *global* row indices; chunk ``k`` draws from
``np.random.default_rng([seed, k])`` (split into one independent child stream per column, so a
drift that changes how one column is drawn never changes another). A row therefore depends only
on its global index, the seed and the drift config: any partitioning of a range, in any process,
gives identical rows, and the rows before ``drift.start_row`` are the same as without drift.

Drift applies to rows whose global index is at least ``drift.start_row``:

- ``covariate``: monthly_spend up, sessions_30d down, region mix towards 'south', plan mix
  towards 'basic'.
- ``concept``: the label's dependence on the features moves towards another rule (discount
  raises churn, tickets matter little, channel matters a lot); feature marginals do not move.
- ``label``: a logit offset, solved per chunk, that moves the positive rate by about ``label``.
- ``quality``: that fraction of drifted rows gets one fault each: a null in a feature column,
  an out-of-range value or an unknown category.

Nulls in int columns: when quality faults are configured (``quality > 0`` and a ``start_row``),
the int feature columns (age, tenure_months, support_tickets, sessions_30d) are pandas nullable
``Int64`` for the *whole* stream, so the dtypes depend only on the config and never on which
slice was read; otherwise they are plain ``int64``. Float columns use NaN and string columns
None for a null. ``customer_id``, ``event_time`` and ``churned`` are never faulty.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from raysys.config import ColumnSpec, DriftConfig, SyntheticSource
from raysys.errors import ConfigError

CHUNK_ROWS = 65_536
LABEL = "churned"

PLANS = ("basic", "standard", "premium")
REGIONS = ("north", "south", "east", "west")
CHANNELS = ("web", "app", "store", "partner")
INT_FEATURES = ("age", "tenure_months", "support_tickets", "sessions_30d")
FEATURES = (
    "age", "tenure_months", "monthly_spend", "support_tickets", "sessions_30d", "discount_pct",
    "plan", "region", "channel",
)

SYNTHETIC_COLUMNS: dict[str, ColumnSpec] = {
    "customer_id": ColumnSpec(type="int", unique=True),
    "event_time": ColumnSpec(type="timestamp"),
    "age": ColumnSpec(type="int", min=18, max=90),
    "tenure_months": ColumnSpec(type="int", min=0, max=120),
    "monthly_spend": ColumnSpec(type="float", min=0, max=1000),
    "support_tickets": ColumnSpec(type="int", min=0),
    "sessions_30d": ColumnSpec(type="int", min=0),
    "discount_pct": ColumnSpec(type="float", min=0, max=50),
    "plan": ColumnSpec(type="category", allowed=list(PLANS)),
    "region": ColumnSpec(type="category", allowed=list(REGIONS)),
    "channel": ColumnSpec(type="category", allowed=list(CHANNELS)),
    LABEL: ColumnSpec(type="int", allowed=[0, 1]),
}

_STREAMS = (
    "plan", "region", "channel", "age", "tenure", "spend", "discount", "tickets", "sessions",
    "label", "fault",
)
_PLAN_P = np.array([0.45, 0.35, 0.20])
_REGION_P = np.array([0.30, 0.20, 0.25, 0.25])
_CHANNEL_P = np.array([0.45, 0.30, 0.15, 0.10])
_SPEND_BY_PLAN = np.array([0.7, 1.0, 1.8])
_SESSIONS_BY_CHANNEL = np.array([12.0, 20.0, 6.0, 10.0])
_PLAN_OBJ = np.array(PLANS, dtype=object)
_REGION_OBJ = np.array(REGIONS, dtype=object)
_CHANNEL_OBJ = np.array(CHANNELS, dtype=object)

# Label rules: before drift ("base") and the rule concept drift moves towards ("new").
# The base rule is strong enough that a model is well above the majority-class baseline (a
# logistic regression on one-hot raw columns: ROC AUC ~0.88, accuracy ~0.83 vs 0.74); the new
# rule reverses much of it, so a pre-drift model falls below the baseline on post-drift rows.
_BASE = {"bias": 0.8, "tickets": 0.9, "sessions": -0.144, "tenure": -0.054, "spend": 1.62,
         "discount": -0.054, "age": -0.018, "plan": np.array([1.08, 0.0, -1.08]),
         "region": np.array([0.0, 0.36, -0.18, 0.0]), "channel": np.array([0.0, -0.36, 0.18, 0.54])}
_NEW = {"bias": -2.2, "tickets": 0.05, "sessions": -0.01, "tenure": 0.01, "spend": -0.5,
        "discount": 0.05, "age": 0.0, "plan": np.array([-0.5, 0.0, 0.8]),
        "region": np.array([0.0, 0.0, 0.0, 0.0]), "channel": np.array([-1.0, 1.2, -0.8, 0.6])}

_OUT_OF_RANGE = (("age", 999), ("age", -5), ("monthly_spend", None), ("tenure_months", -1),
                 ("discount_pct", 150.0))
_UNKNOWN = (("plan", "UNKNOWN"), ("plan", ""), ("region", "UNKNOWN"), ("region", ""),
            ("channel", "UNKNOWN"), ("channel", ""))


def generate_rows(spec: SyntheticSource, start: int, stop: int) -> pd.DataFrame:
    """Return the rows with local indices [start, stop) of the stream as one DataFrame."""
    if not 0 <= start <= stop <= spec.rows:
        raise ValueError(f"need 0 <= start <= stop <= rows ({spec.rows}), got [{start}, {stop})")
    pieces = list(iter_chunks(spec, start, stop))
    if not pieces:
        return _chunk(spec, (spec.offset + start) // CHUNK_ROWS).iloc[0:0].reset_index(drop=True)
    return pieces[0] if len(pieces) == 1 else pd.concat(pieces, ignore_index=True)


def iter_chunks(
    spec: SyntheticSource, start: int = 0, stop: int | None = None
) -> Iterator[pd.DataFrame]:
    """Yield the rows of generate_rows(spec, start, stop) in frames of at most CHUNK_ROWS rows."""
    stop = spec.rows if stop is None else stop
    if not 0 <= start <= stop <= spec.rows:
        raise ValueError(f"need 0 <= start <= stop <= rows ({spec.rows}), got [{start}, {stop})")
    first, last = spec.offset + start, spec.offset + stop
    for k in range(first // CHUNK_ROWS, -(-last // CHUNK_ROWS)):
        base = k * CHUNK_ROWS
        lo, hi = max(first, base) - base, min(last, base + CHUNK_ROWS) - base
        frame = _chunk(spec, k)
        yield frame if (lo, hi) == (0, CHUNK_ROWS) else frame.iloc[lo:hi].reset_index(drop=True)


def faults_enabled(drift: DriftConfig) -> bool:
    """Whether the config injects quality faults (then int features are nullable Int64)."""
    return drift.start_row is not None and drift.quality > 0


def _chunk(spec: SyntheticSource, k: int) -> pd.DataFrame:
    """Make the full chunk k: global rows [k * CHUNK_ROWS, (k + 1) * CHUNK_ROWS)."""
    if spec.seed < 0:
        raise ConfigError(f"synthetic source: seed must be >= 0, got {spec.seed}")
    n, drift = CHUNK_ROWS, spec.drift
    ids = np.arange(k * n, (k + 1) * n, dtype=np.int64)
    lo = n if drift.start_row is None else int(np.clip(drift.start_row - k * n, 0, n))
    children = np.random.default_rng([spec.seed, k]).spawn(len(_STREAMS))
    rng = dict(zip(_STREAMS, children))
    codes, cols = _features(rng, n, lo, drift.covariate)
    cols[LABEL] = _labels(rng["label"], codes, cols, lo, drift)
    nulls = _inject_faults(rng["fault"], cols, lo, drift.quality) if faults_enabled(drift) else None
    if nulls is not None:
        for name in INT_FEATURES:
            cols[name] = pd.arrays.IntegerArray(cols[name], nulls[name])
    return pd.DataFrame({"customer_id": ids, "event_time": _event_times(spec, ids), **cols})


def _event_times(spec: SyntheticSource, ids: np.ndarray) -> np.ndarray:
    """start_time + id * (86400 / rows_per_day) seconds, in exact integer nanoseconds."""
    start = pd.Timestamp(spec.start_time)
    if start.tzinfo is not None:
        start = start.tz_convert("UTC").tz_localize(None)
    step, rest = divmod(86_400 * 10**9, spec.rows_per_day)
    ns = start.as_unit("ns").value + ids * step + (ids * rest) // spec.rows_per_day
    return ns.view("datetime64[ns]")


def _draw_category(rng: np.random.Generator, probs: np.ndarray, n: int, lo: int, toward: int,
                   strength: float) -> np.ndarray:
    """Category codes; rows from lo on mix towards category `toward` by the drift strength."""
    u = rng.random(n)
    weight = 1.0 - np.exp(-0.7 * strength)
    drifted = (1.0 - weight) * probs + weight * (np.arange(len(probs)) == toward)
    codes = np.empty(n, dtype=np.intp)
    codes[:lo] = np.searchsorted(np.cumsum(probs)[:-1], u[:lo], side="right")
    codes[lo:] = np.searchsorted(np.cumsum(drifted)[:-1], u[lo:], side="right")
    return codes


def _features(rng: dict, n: int, lo: int, cov: float) -> tuple[dict, dict]:
    """Draw the feature columns; returns (category codes, columns)."""
    plan = _draw_category(rng["plan"], _PLAN_P, n, lo, PLANS.index("basic"), cov)
    region = _draw_category(rng["region"], _REGION_P, n, lo, REGIONS.index("south"), cov)
    channel = _draw_category(rng["channel"], _CHANNEL_P, n, lo, -1, 0.0)
    age = np.clip(np.rint(rng["age"].normal(42.0, 13.0, n)), 18, 90).astype(np.int64)
    tenure = np.minimum(rng["tenure"].exponential(30.0, n).astype(np.int64), 120)
    spend = 50.0 * np.exp(0.55 * rng["spend"].standard_normal(n)) * _SPEND_BY_PLAN[plan]
    spend[lo:] *= 1.0 + 0.5 * cov
    spend = np.round(np.clip(spend, 1.0, 1000.0), 2)
    has_discount = rng["discount"].random(n) < 0.4
    discount = np.where(has_discount, 5.0 * rng["discount"].integers(1, 11, n), 0.0)
    tickets = rng["tickets"].poisson(1.2, n).astype(np.int64)
    lam = _SESSIONS_BY_CHANNEL[channel]
    lam[lo:] /= 1.0 + 0.6 * cov
    sessions = rng["sessions"].poisson(lam).astype(np.int64)
    cols = {"age": age, "tenure_months": tenure, "monthly_spend": spend,
            "support_tickets": tickets, "sessions_30d": sessions, "discount_pct": discount,
            "plan": _PLAN_OBJ[plan], "region": _REGION_OBJ[region],
            "channel": _CHANNEL_OBJ[channel]}
    return {"plan": plan, "region": region, "channel": channel}, cols


def _rule_logit(w: dict, codes: dict, cols: dict, rows: slice) -> np.ndarray:
    """The logit of churn under one rule (weights w) for the rows in `rows`."""
    discount = cols["discount_pct"][rows]
    spend_term = np.log(cols["monthly_spend"][rows] / 50.0) * (1.0 - discount / 50.0)
    return (w["bias"] + w["tickets"] * cols["support_tickets"][rows]
            + w["sessions"] * cols["sessions_30d"][rows] + w["tenure"] * cols["tenure_months"][rows]
            + w["spend"] * spend_term + w["discount"] * discount
            + w["age"] * (cols["age"][rows] - 42) + w["plan"][codes["plan"][rows]]
            + w["region"][codes["region"][rows]] + w["channel"][codes["channel"][rows]])


def _labels(
    rng: np.random.Generator, codes: dict, cols: dict, lo: int, drift: DriftConfig
) -> np.ndarray:
    """Bernoulli(sigmoid(logit)) labels, with concept and label drift on rows from lo on."""
    logit = _rule_logit(_BASE, codes, cols, slice(None))
    after = slice(lo, None)
    if lo < len(logit) and drift.concept > 0:
        logit[after] += drift.concept * (_rule_logit(_NEW, codes, cols, after) - logit[after])
    if lo < len(logit) and drift.label != 0:
        logit[after] += _rate_offset(logit[after], drift.label)
    return (rng.random(len(logit)) < _sigmoid(logit)).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def _rate_offset(logit: np.ndarray, shift: float) -> float:
    """The logit offset that moves the mean of sigmoid(logit) by `shift` (bracketed Newton)."""
    target = float(np.clip(_sigmoid(logit).mean() + shift, 0.01, 0.99))
    low, high, offset = -40.0, 40.0, 0.0
    for _ in range(60):
        p = _sigmoid(logit + offset)
        gap = p.mean() - target
        if abs(gap) < 1e-6:
            break
        low, high = (low, offset) if gap > 0 else (offset, high)
        step = offset - gap / max((p * (1.0 - p)).mean(), 1e-12)
        offset = step if low < step < high else (low + high) / 2.0
    return offset


def _inject_faults(rng: np.random.Generator, cols: dict, lo: int, quality: float) -> dict:
    """Give `quality` of the rows from lo on one fault each; return int-column null masks."""
    n = len(cols["age"])
    nulls = {name: np.zeros(n, dtype=bool) for name in INT_FEATURES}
    m = n - lo
    hit = rng.random(m) < quality
    kind = rng.integers(0, 3, m)
    pick = rng.random(m)
    rows = lo + np.flatnonzero(hit)
    kind, pick = kind[hit], pick[hit]
    for kind_id, options in enumerate((FEATURES, _OUT_OF_RANGE, _UNKNOWN)):
        choice = (pick * len(options)).astype(np.intp)
        for j, option in enumerate(options):
            where = rows[(kind == kind_id) & (choice == j)]
            _apply_fault(kind_id, option, where, cols, nulls)
    return nulls


def _apply_fault(kind: int, option, where: np.ndarray, cols: dict, nulls: dict) -> None:
    """Write one kind of fault into the rows `where`."""
    if kind == 0 and option in nulls:
        nulls[option][where] = True
    elif kind == 0:
        cols[option][where] = np.nan if cols[option].dtype.kind == "f" else None
    elif option[1] is None:
        cols[option[0]][where] = -cols[option[0]][where]
    else:
        cols[option[0]][where] = option[1]
