"""Secrets never leave the config: one place that masks them before anything leaves the process.

What counts as a secret, and where it is masked (pure functions, no Ray, no I/O):

- **URLs** (SQLAlchemy and HTTP, in config values and in free text): the password of the
  userinfo (``postgresql://u:***@host/db``; ``@``, ``/``, ``?`` and ``#`` inside a password are
  covered the way SQLAlchemy and urllib read them), a bare username of an http(s) URL (a token
  in practice: ``https://***@host``), and the values of secret-looking query and fragment keys.
- **The HTTP source** (in manifests and run records): every header value and every ``params``
  value, and every query value of its URL (keys stay). An API's credential parameter can have
  any name (``code``, ``k``, ``hash``); the keys and the config file are enough to see what was
  asked. The values of secret-looking headers and parameters are also remembered
  (:func:`remember`) and scrubbed from later messages, where a server may echo them.
- **Environment values**: a ``${VAR}`` whose name looks secret (``PGPW``, ``API_TOKEN``,
  ``DB_PASSWORD``…) is remembered when the config is loaded (:func:`remember_env`), and its value
  is scrubbed wherever it appears, also inside error messages.
- **Free text** (error messages, run errors, audit reasons): known secret values, URLs as above,
  ``name=value`` pairs whose name looks secret, and ``Bearer`` tokens.

Known values shorter than :data:`MIN_SCRUB_LENGTH` are masked where they stand in a config
(a whole value, a URL password, a header) but not cut out of free text, where they would
mangle unrelated words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

MASK = "***"
MIN_SCRUB_LENGTH = 4

_SECRET_NAME = re.compile(
    r"pass|pw|secret|token|key|auth|sig|cred|cookie|session|private|bearer|jwt", re.IGNORECASE
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_PAIR_IN_TEXT = re.compile(r"\b([A-Za-z_][\w.-]*)=([^\s&'\",;)]+)")
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_API_KEY = re.compile(r"\brsk_[0-9a-f]{8}_[A-Za-z0-9_-]{8,}")  # raysys API keys (raysys.access)
_SA_USERINFO = re.compile(r"([^:/?#@\s]*):([^@\s]*)@")  # SQLAlchemy: a password ends at the 1st @
_BARE_USERINFO = re.compile(r"([^\s:/@]*:)([^\s@/]*)@")  # u:pw@host in a string that is no URL
_HTTP_SCHEMES = {"http", "https", "ws", "wss"}

_known: set[str] = set()  # secret values seen in this process (config env values, source secrets)


def looks_secret(name: str) -> bool:
    """Whether a key, header or variable name looks like it holds a credential."""
    return bool(_SECRET_NAME.search(name))


def remember(*values: Any) -> None:
    """Add values to the secrets this process scrubs from text (also their URL-encoded forms)."""
    _known.update(_forms(values))


def _forms(values: Iterable[Any]) -> set[str]:
    """The values as written, URL-decoded and URL-encoded (empty ones and the mask left out)."""
    forms = set()
    for value in values:
        if isinstance(value, str) and value and value != MASK:
            forms |= {value, unquote(value), unquote_plus(value), quote(value, safe=""),
                      quote_plus(value, safe="")}
    return forms


def remember_env(name: str, value: str) -> None:
    """Remember the value of an expanded ``${name}`` if the variable's name looks secret."""
    if looks_secret(name):
        remember(value)


def mask_url(url: str, all_query: bool = False) -> str:
    """The URL with its password, http(s) token user and secret query values replaced by ***.

    ``all_query`` masks every query value, not only those of secret-looking keys.
    """
    prefix, userinfo, rest = _split_url(url)
    if not prefix:  # no scheme: a typo or a fragment of a URL; any u:pw@ in it
        rest = _BARE_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", rest)
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        shown = f"{user}:{MASK if password else ''}" if colon else MASK if userinfo else ""
        prefix = f"{prefix}{shown}@"
    return prefix + "".join(
        f"{key}={MASK}" if masked else part for part, key, masked in _query_parts(rest, all_query)
    )


def url_secrets(url: str) -> set[str]:
    """The secret parts of a URL that :func:`mask_url` masks, as written in the URL."""
    prefix, userinfo, rest = _split_url(url)
    found = {value for _, value, masked in _query_parts(rest, False, values=True) if masked}
    if not prefix:
        found |= {match.group(2) for match in _BARE_USERINFO.finditer(rest)}
    if userinfo is not None:
        _, colon, password = userinfo.partition(":")
        found.add(password if colon else userinfo)
    return {value for value in found if value}


