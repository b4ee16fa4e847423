"""The example configs under configs/ and the config loader's error messages.

Pure and fast: no Ray runtime is started (raysys.data.sources is imported for its sklearn
loader only). The example configs must load, and what they declare must match the sample data
they read, so a config that goes stale fails here; the sample data must be reproducible by
configs/data/make_samples.py; and every config mistake must be one line naming the file and
the field.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raysys.config import (
    CsvSource,
    JsonLinesSource,
    ParquetSource,
    SklearnSource,
    SqlSource,
    SyntheticSource,
    SystemConfig,
    load_config,
)
from raysys.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SAMPLES = ROOT / "configs" / "data"
MAKE_SAMPLES = SAMPLES / "make_samples.py"
SOURCE_KINDS = {"csv", "parquet", "jsonl", "sql", "http", "sklearn", "synthetic"}


def _load(path: Path) -> SystemConfig:
    return load_config(path)


# --------------------------------------------------------------------------- (a) every config


def test_there_is_a_config_per_source_kind():
    assert len(CONFIGS) >= 10
    kinds = {_load(path).data.source.kind for path in CONFIGS}
    assert kinds == SOURCE_KINDS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path: Path, monkeypatch):
    monkeypatch.delenv("RAYSYS_POSTGRES_URL", raising=False)  # the defaults must be enough
    monkeypatch.delenv("ORDERS_API_TOKEN", raising=False)
    cfg = _load(path)
    assert cfg.storage.root == "./.raysys"
    first = path.read_text().splitlines()[0]
    assert first.startswith("# "), f"{path.name} must start with a comment saying what it shows"
    if cfg.data.label is not None:
        assert cfg.data.task is not None


def test_postgres_url_comes_from_the_environment(monkeypatch):
    path = ROOT / "configs" / "postgres.yaml"
    monkeypatch.delenv("RAYSYS_POSTGRES_URL", raising=False)
    assert _load(path).data.source.url == "postgresql://raysys@127.0.0.1:54329/raysys"  # no password in a file
    monkeypatch.setenv("RAYSYS_POSTGRES_URL", "postgresql://me:pw@db.example:5432/shop")
    source = _load(path).data.source
    assert source.url == "postgresql://me:pw@db.example:5432/shop" and "FROM orders" in source.query


def _flat_keys(record: dict, prefix: str = "") -> set[str]:
    """Column names of a JSON record as raysys flattens it (nested keys joined by '.')."""
    keys = set()
    for key, value in record.items():
        if isinstance(value, dict) and value:
            keys |= _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def _source_columns(cfg: SystemConfig) -> list[str] | None:
    """The columns the source really has, for sources that are local; None for a server."""
    source = cfg.data.source
    if isinstance(source, CsvSource):
        with open(ROOT / source.path, encoding="utf-8") as f:
            return f.readline().rstrip("\n").split(source.delimiter)
    if isinstance(source, ParquetSource):
        return pq.read_schema(ROOT / source.path).names
    if isinstance(source, JsonLinesSource):
        keys: set[str] = set()
        for line in (ROOT / source.path).read_text(encoding="utf-8").splitlines():
            try:
                keys |= _flat_keys(json.loads(line))
            except ValueError:
                continue  # the malformed sample lines
        return sorted(keys)
    if isinstance(source, SqlSource) and source.url.startswith("sqlite:///"):
        db = ROOT / source.url.removeprefix("sqlite:///")
        assert db.is_file(), f"{db} is missing: run configs/data/make_samples.py"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return [row[1] for row in conn.execute(f"PRAGMA table_info({source.table})")]
    if isinstance(source, SklearnSource):
        from raysys.data.sources import load_sklearn  # imports ray.data; starts nothing

        return list(load_sklearn(source.dataset).columns)
    if isinstance(source, SyntheticSource):
        from raysys.data.synthetic import SYNTHETIC_COLUMNS

        return list(SYNTHETIC_COLUMNS)
    return None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_matches_its_data(path: Path):
    """Declared columns, label, split and feature names all exist in the data they describe."""
    cfg = _load(path)
    data = cfg.data
    declared = list(data.schema_.columns)
    actual = _source_columns(cfg)
    if actual is not None:
        assert actual, f"{path.name}: the source has no columns"
        missing = [c for c in declared if data.schema_.columns[c].required and c not in actual]
        assert not missing, f"{path.name}: declared but not in the data: {missing}"
        if declared and data.schema_.extra_columns == "error":
            extra = sorted(set(actual) - set(declared))
            assert not extra, f"{path.name}: in the data but not declared: {extra}"
    # After validation the dataset has the declared columns (or, if none, the source's own).
    columns = set(declared or actual or [])
    assert columns, f"{path.name}: declare schema.columns for a source that is not local"
    if data.label:
        assert data.label in columns
    for name in [data.split.column, *(data.split.key or [])]:
        assert name is None or name in columns, f"{path.name}: split column {name!r}"
    derived = {d.name for d in cfg.features.derived}
    named = [*cfg.features.exclude, *cfg.features.numeric, *cfg.features.categorical]
    unknown = [n for n in named if n not in columns | derived]
    assert not unknown, f"{path.name}: features name unknown columns {unknown}"
    if data.label:
        assert data.label not in named, f"{path.name}: the label is configured as a feature"


@pytest.mark.parametrize(
    "path", [p for p in CONFIGS if p.name != "quickstart.yaml"], ids=lambda p: p.name
)
def test_local_sample_paths_exist(path: Path):
    source = _load(path).data.source
    if isinstance(source, (CsvSource, ParquetSource, JsonLinesSource)):
        assert not Path(source.path).is_absolute()
        assert (ROOT / source.path).is_file(), f"{source.path}: run configs/data/make_samples.py"
        assert (ROOT / source.path).stat().st_size < 100_000


# --------------------------------------------------------------------------- (b) sample data


def test_make_samples_is_deterministic(tmp_path: Path):
    """Re-running the script reproduces the committed text files byte for byte."""
    done = subprocess.run(
        [sys.executable, str(MAKE_SAMPLES), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in ("churn_sample.csv", "app_logs.jsonl"):
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name
    # Binary files: the same data (their bytes may depend on library versions).
    assert pq.read_table(tmp_path / "churn_sample.parquet").equals(
        pq.read_table(SAMPLES / "churn_sample.parquet")
    )
    rows = []
    for db in (tmp_path / "shop.db", SAMPLES / "shop.db"):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows.append(conn.execute("SELECT * FROM orders ORDER BY order_id").fetchall())
    assert rows[0] == rows[1] and len(rows[0]) == 400


def test_samples_have_the_intended_shape():
    csv_lines = (SAMPLES / "churn_sample.csv").read_text().splitlines()
    assert len(csv_lines) == 501
    assert any(",forty-two," in line for line in csv_lines)  # a non-numeric age
    assert any(",platinum," in line for line in csv_lines)  # an unknown plan
    assert any(",," in line for line in csv_lines)  # an empty required cell
    assert pq.read_metadata(SAMPLES / "churn_sample.parquet").num_rows == 500
    log_lines = (SAMPLES / "app_logs.jsonl").read_text().splitlines()
    parsed = []
    for line in log_lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pass
    assert len(parsed) == 300 and len(log_lines) == 302
    assert any(isinstance(r.get("user"), dict) and "plan" in r["user"] for r in parsed)


# --------------------------------------------------------------------------- (c) error messages

VALID = """\
data:
  name: orders
  source: {kind: csv, path: orders.csv}
  schema:
    columns:
      id: {type: int, unique: true}
      amount: {type: float, min: 0}
      returned: {type: int, allowed: [0, 1]}
  label: returned
  task: binary
