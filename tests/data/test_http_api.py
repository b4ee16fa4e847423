"""iter_pages against a real HTTP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from raysys.config import HttpSource, Pagination
from raysys.data.http_api import fetch_first_page, iter_pages, origin
from raysys.errors import SourceError

ITEMS = [{"id": i, "value": i * 10} for i in range(7)]


class Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def send(self, status: int, body, content_type: str = "application/json", headers=None):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.hits[path] += 1
        self.server.queries.append((path, query))
        hits = self.server.hits[path]
        if path == "/none":
            self.send(200, {"data": ITEMS[:3]})
        elif path == "/list":
            self.send(200, ITEMS[:2])
        elif path == "/paged":
            page, size = int(query["page"]), int(query["per_page"])
            self.send(200, {"data": ITEMS[page * size : (page + 1) * size]})
        elif path == "/cursor":
            start = int(query.get("cursor", 0))
            nxt = start + 3 if start + 3 < len(ITEMS) else None
            self.send(200, {"data": ITEMS[start : start + 3], "next_cursor": nxt})
        elif path.startswith("/api/v1/next"):
            start = int(query.get("offset", 0))
            nxt = f"next?offset={start + 3}" if start + 3 < len(ITEMS) else None  # relative link
            self.send(200, {"data": ITEMS[start : start + 3], "next": nxt})
        elif path == "/flaky":
            if hits <= 2:
                self.send(503, "try later", "text/plain")
            else:
                self.send(200, {"data": ITEMS[:1]})
        elif path == "/throttled":
            if hits == 1:
                self.send(429, "slow down", "text/plain", {"Retry-After": "0"})
            else:
                self.send(200, {"data": ITEMS[:1]})
        elif path == "/always500":
            self.send(500, "boom", "text/plain")
        elif path == "/slow":
            time.sleep(1.0)
            self.send(200, {"data": ITEMS})
        elif path == "/html":
            self.send(200, "<html><body>oops</body></html>", "text/html")
        elif path == "/wrongfield":
            self.send(200, {"items": ITEMS})
        elif path == "/notlist":
            self.send(200, {"data": {"id": 1}})
        elif path == "/auth":
            if self.headers.get("X-Api-Key") == "k1":
                self.send(200, {"data": ITEMS[:1]})
            else:
                self.send(401, {"error": "missing key"})
        elif path == "/loop":
            self.send(200, {"data": ITEMS[:1], "next_cursor": "same"})
        elif path == "/to-other":  # a next link to another origin (the test sets server.other)
            self.send(200, {"data": ITEMS[:1], "next": f"{self.server.other}/none"})
        elif path == "/redirect-other":
            self.send(302, "", "text/plain", {"Location": f"{self.server.other}/none"})
        elif path == "/redirect-same":
            self.send(302, "", "text/plain", {"Location": "/auth"})
        elif path == "/echo":  # a server that repeats the credentials it got in its error
            echoed = f"bad key {self.headers.get('X-Api-Key')} or token {query.get('token')}"
            self.send(401, {"error": echoed})
        else:
            self.send(404, "no such thing\nat all", "text/plain")


class ApiServer(ThreadingHTTPServer):
    hits: Counter
    queries: list


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[ApiServer]:
    """A real HTTP server on 127.0.0.1 in a thread (``.base`` is its URL, ``.hits`` per path)."""
    server = ApiServer(("127.0.0.1", 0), handler)
    server.hits, server.queries = Counter(), []
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def api():
    with serving(Handler) as server:
        yield server


@pytest.fixture
def other():
    """A second server: another origin (another port) than ``api``."""
    with serving(Handler) as server:
        yield server


def source(url: str, **kwargs) -> HttpSource:
    kwargs.setdefault("backoff_s", 0.01)
    return HttpSource(kind="http", url=url, **kwargs)


def collect(cfg: HttpSource) -> list[list[dict]]:
    return list(iter_pages(cfg))


def test_no_pagination(api):
    assert collect(source(api.base + "/none")) == [ITEMS[:3]]
    assert api.hits["/none"] == 1


def test_body_is_the_list(api):
    assert collect(source(api.base + "/list", records_field=None)) == [ITEMS[:2]]


def test_page_pagination_stops_at_short_page(api):
    pag = Pagination(style="page", page_size=3, first_page=0)
    pages = collect(source(api.base + "/paged", params={"q": "x"}, pagination=pag))
    assert pages == [ITEMS[0:3], ITEMS[3:6], ITEMS[6:7]]
    assert [q for _, q in api.queries] == [
        {"q": "x", "page": str(n), "per_page": "3"} for n in range(3)
    ]


def test_page_pagination_stops_at_empty_page(api):
    pag = Pagination(style="page", page_size=7, first_page=0)
    assert collect(source(api.base + "/paged", pagination=pag)) == [ITEMS]
    assert api.hits["/paged"] == 2  # the second page is empty


def test_cursor_pagination(api):
    pages = collect(source(api.base + "/cursor", pagination=Pagination(style="cursor")))
    assert pages == [ITEMS[0:3], ITEMS[3:6], ITEMS[6:7]]
    assert [q.get("cursor") for _, q in api.queries] == [None, "3", "6"]


def test_next_link_relative(api):
    pages = collect(source(api.base + "/api/v1/next", pagination=Pagination(style="next_link")))
    assert pages == [ITEMS[0:3], ITEMS[3:6], ITEMS[6:7]]
    assert [p for p, _ in api.queries] == ["/api/v1/next"] * 3


def test_max_pages_caps_every_style(api):
    for path, style in [("/paged", "page"), ("/cursor", "cursor"), ("/api/v1/next", "next_link")]:
        pag = Pagination(style=style, page_size=3, first_page=0, max_pages=2)
        assert collect(source(api.base + path, pagination=pag)) == [ITEMS[0:3], ITEMS[3:6]]
        assert api.hits[path] == 2


def test_repeating_cursor_is_an_error(api):
    with pytest.raises(SourceError, match="pagination loops"):
        collect(source(api.base + "/loop", pagination=Pagination(style="cursor")))


def test_headers_are_sent(api):
    assert collect(source(api.base + "/auth", headers={"X-Api-Key": "k1"})) == [ITEMS[:1]]
    with pytest.raises(SourceError, match="HTTP 401"):
        collect(source(api.base + "/auth"))


def test_flaky_endpoint_succeeds_after_retries(api):
    assert collect(source(api.base + "/flaky", max_retries=3)) == [ITEMS[:1]]
    assert api.hits["/flaky"] == 3


def test_429_with_retry_after_is_retried(api):
    assert fetch_first_page(source(api.base + "/throttled", max_retries=1)) == ITEMS[:1]
    assert api.hits["/throttled"] == 2


def test_always_500_fails_after_max_retries(api):
    start = time.monotonic()
    with pytest.raises(SourceError) as info:
        collect(source(api.base + "/always500", max_retries=2))
    assert str(info.value) == f"http source {api.base}/always500: HTTP 500 after 2 retries"
    assert api.hits["/always500"] == 3
    assert time.monotonic() - start < 2


def test_404_fails_at_once_with_excerpt(api):
    with pytest.raises(SourceError) as info:
        collect(source(api.base + "/nope", max_retries=3))
    message = str(info.value)
    assert message == f"http source {api.base}/nope: HTTP 404: no such thing at all"
    assert "\n" not in message
    assert api.hits["/nope"] == 1


def test_secret_query_values_are_masked(api):
    cfg = source(api.base + "/nope?api_key=hunter2", params={"token": "s3cr3t", "q": "ok"})
    with pytest.raises(SourceError) as info:
        collect(cfg)
    message = str(info.value)
    assert "hunter2" not in message and "s3cr3t" not in message
    assert "api_key=***" in message and "token=***" in message and "q=ok" in message


def test_slow_endpoint_times_out(api):
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"/slow: timed out$"):
        collect(source(api.base + "/slow", timeout_s=0.2, max_retries=0))
    assert time.monotonic() - start < 0.9


def test_non_json_body(api):
    with pytest.raises(SourceError, match=r"/html: invalid JSON \(text/html\)"):
        collect(source(api.base + "/html"))


def test_missing_records_field(api):
    with pytest.raises(SourceError) as info:
        collect(source(api.base + "/wrongfield"))
    assert str(info.value) == (
        f"http source {api.base}/wrongfield: records_field 'data' not in the JSON page (items)"
    )


def test_records_field_not_a_list(api):
    with pytest.raises(SourceError, match=r"/notlist: records_field 'data' is a dict, not a list"):
        collect(source(api.base + "/notlist"))
    with pytest.raises(SourceError, match="expected a JSON list"):
        collect(source(api.base + "/none", records_field=None))


def test_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SourceError) as info:
        collect(source(f"http://127.0.0.1:{port}/items", max_retries=1))
    assert str(info.value).startswith(f"http source http://127.0.0.1:{port}/items: connection failed")
    assert "Connection refused" in str(info.value)
    assert str(info.value).endswith("after 1 retries")


def test_next_link_to_another_origin_gets_no_headers(api, other):
    api.other = other.base
    nxt = Pagination(style="next_link")
    with pytest.raises(SourceError) as info:
        collect(source(api.base + "/to-other", headers={"X-Api-Key": "k1"}, pagination=nxt))
    assert str(info.value) == (
        f"http source {api.base}/to-other: the next link ('next') leads to {other.base}, another "
        f"origin than the source's {api.base}; refusing to send the source's headers there")
    assert other.hits["/none"] == 0
    # without credentials to protect, a link to another origin is followed
    assert collect(source(api.base + "/to-other", pagination=nxt)) == [ITEMS[:1], ITEMS[:3]]


def test_redirects_stay_within_the_origin_with_the_headers(api, other):
    api.other = other.base
    refused = rf"a redirect \(HTTP 302\) leads to {other.base}, another origin than the source's "
    with pytest.raises(SourceError, match=refused + api.base):
        collect(source(api.base + "/redirect-other", headers={"X-Api-Key": "k1"}))
    assert other.hits["/none"] == 0
    same = collect(source(api.base + "/redirect-same", headers={"X-Api-Key": "k1"}))
    assert same == [ITEMS[:1]] and api.hits["/auth"] == 1  # followed, and the key went along
    assert collect(source(api.base + "/redirect-other")) == [ITEMS[:3]]


def test_credentials_echoed_by_the_server_are_masked(api):
    cfg = source(api.base + "/echo", headers={"X-Api-Key": "hdr-4f9a1c77"},
                 params={"token": "tok-88d0e2b1"})
    with pytest.raises(SourceError) as info:
        collect(cfg)
    message = str(info.value)
    assert "HTTP 401" in message and "bad key *** or token ***" in message
    assert "4f9a1c77" not in message and "88d0e2b1" not in message


def test_origin_fills_in_default_ports_and_needs_a_host():
    assert origin("http://API.example.com/x?y=1") == origin("http://api.example.com:80/z")
    assert origin("https://h/x") == "https://h:443" != origin("http://h/x")
    assert origin("http://u:pw@[::1]:8080/x") == "http://[::1]:8080"
    with pytest.raises(SourceError, match=r"no scheme, host and port in 'http://u:\*\*\*@:99999/'"):
        origin("http://u:pw@:99999/")