def _split_url(url: str) -> tuple[str, str | None, str]:
    """(scheme and ``//``, the userinfo to mask or None, the rest after the userinfo's ``@``).

    The userinfo of a non-http(s) URL is masked only if it has a password (a database user
    name is not a secret); an http(s) URL's bare user name is (``https://TOKEN@host``).
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return "", None, url
    prefix, rest = scheme.group(0), url[scheme.end():]
    is_http = prefix[:-3].lower() in _HTTP_SCHEMES
    netloc_end = next((i for i, ch in enumerate(rest) if ch in "/?#"), len(rest))
    at = rest.rfind("@", 0, netloc_end)  # urllib: the last @ of the netloc
    if at >= 0:
        userinfo, after = rest[:at], rest[at + 1:]
    else:
        found = None if is_http else _SA_USERINFO.match(rest)
        if not found:  # SQLAlchemy reads a password up to the first @, across / ? and #
            return prefix, None, rest
        userinfo, after = rest[: found.end() - 1], rest[found.end():]
    if ":" not in userinfo and not is_http:
        return f"{prefix}{userinfo}@", None, after
    return prefix, userinfo, after


def _query_parts(text: str, all_query: bool, values: bool = False) -> list[tuple[str, str, bool]]:
    """``text`` cut into (piece, its key or value, masked?) around its query and fragment pairs."""
    cut = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=-1)
    if cut < 0:
        return [(text, "", False)]
    parts = [(text[: cut + 1], "", False)]
    for piece in re.split(r"([&;#])", text[cut + 1:]):
        key, equals, value = piece.partition("=")
        masked = bool(equals and value and (all_query or looks_secret(unquote_plus(key))))
        parts.append((piece, value if values else key, masked))
    return parts


def mask_text(text: str, extra: Iterable[str] = ()) -> str:
    """Free text (an error message, a log line) with every secret raysys can recognise masked.

    ``extra`` adds values to scrub besides the ones this process remembers.
    """
    text = _scrub(text, _known | _forms(extra))
    text = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
    text = _PAIR_IN_TEXT.sub(
        lambda m: f"{m.group(1)}={MASK}" if looks_secret(m.group(1)) else m.group(0), text
    )
    return _API_KEY.sub(MASK, _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text))


def _scrub(text: str, values: set[str]) -> str:
    """Replace the known values found in ``text``, the longest first."""
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= MIN_SCRUB_LENGTH and value in text:
            text = text.replace(value, MASK)
    return text


def source_secrets(source: Mapping[str, Any]) -> set[str]:
    """The secret values a source config holds: header values, secret-looking params, URL parts."""
    headers = source.get("headers") or {}
    found = {str(v) for k, v in headers.items() if looks_secret(k)}
    found |= {str(v).split()[-1] for k, v in headers.items() if looks_secret(k) and str(v).split()}
    found |= {str(v) for k, v in (source.get("params") or {}).items() if looks_secret(k)}
    if isinstance(source.get("url"), str):
        found |= url_secrets(source["url"])
    return {value for value in found if value and value != MASK}


def mask_source(source: Mapping[str, Any]) -> dict[str, Any]:
    """A data source's description with its secrets masked (for manifests and run records)."""
    masked = dict(source)
    remember(*source_secrets(source))
    is_http = source.get("kind") == "http"
    if isinstance(masked.get("headers"), Mapping):
        masked["headers"] = {k: MASK for k in masked["headers"]}
    if isinstance(masked.get("params"), Mapping):
        masked["params"] = {k: MASK for k in masked["params"]}
    if isinstance(masked.get("url"), str):
        masked["url"] = mask_url(masked["url"], all_query=is_http)
    return mask_values(masked)


def mask_values(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string run through
    :func:`mask_text`, and strings equal to a known secret replaced whole, whatever their length."""
    if isinstance(value, Mapping):
        return {key: mask_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_values(item) for item in value]
    if isinstance(value, str):
        return MASK if value in _known else mask_text(value)
    return value


def mask_config(config: Any) -> dict[str, Any]:
    """The config (a ``SystemConfig`` or its dict form) as it may leave the process, masked."""
    dump = getattr(config, "model_dump", None)
    data = dict(dump(mode="json", by_alias=True) if dump else config)
    section = data.get("data")
    if isinstance(section, Mapping) and isinstance(section.get("source"), Mapping):
        data["data"] = {**section, "source": mask_source(section["source"])}
    return mask_values(data)