"""


def _edit(old: str, new: str) -> str:
    """VALID with one edit (the old text must be there)."""
    assert old in VALID
    return VALID.replace(old, new)


# (case, file text, what the one-line message must contain after "<file>: ", or a tuple of
# alternatives where a known defect below is still open)
ERROR_CASES = [
    ("unknown key", _edit("  label:", "  lable: returned\n  label:"),
     "data.lable: unknown field"),
    ("unknown nested key", _edit("path: orders.csv", "path: o.csv, delimeter: ';'"),
     "data.source.delimeter: unknown field"),
    ("unknown top-level key", VALID + "trainer: {}\n",
     "trainer: unknown field"),
    ("wrong type", VALID + "ray: {num_cpus: many}\n",
     "ray.num_cpus: input should be a valid integer"),
    ("wrong type in a column", _edit("min: 0}", "min: zero}"),
     "data.schema.columns.amount.min: input should be a valid number"),
    ("bad enum", _edit("type: float", "type: decimal"),
     "data.schema.columns.amount.type: input should be"),
    ("missing source path", _edit(", path: orders.csv", ""),
     "data.source.path: field required"),
    ("missing data", "project: {name: x}\n",
     "data: field required"),
    ("unknown source kind", _edit("kind: csv", "kind: excel"),
     "data.source: input tag 'excel'"),
    ("bad YAML syntax", _edit("  label: returned", "  label: [returned"),
     "invalid YAML at line"),
    ("bad YAML indentation", _edit("  task: binary", "   task: binary"),
     "invalid YAML at line"),
    ("undefined ${VAR}", _edit("orders.csv", "\"${RAYSYS_TEST_UNSET_VAR}\""),
     "environment variable RAYSYS_TEST_UNSET_VAR is not set"),
    ("label not in schema", _edit("label: returned", "label: churned"),
     "data: label 'churned' is not among schema.columns"),
    ("label without task", _edit("  task: binary\n", ""),
     "data: 'label' and 'task' go together"),
    ("split fractions", VALID + "  split: {val: 0.5, test: 0.5}\n",
     "data.split: val + test must be below 1"),
    ("min above max", _edit("min: 0}", "min: 5, max: 1}"),
     "data.schema.columns.amount: min (5.0) is greater than max (1.0)"),
    ("empty file", "", ("expected a mapping", "empty")),
    ("only comments", "# nothing here yet\n", ("expected a mapping", "empty")),
    ("a list, not a mapping", "- data\n", "expected a mapping at the top level, got list"),
    ("serve replicas", VALID + "serve: {autoscaling: {min_replicas: 3, max_replicas: 1}}\n",
     "serve.autoscaling: min_replicas (3) > max_replicas (1)"),
    ("serve port", VALID + "serve: {port: 70000}\n", "serve.port: input should be less than or equal to 65535"),
    ("serve canary", VALID + "serve: {canary_percent: 150}\n", "serve.canary_percent"),
    ("serve unknown key", VALID + "serve: {replicas: 2}\n", "serve.replicas: unknown field"),
    ("serve batch size", VALID + "serve: {batching: {max_batch_size: 0}}\n", "serve.batching.max_batch_size"),
    ("ray serve mode", VALID + "ray: {serve_mode: turbo}\n", "ray.serve_mode"),
]


def _config_error(tmp_path: Path, text: str, name: str = "x.yaml") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return path, str(caught.value)


def _assert_one_line(message: str, path: Path) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}: "), message


def test_valid_base_config_loads(tmp_path: Path):
    path = tmp_path / "x.yaml"
    path.write_text(VALID)
    assert load_config(path).data.label == "returned"


@pytest.mark.parametrize("case, text, expected", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_config_error_is_one_line_naming_file_and_field(
    tmp_path, monkeypatch, case, text, expected
):
    monkeypatch.delenv("RAYSYS_TEST_UNSET_VAR", raising=False)
    path, message = _config_error(tmp_path, text)
    _assert_one_line(message, path)
    alternatives = expected if isinstance(expected, tuple) else (expected,)
    assert any(fragment in message for fragment in alternatives), message


def test_missing_config_file(tmp_path: Path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found$"):
        load_config(path)


def test_several_errors_stay_on_one_line(tmp_path: Path):
    text = _edit("  label:", "  lable: returned\n  label:").replace(", path: orders.csv", "")
    path, message = _config_error(tmp_path, text)
    _assert_one_line(message, path)
    assert "data.lable: unknown field" in message and "data.source.path: field required" in message


# Messages for harder cases: names that look like source kinds, bad characters, empty files,
# unset variables (located by field path) and variables in comments (never expanded).


def test_column_named_like_a_source_kind_keeps_its_path(tmp_path: Path):
    column = "      http: {type: int, min: 5, max: 1}\n"
    text = _edit("      id: {type: int", column + "      id: {type: int")
    _, message = _config_error(tmp_path, text)
    assert "data.schema.columns.http: min (5.0) is greater than max (1.0)" in message, message


def test_control_character_in_yaml_is_one_line(tmp_path: Path):
    path, message = _config_error(tmp_path, _edit("name: orders", "name: ord\x07ers"))
    _assert_one_line(message, path)
    assert "invalid YAML at line 2" in message, message


def test_empty_file_says_it_is_empty(tmp_path: Path):
    _, message = _config_error(tmp_path, "")
    assert "empty" in message and "NoneType" not in message, message


def test_unset_variable_is_located(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("RAYSYS_TEST_UNSET_VAR", raising=False)
    text = _edit("orders.csv", "\"${RAYSYS_TEST_UNSET_VAR}\"")
    path, message = _config_error(tmp_path, text)
    assert message.startswith(f"{path}: data.source.path: "), message


def test_variable_in_a_comment_is_ignored(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("RAYSYS_TEST_UNSET_VAR", raising=False)
    path = tmp_path / "x.yaml"
    path.write_text("# set ${RAYSYS_TEST_UNSET_VAR} to override the path\n" + VALID)
    assert load_config(path).data.name == "orders"
    path.write_text(VALID.replace("  task:", "  # path: ${RAYSYS_TEST_UNSET_VAR}\n  task:"))
    assert load_config(path).data.name == "orders"


# Names that become directories under storage.root (datasets/<data.name>, models/<project.name>,
# serving/<serve.app_name>) cannot climb out of it or hide.


@pytest.mark.parametrize("field", ["project.name", "serve.app_name", "data.name"])
@pytest.mark.parametrize("name", ["..", "../outside", "a/b", "/abs", ".hidden", "a b", "", "x\n"])
def test_names_used_in_storage_paths_are_validated(tmp_path: Path, field: str, name: str):
    section, key = field.split(".")
    text = VALID.replace("name: orders", "name: orders" if section != "data" else "name: NAME")
    if section != "data":
        text += f"{section}: {{{key}: NAME}}\n"
    path, message = _config_error(tmp_path, text.replace("NAME", json.dumps(name)))
    _assert_one_line(message, path)
    assert message.startswith(f"{path}: {field}: {name!r} is not a valid name: use letters"), message


def test_valid_names_load(tmp_path: Path):
    path = tmp_path / "x.yaml"
    path.write_text(VALID + "project: {name: churn-2.v1_a}\nserve: {app_name: App.1}\n")
    cfg = load_config(path)
    assert (cfg.project.name, cfg.serve.app_name) == ("churn-2.v1_a", "App.1")
