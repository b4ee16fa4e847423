"""SQL sources: the query to run, a connection probe, and a picklable DB-API connection factory.

URLs are SQLAlchemy URLs, shown with their password masked (:func:`raysys.secrets.mask_url`,
also in driver messages). ``postgresql://`` (and the legacy ``postgres://``) is rewritten to
``postgresql+psycopg://``: SQLAlchemy's default PostgreSQL driver is psycopg2, which raysys does
not install; psycopg 3 is. An explicit driver (``postgresql+psycopg2://``) is left alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from raysys.config import SqlSource
from raysys.errors import SourceError
from raysys.secrets import mask_text, mask_url, url_secrets

# Per backend, the DB-API connect() keyword for the connect timeout, and whether it takes an int.
_TIMEOUT_ARG: dict[str, tuple[str, bool]] = {
    "postgresql": ("connect_timeout", True),
    "mysql": ("connect_timeout", True),
    "mariadb": ("connect_timeout", True),
    "sqlite": ("timeout", False),
    "mssql": ("timeout", True),
}


def _parse(url: str) -> URL:
    """Parse and normalise a SQLAlchemy URL (postgresql -> postgresql+psycopg)."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as error:
        raise SourceError(f"sql source {mask_url(url)}: invalid URL ({error})") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def build_query(cfg: SqlSource) -> str:
    """``cfg.query`` (without a trailing ';'), or ``SELECT * FROM <table>`` quoted for the dialect.

    A dotted table name (``public.orders``) is quoted part by part; each part is quoted only when
    it needs it (mixed case, spaces, reserved words), with embedded quote characters escaped.
    """
    if cfg.query is not None:
        return cfg.query.strip().rstrip(";").rstrip()
    try:
        preparer = _parse(cfg.url).get_dialect()().identifier_preparer
    except (sa.exc.ArgumentError, ImportError) as error:  # unknown dialect
        raise SourceError(f"sql source {mask_url(cfg.url)}: cannot load the dialect: "
                          f"{_reason(error)}") from None
    return "SELECT * FROM " + ".".join(preparer.quote(part) for part in cfg.table.split("."))


def _reason(error: BaseException) -> str:
    """First line of the driver's message, without SQLAlchemy's wrapping."""
    orig = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def _sqlite_file(url: URL) -> Path | None:
    """The file a sqlite URL points at; None for in-memory or URI-mode databases."""
    db = url.database or ""
    if db in ("", ":memory:") or db.startswith("file:") or url.query.get("uri"):
        return None
    return Path(db)


def _engine(url: str, connect_timeout_s: float | None) -> sa.Engine:
    parsed = _parse(url)
    shown = mask_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None and not path.is_file():
            raise SourceError(f"sql source {shown}: database file not found: {path.absolute()}")
    connect_args: dict[str, Any] = {}
    arg = _TIMEOUT_ARG.get(parsed.get_backend_name())
    if connect_timeout_s is not None and arg and arg[0] not in parsed.query:
        connect_args[arg[0]] = max(1, math.ceil(connect_timeout_s)) if arg[1] else connect_timeout_s
    try:
        return sa.create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    except (sa.exc.ArgumentError, ImportError) as error:  # unknown dialect, driver missing
        raise SourceError(f"sql source {shown}: cannot load the driver: {_reason(error)}") from None


def _failure(url: str, stage: str, error: BaseException) -> SourceError:
    """One-line SourceError naming the masked URL; the URL's secrets are masked in the reason too."""
    reason = mask_text(_reason(error), url_secrets(url))
    return SourceError(f"sql source {mask_url(url)}: {stage}: {reason}")


def check_connection(cfg: SqlSource) -> None:
    """Connect and validate the query without fetching rows; SourceError (one line) on failure."""
    engine = _engine(cfg.url, cfg.connect_timeout_s)
    query = build_query(cfg)
    if engine.dialect.name in ("mssql", "oracle"):
        probe = f"SELECT * FROM (\n{query}\n) raysys_probe WHERE 1 = 0"
    else:  # the newlines keep a trailing -- comment in the query from eating the ')'
        probe = f"SELECT * FROM (\n{query}\n) AS raysys_probe LIMIT 0"
    db_error = (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error)
    try:
        try:
            raw = engine.raw_connection()
        except db_error as error:
            raise _failure(cfg.url, "cannot connect", error) from None
        try:  # a plain DB-API execute without parameters, as Ray's read_sql runs the query
            cursor = raw.cursor()
            cursor.execute(probe)
            cursor.close()
        except db_error as error:
            raise _failure(cfg.url, "query failed", error) from None
        finally:
            raw.close()
    finally:
        engine.dispose()


class SqlConnectionFactory:
    """Picklable zero-argument callable returning a raw DB-API connection (for Ray's read_sql).

    Only the URL string and timeout are pickled; each call opens a fresh connection, which the
    caller owns and closes.
    """

    def __init__(self, url: str, connect_timeout_s: float | None = None):
        self.url = url
        self.connect_timeout_s = connect_timeout_s

    def __call__(self) -> Any:
        engine = _engine(self.url, self.connect_timeout_s)
        try:
            proxied = engine.raw_connection()
        except (sa.exc.SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as error:  # unwrapped
            raise _failure(self.url, "cannot connect", error) from None
        proxied.detach()  # hand the driver connection over; the pool no longer owns it
        connection = proxied.dbapi_connection
        engine.dispose()
        return connection

    def __repr__(self) -> str:
        return f"SqlConnectionFactory({mask_url(self.url)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SqlConnectionFactory) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((self.url, self.connect_timeout_s))


def connection_factory(url: str, connect_timeout_s: float | None = None) -> SqlConnectionFactory:
    """A picklable callable returning a new raw DB-API connection to ``url``."""
    return SqlConnectionFactory(url, connect_timeout_s)
