"""Read records from a paginated JSON HTTP API (plain ``requests``, no Ray).

``iter_pages`` yields the record list of each page; every failure is a one-line ``SourceError``
naming the request URL, with the source's secrets (header values, secret-looking parameters, a
URL password) masked, also where the server echoes them back.

The source's headers go to the source's origin (scheme, host, port) only: a ``next_link`` or a
redirect to another origin is refused with an error naming both origins, rather than followed
with the credentials (``requests`` itself would keep every header but ``Authorization``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from raysys.config import HttpSource
from raysys.errors import SourceError
from raysys.secrets import mask_text, mask_url, source_secrets

MAX_DELAY_S = 30.0
MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL (default ports filled in); SourceError if it has none."""
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a bad port or IPv6 literal
        host = port = None
    if not (host and port):
        raise SourceError(f"http source: no scheme, host and port in {mask_url(url)!r}")
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def check_origin(cfg: HttpSource, url: str, how: str) -> None:
    """Refuse to send the source's headers to another origin than its URL's."""
    if not cfg.headers:
        return
    source, target = origin(cfg.url), origin(url)
    if target != source:
        raise SourceError(f"http source {mask_url(cfg.url)}: {how} leads to {target}, another "
                          f"origin than the source's {source}; refusing to send the source's "
                          f"headers there")


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _connection_reason(error: requests.RequestException) -> str:
    if isinstance(error, requests.Timeout):
        return "timed out"
    found = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(error))
    return f"connection failed ({found.group(0).strip() if found else type(error).__name__})"


def _retry_after(response: requests.Response) -> float | None:
    try:
        return min(max(float(response.headers.get("Retry-After", "")), 0.0), MAX_DELAY_S)
    except ValueError:
        return None


def _get_json(
    session: requests.Session, cfg: HttpSource, url: str, params: dict[str, Any]
) -> tuple[Any, str]:
    """GET one page with retries; return (parsed JSON body, final URL)."""
    try:
        full = requests.Request("GET", url, params=params).prepare().url or url
    except requests.RequestException as error:  # no scheme, bad host
        raise SourceError(f"http source {mask_url(url)}: invalid URL "
                          f"({type(error).__name__})") from None
    where = f"http source {mask_url(full)}"
    for attempt in range(cfg.max_retries + 1):
        delay = min(cfg.backoff_s * 2**attempt, MAX_DELAY_S)
        try:
            response = _get_following(session, cfg, url, params)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
            reason = _connection_reason(error)
        except requests.RequestException as error:
            raise SourceError(f"{where}: {_one_line(mask_text(str(error)))}") from None
        else:
            status = response.status_code
            if status == 429 or status >= 500:
                reason = f"HTTP {status}"
                wait = _retry_after(response)
                delay = delay if wait is None else wait
            elif status >= 400:
                excerpt = _one_line(response.text)
                raise SourceError(f"{where}: HTTP {status}" + (f": {excerpt}" if excerpt else ""))
            else:
                try:
                    return response.json(), response.url
                except ValueError:
                    kind = response.headers.get("Content-Type", "no content type")
                    raise SourceError(
                        f"{where}: invalid JSON ({kind}): {_one_line(response.text, 80)!r}"
                    ) from None
        if attempt < cfg.max_retries:
            time.sleep(delay)
    retries = f" after {cfg.max_retries} retries" if cfg.max_retries else ""
    raise SourceError(f"{where}: {reason}{retries}")


def _get_following(
    session: requests.Session, cfg: HttpSource, url: str, params: dict[str, Any]
) -> requests.Response:
    """GET, following redirects within the source's origin only (:func:`check_origin`)."""
    response = session.get(url, params=params, headers=cfg.headers, timeout=cfg.timeout_s,
                           allow_redirects=False)
    for _ in range(MAX_REDIRECTS):
        location = response.headers.get("Location")
        if response.status_code not in _REDIRECTS or not location:
            return response
        target = urljoin(response.url, location)
        check_origin(cfg, target, f"a redirect (HTTP {response.status_code})")
        response = session.get(target, headers=cfg.headers, timeout=cfg.timeout_s,
                               allow_redirects=False)
    raise requests.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


def _records(body: Any, cfg: HttpSource, page_url: str) -> list[dict]:
    where = f"http source {mask_url(page_url)}"
    field = cfg.records_field
    if field is None:
        records = body
        if not isinstance(records, list):
            raise SourceError(f"{where}: expected a JSON list (records_field is null), "
                              f"got {type(body).__name__}")
    else:
        if not isinstance(body, dict) or field not in body:
            keys = ", ".join(list(body)[:10]) if isinstance(body, dict) else type(body).__name__
            raise SourceError(f"{where}: records_field '{field}' not in the JSON page ({keys})")
        records = body[field]
        if not isinstance(records, list):
            raise SourceError(f"{where}: records_field '{field}' is a "
                              f"{type(records).__name__}, not a list")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise SourceError(f"{where}: record {i} is a {type(record).__name__}, not an object")
    return records


def iter_pages(cfg: HttpSource, session: requests.Session | None = None) -> Iterator[list[dict]]:
    """Yield the records of each page, following ``cfg.pagination``; empty pages are skipped."""
    try:
        yield from _pages(cfg, session)
    except SourceError as error:  # a server may echo a header or parameter back in its answer
        raise SourceError(mask_text(str(error), source_secrets(cfg.model_dump()))) from None


def _pages(cfg: HttpSource, session: requests.Session | None) -> Iterator[list[dict]]:
    own_session = session is None
    session = session or requests.Session()
    pag = cfg.pagination
    url, params = cfg.url, dict(cfg.params)
    page, fetched, seen = pag.first_page, 0, set()
    try:
        while True:
            if pag.style == "page":
                params.update({pag.page_param: page, pag.size_param: pag.page_size})
            body, page_url = _get_json(session, cfg, url, params)
            records = _records(body, cfg, page_url)
            if records:
                yield records
            fetched += 1
            if pag.style == "none" or (pag.max_pages and fetched >= pag.max_pages):
                return
            if pag.style == "page":
                if len(records) < pag.page_size:
                    return
                page += 1
                continue
            key = pag.cursor_field if pag.style == "cursor" else pag.next_field
            value = body.get(key) if isinstance(body, dict) else None
            if value is None or value == "":
                return
            if (key, str(value)) in seen:
                raise SourceError(f"http source {mask_url(page_url)}: pagination loops "
                                  f"('{key}' repeats a value)")
            seen.add((key, str(value)))
            if pag.style == "cursor":
                params[pag.cursor_param] = value
            else:  # next_link: the link carries its own query string
                url, params = urljoin(page_url, str(value)), {}
                check_origin(cfg, url, f"the next link ('{key}')")
    finally:
        if own_session:
            session.close()


def fetch_first_page(cfg: HttpSource) -> list[dict]:
    """The records of the first page only: a quick reachability and format probe."""
    pages = iter_pages(cfg)
    try:
        return next(pages, [])
    finally:
        pages.close()
