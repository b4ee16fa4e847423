"""The ingest pipeline end to end on a real local Ray: every source kind, quarantine,
dataset-level failures, content-addressed versions, appends, and nothing half-written."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from raysys.data import synthetic
from raysys.errors import SourceError, ValidationFailed

SCHEMA = {
    "id": {"type": "int", "unique": True},
    "amount": {"type": "float", "min": 0, "max": 1000},
    "plan": {"type": "category", "allowed": ["basic", "premium"]},
    "churned": {"type": "int", "allowed": [0, 1]},
}


def orders(rows: int = 40, start: int = 0) -> pd.DataFrame:
    ids = range(start, start + rows)
    return pd.DataFrame({
        "id": list(ids),
        "amount": [float(i % 97) * 3.5 for i in ids],
        "plan": ["basic" if i % 3 else "premium" for i in ids],
        "churned": [i % 2 for i in ids],
    })


def data_cfg(source: dict, columns: dict | None = SCHEMA, **extra) -> dict:
    schema = {"columns": columns} if columns is not None else {}
    return {"data": {"name": "orders", "source": source, "schema": schema, **extra}}


def store_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def assert_nothing_published(rs) -> None:
    assert rs.data.versions() == []
    staging = Path(rs.storage.path("datasets", "orders", "_staging"))
    assert not staging.exists() or not any(staging.iterdir())


# --------------------------------------------------------------------------- synthetic


def synthetic_cfg(rows: int = 30_000, **drift) -> dict:
    columns = {name: spec.model_dump(exclude_defaults=True) | {"type": spec.type} for name, spec in synthetic.SYNTHETIC_COLUMNS.items()}
    source = {"kind": "synthetic", "rows": rows, "seed": 3, "drift": drift}
    return {"data": {"name": "churn", "source": source, "schema": {"columns": columns}, "label": "churned", "task": "binary"}}


def test_synthetic_ingest_reconciles_and_reingest_is_a_no_op(make_system, tmp_path):
    rs = make_system(synthetic_cfg())
    first = rs.data.ingest()
    assert first.created and first.report["rows_read"] == 30_000
    assert first.report["accepted"] + first.report["quarantined"] == first.report["rows_read"]
    manifest = rs.data.show(first.manifest.version)
    assert manifest.row_count == rs.data.read(manifest.version).count() == 30_000
    assert manifest.stats["age"]["min"] >= 18 and manifest.schema["event_time"] == "timestamp"
    before = store_files(tmp_path / "store" / "datasets")
    again = rs.data.ingest()
    assert again.manifest.version == first.manifest.version and not again.created
    assert store_files(tmp_path / "store" / "datasets") == before
    assert len(rs.data.versions()) == 1


def test_quality_faults_are_quarantined_with_reasons_never_dropped(make_system):
    rs = make_system(synthetic_cfg(rows=20_000, start_row=10_000, quality=0.2))
    result = rs.data.ingest()
    report = result.report
    assert report["reconciled"] and report["quarantined"] > 1000
    assert report["accepted"] + report["quarantined"] == 20_000
    bad = rs.data.read(result.manifest.version, quarantine=True).to_pandas()
    assert len(bad) == report["quarantined"]
    assert bad["_reason"].str.len().gt(0).all()
    assert bad["customer_id"].astype(int).min() >= 10_000  # faults start at the drift point
    assert any("not in allowed" in r for r in report["quarantine_reasons"])


def test_different_data_gives_a_new_version_with_a_parent_and_a_diff(make_system):
    rs = make_system(synthetic_cfg(rows=20_000))
    old = rs.data.ingest().manifest
    rs.config.data.source.drift.start_row = 0
    rs.config.data.source.drift.covariate = 2.0
    new = rs.data.ingest().manifest
    assert new.version != old.version and new.parent == old.version
    diff = rs.data.diff(old.version, new.version)
    spend = diff["columns"]["monthly_spend"]
    assert spend["mean_shift_std"] > 0.5
    assert abs(diff["columns"]["age"]["mean_shift_std"]) < 0.1
    assert rs.data.show("latest").version == new.version
    assert rs.data.show("latest~1").version == old.version
    assert rs.data.show(old.version[:6]).version == old.version


# --------------------------------------------------------------------------- files


def test_csv_bad_values_are_quarantined_and_types_coerced(make_system, tmp_path):
    path = tmp_path / "orders.csv"
    frame = orders().astype(object)
    frame.loc[3, "amount"] = "lots"
    frame.loc[5, "plan"] = "gold"
    frame.loc[7, "id"] = None
    frame.to_csv(path, index=False)
    rs = make_system(data_cfg({"kind": "csv", "path": str(path)}))
    result = rs.data.ingest()
    assert (result.report["accepted"], result.report["quarantined"]) == (37, 3)
    bad = rs.data.read(quarantine=True).to_pandas().sort_values("id", na_position="last")
    assert bad["amount"].tolist()[0] == "lots"
    schema = rs.data.read().schema()
    types = dict(zip(schema.names, map(str, schema.types)))
    assert (types["id"], types["amount"], types["plan"]) == ("int64", "double", "string")


def test_malformed_csv_row_is_a_clear_error_and_publishes_nothing(make_system, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("id,amount,plan,churned\n1,2.0,basic,0\n2,3.0\n")
    rs = make_system(data_cfg({"kind": "csv", "path": str(path)}))
    with pytest.raises(SourceError, match=r"csv source .*orders.csv: .*(column|Expected)"):
        rs.data.ingest()
    assert_nothing_published(rs)


def test_missing_file_is_a_clear_error(make_system, tmp_path):
    rs = make_system(data_cfg({"kind": "csv", "path": str(tmp_path / "nope.csv")}))
    with pytest.raises(SourceError, match="nope.csv: no such file or directory"):
        rs.data.ingest()
    assert_nothing_published(rs)


def test_parquet_directory_source(make_system, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    orders(30).to_parquet(folder / "a.parquet")
    orders(30, start=30).to_parquet(folder / "b.parquet")
    rs = make_system(data_cfg({"kind": "parquet", "path": str(folder)}))
    assert rs.data.ingest().manifest.row_count == 60


def test_jsonl_logs_quarantine_unparseable_lines(make_system, tmp_path):
    path = tmp_path / "app.log"
    lines = [json.dumps(r) for r in orders(10).to_dict("records")]
    lines.insert(4, "{not json")
    lines.insert(6, "[1, 2]")
    lines.append(json.dumps({"id": 99, "amount": "12.5", "plan": "basic", "churned": True}))
    path.write_text("\n".join(lines) + "\n\n")
    rs = make_system(data_cfg({"kind": "jsonl", "path": str(path)}))
    result = rs.data.ingest()
    assert (result.report["rows_read"], result.report["quarantined"]) == (13, 2)
    bad = rs.data.read(quarantine=True).to_pandas()
    assert set(bad["_raw"]) == {"{not json", "[1, 2]"}
    assert bad["_reason"].str.startswith("invalid JSON line").all()
    good = rs.data.read().to_pandas()
    assert good.loc[good["id"] == 99, "amount"].item() == 12.5


def test_same_rows_from_csv_and_parquet_give_the_same_version(make_system, tmp_path):
    orders().to_csv(tmp_path / "o.csv", index=False)
    orders().sample(frac=1, random_state=0).to_parquet(tmp_path / "o.parquet")
    from_csv = make_system(data_cfg({"kind": "csv", "path": str(tmp_path / "o.csv")})).data.ingest()
    from_parquet = make_system(data_cfg({"kind": "parquet", "path": str(tmp_path / "o.parquet")})).data.ingest()
    assert from_csv.manifest.version == from_parquet.manifest.version


# --------------------------------------------------------------------------- databases and APIs


def test_sqlite_source(make_system, tmp_path):
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        orders(25).to_sql("orders", conn, index=False)
    rs = make_system(data_cfg({"kind": "sql", "url": f"sqlite:///{db}", "table": "orders"}))
    assert rs.data.ingest().manifest.row_count == 25


def test_sqlite_missing_database_is_a_clear_error(make_system, tmp_path):
    rs = make_system(data_cfg({"kind": "sql", "url": f"sqlite:///{tmp_path}/none.db", "table": "orders"}))
    with pytest.raises(SourceError, match="not found"):
        rs.data.ingest()
    assert_nothing_published(rs)


@pytest.mark.postgres
def test_postgres_source(make_system):
    url = os.environ.get("RAYSYS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("RAYSYS_TEST_POSTGRES_URL not set (run .ci/postgres.sh)")
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    orders(50).to_sql("ingest_orders", engine, index=False, if_exists="replace")
    rs = make_system(data_cfg({"kind": "sql", "url": url, "query": "SELECT * FROM ingest_orders WHERE id < 30"}))
    result = rs.data.ingest()
    assert result.manifest.row_count == 30
    assert "raysys:***@" in result.manifest.source["url"] or "***" in result.manifest.source["url"]


@pytest.mark.postgres
def test_postgres_unreachable_is_a_clear_error(make_system):
    rs = make_system(data_cfg({"kind": "sql", "url": "postgresql://u:secret@127.0.0.1:1/db", "table": "t", "connect_timeout_s": 2}))
    with pytest.raises(SourceError) as error:
        rs.data.ingest()
    assert "secret" not in str(error.value) and "cannot connect" in str(error.value)


@pytest.fixture()
def orders_api():
    """A paginated JSON API on 127.0.0.1 serving 45 orders, 20 per page."""
    records = orders(45).to_dict("records")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            query = parse_qs(urlparse(self.path).query)
            page, size = int(query.get("page", ["1"])[0]), int(query.get("per_page", ["20"])[0])
            body = json.dumps({"data": records[(page - 1) * size: page * size]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/orders"
    server.shutdown()


def test_http_api_source_follows_pages(make_system, orders_api):
    source = {"kind": "http", "url": orders_api, "pagination": {"style": "page", "page_size": 20}}
    rs = make_system(data_cfg(source))
    manifest = rs.data.ingest().manifest
    assert manifest.row_count == 45
    assert sorted(rs.data.read().to_pandas()["id"]) == list(range(45))


def test_unreachable_api_is_a_clear_error(make_system):
    rs = make_system(data_cfg({"kind": "http", "url": "http://127.0.0.1:9/x", "max_retries": 0}))
    with pytest.raises(SourceError, match="127.0.0.1:9"):
        rs.data.ingest()
    assert_nothing_published(rs)


@pytest.mark.parametrize(
    ("dataset", "rows", "column", "target"),
    [("breast_cancer", 569, "mean_radius", "int"), ("wine", 178, "alcohol", "int"),
     ("digits", 1797, "pixel_0_0", "int"), ("diabetes", 442, "bmi", "float")],
)
def test_sklearn_sources_infer_their_schema(make_system, dataset, rows, column, target):
    rs = make_system({"data": {"name": dataset, "source": {"kind": "sklearn", "dataset": dataset}}})
    manifest = rs.data.ingest().manifest
    assert manifest.row_count == rows and manifest.schema[column] == "float"
    assert manifest.schema["target"] == target


# --------------------------------------------------------------------------- dataset-level failures


def test_null_rate_over_the_limit_stops_the_pipeline(make_system, tmp_path):
    frame = orders().astype({"amount": float})
    frame.loc[:9, "amount"] = None
    frame.to_parquet(tmp_path / "o.parquet")
    columns = SCHEMA | {"amount": {"type": "float", "required": False, "max_null_rate": 0.1}}
    rs = make_system(data_cfg({"kind": "parquet", "path": str(tmp_path / "o.parquet")}, columns))
    with pytest.raises(ValidationFailed, match=r"amount.*null rate 25.0% above max_null_rate 10.0%") as error:
        rs.data.ingest()
    assert error.value.report["rows_read"] == 40
    assert_nothing_published(rs)


def test_schema_mismatch_stops_the_pipeline(make_system, tmp_path):
    orders().drop(columns=["plan"]).assign(extra=1).to_parquet(tmp_path / "o.parquet")
    rs = make_system(data_cfg({"kind": "parquet", "path": str(tmp_path / "o.parquet")}))
    with pytest.raises(ValidationFailed, match="missing required column 'plan'"):
        rs.data.ingest()
    assert_nothing_published(rs)


def test_duplicate_keys_stop_the_pipeline(make_system, tmp_path):
    pd.concat([orders(20), orders(5, start=3)]).to_parquet(tmp_path / "o.parquet")
    rs = make_system(data_cfg({"kind": "parquet", "path": str(tmp_path / "o.parquet")}))
    with pytest.raises(ValidationFailed, match=r"column 'id': 5 values appear more than once \(e.g. 3, 4, 5, 6, 7\)"):
        rs.data.ingest()
    assert_nothing_published(rs)


def test_validate_is_a_dry_run(make_system, tmp_path):
    orders().to_parquet(tmp_path / "o.parquet")
    rs = make_system(data_cfg({"kind": "parquet", "path": str(tmp_path / "o.parquet")}))
    result = rs.data.validate()
    assert result.report["accepted"] == 40 and not result.created
    assert_nothing_published(rs)


def test_failure_in_a_later_file_leaves_no_partial_version(make_system, tmp_path):
    folder = tmp_path / "csvs"
    folder.mkdir()
    for index in range(4):
        orders(10, start=10 * index).to_csv(folder / f"part{index}.csv", index=False)
    (folder / "part4.csv").write_text("id,amount,plan,churned\n1,2,basic,0,EXTRA\n")
    rs = make_system(data_cfg({"kind": "csv", "path": str(folder)}))
    with pytest.raises(SourceError):
        rs.data.ingest()
    assert_nothing_published(rs)


def test_a_version_without_its_manifest_is_invisible(make_system, tmp_path):
    orders().to_parquet(tmp_path / "o.parquet")
    rs = make_system(data_cfg({"kind": "parquet", "path": str(tmp_path / "o.parquet")}))
    crashed = Path(rs.storage.path("datasets", "orders", "0123456789abcdef", "data"))
    crashed.mkdir(parents=True)
    (crashed / "part-x.parquet").write_bytes(b"half")
    assert rs.data.versions() == []
    assert rs.data.ingest().manifest.version != "0123456789abcdef"
    assert len(rs.data.versions()) == 1


# --------------------------------------------------------------------------- appends


def test_appends_build_on_the_parent_and_match_a_full_ingest(make_system, tmp_path):
    orders(40).to_parquet(tmp_path / "first.parquet")
    rs = make_system(data_cfg({"kind": "parquet", "path": str(tmp_path / "first.parquet")}))
    base = rs.data.ingest().manifest
    appended = rs.data.append(orders(10, start=40)).manifest
    assert appended.parent == base.version and appended.row_count == 50
    assert set(base.files) <= set(appended.files)
    assert rs.data.read(appended.version).count() == 50
    pd.concat([orders(40), orders(10, start=40)]).to_parquet(tmp_path / "all.parquet")
    other = make_system(data_cfg({"kind": "parquet", "path": str(tmp_path / "all.parquet")}))
    assert other.data.validate().manifest.version == appended.version


def test_append_quarantines_bad_rows_and_rejects_duplicates(make_system, tmp_path):
    orders(10).to_parquet(tmp_path / "o.parquet")
    rs = make_system(data_cfg({"kind": "parquet", "path": str(tmp_path / "o.parquet")}))
    rs.data.ingest()
    batch = orders(3, start=10).astype(object)
    batch.loc[1, "plan"] = "gold"
    result = rs.data.append(batch)
    assert (result.report["accepted"], result.report["quarantined"]) == (2, 1)
    with pytest.raises(ValidationFailed, match="more than once"):
        rs.data.append(pd.concat([orders(2, start=50), orders(2, start=50)]))
    assert len(rs.data.versions()) == 2
