"""SQL sources against a real SQLite file and, when available, a real PostgreSQL server."""

from __future__ import annotations

import os
import pickle
import socket
import sqlite3
import time
import uuid

import pytest
from sqlalchemy.engine import make_url

from raysys.config import SqlSource
from raysys.data.sql import build_query, check_connection, connection_factory, mask_url
from raysys.errors import SourceError

ROWS = [(1, "a", 2.5), (2, "b", 7.0), (3, "c", 1.25)]


def sql(url: str, **kwargs) -> SqlSource:
    return SqlSource(kind="sql", url=url, **kwargs)


@pytest.fixture
def sqlite_url(tmp_path):
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER, name TEXT, amount REAL)")
        conn.execute('CREATE TABLE "order items" (id INTEGER)')
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?)", ROWS)
    conn.close()
    return f"sqlite:///{path}"


# --------------------------------------------------------------------------- pure helpers


def test_mask_url_hides_password():
    assert mask_url("postgresql://u:s3cret@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert mask_url("sqlite:///shop.db") == "sqlite:///shop.db"
    assert mask_url("postgresql://u:s3cret@h:badport/x") == "postgresql://u:***@h:badport/x"
    assert mask_url("not a url u:s3cret@host") == "not a url u:***@host"


def test_build_query_quotes_table_per_dialect():
    assert build_query(sql("sqlite:///x.db", table="orders")) == "SELECT * FROM orders"
    assert build_query(sql("sqlite:///x.db", table="order items")) == 'SELECT * FROM "order items"'
    assert build_query(sql("sqlite:///x.db", table="select")) == 'SELECT * FROM "select"'
    pg = "postgresql://u:p@h/db"
    assert build_query(sql(pg, table="public.orders")) == "SELECT * FROM public.orders"
    assert build_query(sql(pg, table="Sales.Orders")) == 'SELECT * FROM "Sales"."Orders"'
    assert build_query(sql(pg, table='x"; DROP TABLE t; --')) == (
        'SELECT * FROM "x""; DROP TABLE t; --"'
    )
    assert build_query(sql("mysql+pymysql://u:p@h/db", table="order items")) == (
        "SELECT * FROM `order items`"
    )


def test_build_query_keeps_query():
    assert build_query(sql("sqlite:///x.db", query=" SELECT id FROM orders; ")) == (
        "SELECT id FROM orders"
    )


# --------------------------------------------------------------------------- sqlite


def test_check_connection_ok(sqlite_url):
    check_connection(sql(sqlite_url, table="orders"))
    check_connection(sql(sqlite_url, table="order items"))
    check_connection(sql(sqlite_url, query="SELECT name, amount * 2 AS x FROM orders WHERE id > 1;"))
    check_connection(sql(sqlite_url, query="SELECT * FROM orders -- all of them"))


def test_check_connection_missing_file(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(SourceError, match="database file not found") as info:
        check_connection(sql(f"sqlite:///{path}", table="orders"))
    assert str(info.value).startswith(f"sql source sqlite:///{path}: ")
    assert not path.exists()  # not created as an empty database


def test_check_connection_unknown_table(sqlite_url):
    with pytest.raises(SourceError) as info:
        check_connection(sql(sqlite_url, table="nope"))
    assert str(info.value) == f"sql source {sqlite_url}: query failed: no such table: nope"


def test_check_connection_bad_sql(sqlite_url):
    with pytest.raises(SourceError, match="query failed: .*syntax error"):
        check_connection(sql(sqlite_url, query="SELEC id FROM orders"))


def test_check_connection_unknown_driver():
    with pytest.raises(SourceError, match=r"^sql source nosuchdb://u:\*\*\*@h/x: cannot load the"):
        check_connection(sql("nosuchdb://u:pw@h/x", table="t"))


def test_connection_factory_sqlite(sqlite_url):
    factory = pickle.loads(pickle.dumps(connection_factory(sqlite_url)))
    assert factory == connection_factory(sqlite_url)
    conn = factory()
    try:
        cursor = conn.cursor()
        cursor.execute(build_query(sql(sqlite_url, table="orders")) + " ORDER BY id")
        assert cursor.fetchall() == ROWS
    finally:
        conn.close()


def test_connection_factory_missing_file(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(SourceError, match="database file not found"):
        connection_factory(f"sqlite:///{path}")()
    assert not path.exists()


# --------------------------------------------------------------------------- postgresql


@pytest.fixture
def pg_url():
    url = os.environ.get("RAYSYS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("RAYSYS_TEST_POSTGRES_URL not set (run .ci/postgres.sh)")
    return url


@pytest.fixture
def pg_table(pg_url):
    name = f"raysys_test_{uuid.uuid4().hex[:8]}"
    conn = connection_factory(pg_url)()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {name} (id INTEGER, name TEXT, amount DOUBLE PRECISION)")
            cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s)", ROWS)
        conn.commit()
        yield name
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {name}")
        conn.commit()
        conn.close()


@pytest.mark.postgres
def test_pg_check_connection_and_query(pg_url, pg_table):
    check_connection(sql(pg_url, table=pg_table))
    check_connection(sql(pg_url, table=f"public.{pg_table}"))
    check_connection(sql(pg_url, query=f"SELECT name FROM {pg_table} WHERE amount > 2"))
    factory = pickle.loads(pickle.dumps(connection_factory(pg_url)))
    conn = factory()
    try:
        cur = conn.cursor()
        cur.execute(build_query(sql(pg_url, table=f"public.{pg_table}")) + " ORDER BY id")
        assert cur.fetchall() == ROWS
    finally:
        conn.close()


@pytest.mark.postgres
def test_pg_unknown_table_and_bad_sql(pg_url):
    with pytest.raises(SourceError, match='query failed: relation "no_such_table" does not exist$'):
        check_connection(sql(pg_url, table="no_such_table"))
    with pytest.raises(SourceError, match="query failed: syntax error"):
        check_connection(sql(pg_url, query="SELEC 1"))


@pytest.mark.postgres
def test_pg_wrong_password_is_masked(pg_url):
    bad = make_url(pg_url).set(password="wr0ng-pw-42").render_as_string(hide_password=False)
    with pytest.raises(SourceError) as info:
        check_connection(sql(bad, table="t"))
    message = str(info.value)
    assert "wr0ng-pw-42" not in message and ":***@" in message
    assert "password authentication failed" in message and "\n" not in message
    with pytest.raises(SourceError) as info:
        connection_factory(bad)()
    assert "wr0ng-pw-42" not in str(info.value)


@pytest.mark.postgres
def test_pg_unreachable_port(pg_url):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = make_url(pg_url).set(port=port).render_as_string(hide_password=False)
    start = time.monotonic()
    with pytest.raises(SourceError, match="cannot connect: .*(refused|failed)") as info:
        check_connection(sql(url, table="t", connect_timeout_s=2))
    assert time.monotonic() - start < 5
    assert ":***@" in str(info.value) and "\n" not in str(info.value)
