"""Secrets never leave the config: the masker on tricky inputs, then real ingests and a real
training run (W&B offline) whose every written byte is searched for the secrets."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from raysys import audit
from raysys.config import load_config, parse_config
from raysys.secrets import MASK, mask_config, mask_text, mask_url, remember
from raysys.storage import Storage
from tests.data.test_http_api import Handler, serving
from tests.user_shell import clean_env


def secret(kind: str) -> str:
    """A distinctive random value, easy to search for and never produced by chance."""
    return f"{kind}-{uuid.uuid4().hex}"


def files_holding(roots: list[Path], values: list[str]) -> list[str]:
    """Each file under the roots (bytes, recursively, binary ones too) holding one of the values."""
    found = []
    for path in (p for root in roots for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path} holds {value}" for value in values if value.encode() in data]
    return found


# --------------------------------------------------------------------------- the masker


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:s3cr3t@db:5432/x", "postgresql://u:***@db:5432/x"),
    ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),  # @ in the password
    ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db"),  # SQLAlchemy reads "pa/ss"
    ("postgresql://u:p?x#y@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:p%40ss%2Fw@h/db", "postgresql://u:***@h/db"),  # URL-encoded
    ("postgresql://u:pw@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),  # IPv6 host
    ("http://[::1]:8080/x?token=abc&q=1", "http://[::1]:8080/x?token=***&q=1"),
    ("postgresql://u:@h/db", "postgresql://u:@h/db"),  # empty password: nothing to hide
    ("postgresql://u@h/db", "postgresql://u@h/db"),  # a user name is not a secret
    ("https://ghp0token@github.com/o/r.git", "https://***@github.com/o/r.git"),  # a token user
    ("http://h:8080/users/a@b.com?page=2", "http://h:8080/users/a@b.com?page=2"),  # @ in a path
    ("sqlite:///data/shop.db", "sqlite:///data/shop.db"),
    ("sqlite:///file:a.db?uri=true&password=pw9", "sqlite:///file:a.db?uri=true&password=***"),
    ("http://h/p?page=2&n=3#access_token=zz", "http://h/p?page=2&n=3#access_token=***"),
    ("https://h/x?X-Amz-Signature=ab%2Fc&X-Amz-Credential=k&v=1",
     "https://h/x?X-Amz-Signature=***&X-Amz-Credential=***&v=1"),
    ("not a url u:s3cr3t@host", "not a url u:***@host"),  # no scheme, no netloc
    ("shop.db?key=abc", "shop.db?key=***"),
    ("", ""),
])
def test_mask_url_on_tricky_inputs(url, shown):
    assert mask_url(url) == shown
    assert mask_url(shown) == shown  # masking twice changes nothing


def test_mask_url_can_mask_every_query_value():
    masked = mask_url("http://h/a?since=2024&token=t#f=1", all_query=True)
    assert masked == "http://h/a?since=***&token=***#f=***"


def test_mask_text_masks_known_values_urls_pairs_and_tokens_and_leaves_the_rest():
    remembered = secret("known")
    remember(remembered)
    text = (f"cannot connect to postgresql://etl:hunter22@db/x (user etl, {remembered}); "
            f"dsn host=db password=hunter22 api_key=zz9; Authorization: Bearer abc.def.ghi123; "
            f"extra {remembered.upper()}-free")
    masked = mask_text(text, extra=["zz9"])
    assert "hunter22" not in masked and remembered not in masked and "abc.def" not in masked
    assert masked == ("cannot connect to postgresql://etl:***@db/x (user etl, ***); "
                      "dsn host=db password=*** api_key=***; Authorization: Bearer ***; "
                      f"extra {remembered.upper()}-free")
    plain = "plan: 'gold' not in allowed ['basic', 'premium']; http source http://h/x?page=2: 500"
    assert mask_text(plain) == plain


def test_mask_config_hides_http_credentials_and_keeps_the_rest():
    header, param, query = secret("hdr"), secret("prm"), secret("qry")
    source = {"kind": "http", "url": f"https://api.example.com/v1/rows?sig={query}&since=2024",
              "headers": {"Authorization": f"Bearer {header}", "Accept": "application/json"},
              "params": {"token": param, "region": "eu"}, "pagination": {"style": "page"}}
    config = parse_config({"data": {"name": "rows", "source": source}})
    masked = mask_config(config)
    shown = masked["data"]["source"]
    assert shown["url"] == "https://api.example.com/v1/rows?sig=***&since=***"
    assert shown["headers"] == {"Authorization": MASK, "Accept": MASK}
    assert shown["params"] == {"token": MASK, "region": MASK}
    assert shown["pagination"]["style"] == "page" and masked["data"]["name"] == "rows"
    assert not any(v in json.dumps(masked) for v in (header, param, query))
    assert config.data.source.params["token"] == param  # the config itself is untouched
    # and once seen, the values are scrubbed from any later message of this process
    message = f"server said: bad token {param} for {header}"
    assert mask_text(message) == "server said: bad token *** for ***"


def test_env_values_with_secret_names_are_masked_everywhere(tmp_path, monkeypatch):
    password, token = secret("pgpw"), secret("tok")
    host = f"db-{uuid.uuid4().hex[:6]}.internal"
    monkeypatch.setenv("RAYSYS_TEST_PGPW", password)
    monkeypatch.setenv("RAYSYS_TEST_SHOP_TOKEN", token)  # in a field nothing else would mask
    monkeypatch.setenv("RAYSYS_TEST_DB_HOST", host)  # not a secret: stays visible
    path = tmp_path / "raysys.yaml"
    path.write_text(yaml.safe_dump({
        "project": {"name": "p", "description": "reads with ${RAYSYS_TEST_SHOP_TOKEN}"},
        "data": {"name": "orders", "source": {
            "kind": "sql", "table": "orders",
            "url": "postgresql://etl:${RAYSYS_TEST_PGPW}@${RAYSYS_TEST_DB_HOST}:5432/shop"}},
    }))
    masked = mask_config(load_config(path))
    assert masked["data"]["source"]["url"] == f"postgresql://etl:***@{host}:5432/shop"
    assert masked["project"]["description"] == "reads with ***"
    message = f"FATAL: password {password} rejected by {host} (token {token})"
    assert mask_text(message) == f"FATAL: password *** rejected by {host} (token ***)"


def test_audit_events_are_written_masked(tmp_path):
    storage = Storage.open(str(tmp_path / "store"))
    key, note = secret("aws"), secret("note")
    remember(note)
    details = {"input": f"s3://AKIA1:{key}@bucket/in/", "n": 3}
    event = audit.record(storage, "predict.batch", details, actor="me", reason=f"{note} expired")
    assert event["input"] == "s3://AKIA1:***@bucket/in/" and event["reason"] == "*** expired"
    assert audit.read_audit(storage)[0]["input"] == "s3://AKIA1:***@bucket/in/"
    assert files_holding([tmp_path / "store"], [key, note]) == []


# --------------------------------------------------------------------------- real runs

ROWS = [{"id": i, "x": (i * 37 % 100) / 100, "plan": ["basic", "premium"][i % 2],
         "y": int((i * 37 % 100) / 100 + (i % 3) * 0.1 > 0.55)} for i in range(200)]
SCHEMA = {"id": {"type": "int", "unique": True}, "x": {"type": "float", "min": 0, "max": 1},
          "plan": {"type": "category", "allowed": ["basic", "premium"]},
          "y": {"type": "int", "allowed": [0, 1]}}
CREDENTIALS = {"header": secret("hdr"), "param": secret("prm"), "query": secret("qry")}


class RowsApi(Handler):
    """A JSON API that wants a key header, a token parameter and a signed URL; errors echo them."""

    def do_GET(self) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        given = (self.headers.get("X-Api-Key"), query.get("token"), query.get("sig"))
        if given != (CREDENTIALS["header"], CREDENTIALS["param"], CREDENTIALS["query"]):
            self.send(401, {"error": f"rejected key={given[0]} token={given[1]} sig={given[2]}"})
            return
        page, size = int(query["page"]), int(query["per_page"])
        self.send(200, {"data": ROWS[page * size:(page + 1) * size]})


@pytest.fixture(scope="module")
def rows_api():
    with serving(RowsApi) as server:
        yield server


def http_config(base: str, header: str = "${RAYSYS_TEST_API_KEY}") -> dict:
    source = {"kind": "http", "url": f"{base}/rows?sig={CREDENTIALS['query']}&v=1",
              "headers": {"X-Api-Key": header},
              "params": {"token": CREDENTIALS["param"], "region": "eu"},
              "pagination": {"style": "page", "page_size": 64, "first_page": 0},
              "max_retries": 0}
    return {"project": {"name": "secrets", "description": "owner ${RAYSYS_TEST_OWNER_TOKEN}"},
            "data": {"name": "rows", "source": source, "schema": {"columns": SCHEMA},
                     "label": "y", "task": "binary", "split": {"kind": "random", "seed": 0}},
            "features": {"exclude": ["id"]}, "model": {"type": "mlp", "hidden": [4]},
            "train": {"epochs": 1, "batch_size": 64, "seed": 0}, "tracking": {"wandb": True}}


@pytest.fixture()
def wandb_home(tmp_path, monkeypatch) -> Path:
    """W&B offline, with its config, cache and data folders under one folder to search."""
    home = tmp_path / "wandb-home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    return home


def test_http_ingest_and_training_leave_no_secret_on_disk(
    rows_api, write_config, tmp_path, monkeypatch, wandb_home, ray_session
):
    from raysys import System

    owner = secret("own")
    monkeypatch.setenv("RAYSYS_TEST_API_KEY", CREDENTIALS["header"])
    monkeypatch.setenv("RAYSYS_TEST_OWNER_TOKEN", owner)
    rs = System.from_config(write_config(http_config(rows_api.base)))
    ingested = rs.data.ingest()
    assert ingested.report["accepted"] == len(ROWS)
    trained = rs.models.train()

    source = ingested.manifest.source  # recorded, with the credentials masked
    assert source["url"] == f"{rows_api.base}/rows?sig=***&v=***"
    assert source["headers"] == {"X-Api-Key": MASK}
    assert source["params"] == {"token": MASK, "region": MASK}
    run = rs.models.run(trained.run_id)
    assert run["config"]["data"]["source"] == source
    assert run["config"]["project"]["description"] == "owner ***"
    root = tmp_path / "store"
    assert list(root.rglob("*.wandb")) and list(root.rglob("manifest.json"))
    assert files_holding([root, wandb_home], [*CREDENTIALS.values(), owner]) == []


def test_sql_ingest_leaves_no_password_on_disk(write_config, tmp_path, monkeypatch, ray_session):
    """On the PostgreSQL test server when there is one, else SQLite with a password in its URL."""
    from sqlalchemy.engine import make_url

    from raysys import System
    from raysys.data.sql import connection_factory

    pg = os.environ.get("RAYSYS_TEST_POSTGRES_URL")
    parsed = make_url(pg) if pg else None
    values = [tuple(row.values()) for row in ROWS]
    if parsed is not None and len(parsed.password or "") >= 12:  # .ci/postgres.sh's random one
        password, table = parsed.password, f"raysys_secrets_{uuid.uuid4().hex[:8]}"
        url = (f"postgresql://{parsed.username}:${{RAYSYS_TEST_DB_PASSWORD}}@{parsed.host}:"
               f"{parsed.port}/{parsed.database}")
        with connection_factory(pg)() as connection, connection.cursor() as cursor:  # commits
            cursor.execute(f"CREATE TABLE {table} (id INT, x DOUBLE PRECISION, plan TEXT, y INT)")
            cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", values)
    else:  # SQLite ignores the URI parameters it does not know
        password, table = secret("dbpw"), "rows"
        connection = sqlite3.connect(tmp_path / "shop.db")
        with connection:
            connection.execute("CREATE TABLE rows (id INTEGER, x REAL, plan TEXT, y INTEGER)")
            connection.executemany("INSERT INTO rows VALUES (?, ?, ?, ?)", values)
        connection.close()
        url = f"sqlite:///file:{tmp_path}/shop.db?uri=true&password=${{RAYSYS_TEST_DB_PASSWORD}}"
    monkeypatch.setenv("RAYSYS_TEST_DB_PASSWORD", password)
    config = {"data": {"name": "db", "source": {"kind": "sql", "url": url, "table": table},
                       "schema": {"columns": SCHEMA}}}
    try:
        ingested = System.from_config(write_config(config)).data.ingest()
    finally:
        if table != "rows":
            with connection_factory(pg)() as connection, connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE {table}")
    assert ingested.report["accepted"] == len(ROWS) and "***" in ingested.manifest.source["url"]
    assert files_holding([tmp_path / "store"], [password]) == []


def test_cli_error_line_for_a_rejected_request_holds_no_secret(rows_api, tmp_path):
    wrong = secret("wrong")  # the server answers 401 and echoes what it got
    cfg = {**http_config(rows_api.base), "storage": {"root": str(tmp_path / "store")},
           "ray": {"num_cpus": 1}}
    config = tmp_path / "raysys.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = clean_env(tmp_path / "home", RAYSYS_TEST_API_KEY=wrong, RAYSYS_TEST_OWNER_TOKEN="x")
    command = [str(Path(sys.executable).with_name("raysys")), "data", "ingest", "-c", str(config)]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: http source ") and "HTTP 401: " in error
    assert "rejected key=*** token=*** sig=***" in error
    output = done.stderr + done.stdout
    assert [value for value in (wrong, *CREDENTIALS.values()) if value in output] == []
    assert files_holding([tmp_path / "store"], [wrong, *CREDENTIALS.values()]) == []
