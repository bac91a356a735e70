"""PostgreSQL outputs: take beam-e5's ``table`` out of a libpq connection string, redact it.

``--output`` takes a libpq connection string in either of libpq's two forms, plus one
parameter of ours, ``table``: the stable name (``name`` or ``schema.name``) that readers query.

* URI: ``postgresql://USER@HOST:PORT/DB?table=NAME`` (or the unix-socket form
  ``postgresql://USER@/DB?host=/socket/dir&table=NAME``);
* keyword/value: ``host=HOST port=5432 dbname=DB user=USER table=NAME``.

Every other parameter (``host``, ``sslmode``, ``connect_timeout``, ...) is libpq's and passed
through unchanged. Passwords are best left out (``PGPASSWORD``, ``~/.pgpass``, ``PGPASSFILE``,
which libpq reads itself); one in the string is accepted but never logged or written anywhere.

How a password stays out of messages:

* the string is split the way libpq splits it (a URI's user info ends at the first ``@``
  before any ``/``; ``#`` and ``?`` are plain characters there), then the rest is checked by
  libpq's own parser (``psycopg.conninfo.conninfo_to_dict``), so what is connected to is what
  was checked;
* a string libpq reads differently from what its author meant (an unencoded ``@`` makes part
  of the password the host name, an unencoded ``/`` the database name) or cannot read (a
  ``%`` not followed by two hex digits, a space) is refused with a message that shows it
  through :func:`redact` (which, on such a string, hides everything up to the LAST ``@``)
  and says how to percent-encode; libpq's own text is passed on only with every quoted part
  (where it repeats the input) replaced;
* :attr:`PgTarget.secrets` holds the password strings, so that every driver message can be
  scrubbed of them (:func:`scrub`) before it reaches a user.

Pure functions, no database access; libpq's parser is imported only to check a string.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import unquote

from beam_e5.errors import ConfigError

__all__ = ["META_TABLE", "PG_SCHEMES", "PgTarget", "is_pg_uri", "parse_pg_uri", "redact",
           "scrub", "secrets_of"]

PG_SCHEMES = ("postgresql://", "postgres://")
TABLE_PARAM = "table"
META_TABLE = "beam_e5_published"  # beam-e5's record of what each name serves: not a NAME
# Run tables are named NAME__rYYYYmmddHHMMSS_xxxxxx and NAME__carry_YYYYmmddHHMMSS_xxxxxx (the
# longest suffix, 29 characters; also __load_, __rej_): 63 bytes is PostgreSQL's identifier
# limit, past which it cuts names, and a cut name escapes the clean-up of leftover tables.
RUN_SUFFIX = len("__carry_") + len("YYYYmmddHHMMSS_xxxxxx")
MAX_NAME = 63 - RUN_SUFFIX
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
SECRET_PARAMS = frozenset({"password", "sslpassword", "oauth_client_secret",
                           "scram_client_key", "scram_server_key"})
# libpq's connection keywords (PQconndefaults of libpq 18) and ours: a string starting with
# one of them followed by '=' is a keyword/value connection string, not a directory
KEYWORDS = frozenset({
    "application_name", "channel_binding", "client_encoding", "connect_timeout", "dbname",
    "fallback_application_name", "gssdelegation", "gssencmode", "gsslib", "host", "hostaddr",
    "keepalives", "keepalives_count", "keepalives_idle", "keepalives_interval", "krbsrvname",
    "load_balance_hosts", "max_protocol_version", "min_protocol_version", "oauth_client_id",
    "oauth_issuer", "oauth_scope", "options", "passfile", "port", "replication",
    "require_auth", "requirepeer", "service", "ssl_max_protocol_version",
    "ssl_min_protocol_version", "sslcert", "sslcertmode", "sslcompression", "sslcrl",
    "sslcrldir", "sslkey", "sslkeylogfile", "sslmode", "sslnegotiation", "sslrootcert",
    "sslsni", "target_session_attrs", "tcp_user_timeout", "user", TABLE_PARAM}) | SECRET_PARAMS
_KEYWORD_START = re.compile(r"^\s*([A-Za-z_]+)\s*=")
ENCODE_HINT = ("in a URI, percent-encode the user name and password (@ as %40, / as %2F, % as "
               "%25, a space as %20: python3 -c 'import sys, urllib.parse; "
               "print(urllib.parse.quote(sys.argv[1], safe=\"\"))' PASSWORD), or better, leave "
               "the password out and put it in PGPASSWORD or ~/.pgpass")


def is_pg_uri(value: Optional[str]) -> bool:
    """A PostgreSQL connection string: a ``postgresql://`` URI or libpq keyword/value form."""
    if not value:
        return False
    if value.strip().lower().startswith(PG_SCHEMES):
        return True
    start = _KEYWORD_START.match(value)
    return bool(start) and start.group(1) in KEYWORDS


def _is_uri(value: str) -> bool:
    return value.strip().lower().startswith(PG_SCHEMES)


@dataclass(frozen=True)
class PgTarget:
    """A parsed connection string: where to connect and which name to publish."""

    dsn: str  # the libpq string without beam-e5's parameters (may hold a password: never log)
    name: str  # the stable name readers query
    schema: Optional[str] = None  # None: the connection's current_schema()
    redacted: str = ""  # the string for logs and manifests: every password replaced by ***
    secrets: tuple[str, ...] = field(default=(), compare=False)  # to scrub from messages

    def scrub(self, text: str) -> str:
        """``text`` (a driver message) without any password this target knows of."""
        return scrub(text, self.secrets)

    def __repr__(self) -> str:  # dataclass repr would print the password
        return f"PgTarget({self.redacted!r}, name={self.name!r}, schema={self.schema!r})"

    __str__ = __repr__


# ---- URI form, split the way libpq splits it
@dataclass(frozen=True)
class _Uri:
    scheme: str  # "postgresql://"
    userinfo: Optional[str]  # raw "user[:password]", None when there is no '@'
    rest: str  # raw host[:port][/db], before the query
    params: tuple[tuple[str, Optional[str]], ...]  # raw query parameters, in order

    def text(self, params: tuple[tuple[str, Optional[str]], ...], hide: bool = False) -> str:
        user = self.userinfo
        if hide and user is not None and ":" in user:
            user = user.split(":", 1)[0] + ":***"
        query = "&".join(k if v is None else f"{k}={'***' if hide and k in SECRET_PARAMS else v}"
                         for k, v in params)
        return (self.scheme + (f"{user}@" if user is not None else "") + self.rest
                + (f"?{query}" if query else ""))


def _split_uri(uri: str) -> _Uri:
    """libpq's split: user info up to the first '@' met before any '/', query after '?'."""
    scheme_end = uri.index("://") + 3
    scheme, body = uri[:scheme_end], uri[scheme_end:]
    stop = re.search(r"[@/]", body)
    userinfo = None
    if stop is not None and stop.group() == "@":
        userinfo, body = body[:stop.start()], body[stop.end():]
    rest, _, query = body.partition("?")
    params = tuple((k, v if sep else None)
                   for k, sep, v in (p.partition("=") for p in query.split("&") if p))
    return _Uri(scheme, userinfo, rest, params)


def _uri_secrets(parts: _Uri) -> list[str]:
    found = [v for k, v in parts.params if k in SECRET_PARAMS and v]
    if parts.userinfo and ":" in parts.userinfo:
        found.append(parts.userinfo.split(":", 1)[1])
    return [s for s in found + [unquote(s) for s in found] if s]


def _redact_unparsed_uri(uri: str) -> str:
    """A URI libpq may read wrongly: everything between ``user:`` and the LAST '@' hidden,
    and a secret parameter's value up to the next known ``&keyword=``."""
    scheme_end = uri.find("://") + 3
    head, body = uri[:scheme_end], uri[scheme_end:]
    userinfo, at, rest = body.rpartition("@")
    if at and ":" in userinfo:
        body = userinfo.split(":", 1)[0] + ":***@" + rest
    keys = "|".join(sorted(KEYWORDS))
    secrets_ = "|".join(sorted(SECRET_PARAMS))
    body = re.sub(rf"([?&](?:{secrets_})=).*?(?=&(?:{keys})=|$)", r"\1***", body, flags=re.S)
    return head + body


# ---- keyword/value form, tokenised like libpq's conninfo_parse
class _Unreadable(ValueError):
    pass


def _keyword_value(text: str, i: int) -> tuple[str, int]:
    """The value starting at ``text[i]``: single-quoted or bare, backslash escapes."""
    quoted = i < len(text) and text[i] == "'"
    i += quoted
    out = []
    while i < len(text):
        ch = text[i]
        if (quoted and ch == "'") or (not quoted and ch.isspace()):
            return "".join(out), i + quoted
        if ch == "\\" and i + 1 < len(text):
            i += 1
            ch = text[i]
        out.append(ch)
        i += 1
    if quoted:
        raise _Unreadable("unterminated quoted string")
    return "".join(out), i


def _keyword_pairs(text: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return pairs
        key = re.match(r"[^=\s]*", text[i:]).group()
        i += len(key)
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text) or text[i] != "=":
            raise _Unreadable('a key without "=" (a value holding spaces must be quoted)')
        i += 1
        while i < len(text) and text[i].isspace():
            i += 1
        value, i = _keyword_value(text, i)
        pairs.append((key, value))


def _quote_value(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _keyword_text(pairs: list[tuple[str, str]], hide: bool = False) -> str:
    return " ".join(f"{k}={'***' if hide and k in SECRET_PARAMS else _quote_value(v)}"
                    for k, v in pairs)


def _redact_unparsed_keywords(text: str) -> str:
    """A keyword string that cannot be read: from the first secret keyword on, hidden."""
    secret = re.search(rf"(?<![A-Za-z_])(?:{'|'.join(sorted(SECRET_PARAMS))})\s*=", text)
    return text if secret is None else text[:secret.end()] + "***"


# ---- checks against libpq's own parser
def _libpq_params(dsn: str, shown: str) -> dict[str, str]:
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # pragma: no cover - the pg extra is part of the test install
        raise ConfigError("a PostgreSQL --output needs psycopg 3 and pgvector: pip install "
                          "'beam-e5[pg]'") from None
    try:
        return conninfo_to_dict(dsn)
    except Exception as e:  # noqa: BLE001 - psycopg.ProgrammingError: libpq refused the string
        reason = re.sub(r'".*"', '"..."', str(e).strip().splitlines()[0], flags=re.S)
        raise ConfigError(f"libpq cannot read the connection string {shown} ({reason}); "
                          f"{ENCODE_HINT}") from None


def _check_libpq_reading(params: dict[str, str], shown: str) -> None:
    """Refuse what libpq reads differently from what was meant (an unencoded '@' or '/')."""
    for key in ("host", "dbname", "port"):
        if "@" in params.get(key, ""):
            raise ConfigError(f"libpq reads part of {shown} as the {key}: there is an '@' or "
                              f"'/' in the user name or password that is not percent-encoded; "
                              f"{ENCODE_HINT}")


def _check_ident(value: str, what: str) -> str:
    if not _IDENT.match(value) or len(value) > MAX_NAME:
        raise ConfigError(f"{what} {value!r} must be a lower-case SQL identifier (letters, digits, "
                          f"_; not starting with a digit) of at most {MAX_NAME} characters; "
                          "fix the table= parameter of --output")
    return value


def _name_and_schema(tables: list[str], shown: str) -> tuple[str, Optional[str]]:
    if len(tables) != 1 or not tables[0]:
        raise ConfigError(f"{shown} names no table: add table=NAME (the table or view that "
                          "readers query), e.g. postgresql://user@host:5432/db?table=docs")
    schema, _, name = tables[0].rpartition(".")
    schema = _check_ident(schema, "schema") if schema else None
    name = _check_ident(name, "table")
    if name == META_TABLE:
        raise ConfigError(f"table={META_TABLE} is beam-e5's own metadata table; choose "
                          "another name")
    return name, schema


def _parse_uri(uri: str) -> PgTarget:
    parts = _split_uri(uri)
    shown = redact(uri)
    # libpq ended the user info at an earlier '@' (or, after a '/', never saw it)
    if "@" in parts.rest or any("@" in k for k, _ in parts.params):
        raise ConfigError(f"{shown} holds an '@' after the user info: there is an '@' or '/' "
                          f"in the user name or password that is not percent-encoded (a '@' "
                          f"in a database name must be too); {ENCODE_HINT}")
    tables = [unquote(v or "") for k, v in parts.params if k == TABLE_PARAM]
    name, schema = _name_and_schema(tables, shown)
    rest = tuple(p for p in parts.params if p[0] != TABLE_PARAM)
    dsn = parts.text(rest)
    params = _libpq_params(dsn, shown)
    _check_libpq_reading(params, shown)
    if not params.get("dbname"):
        raise ConfigError(f"{shown} names no database: postgresql://USER@HOST:PORT/DB"
                          "?table=NAME")
    secrets_ = set(_uri_secrets(parts)) | {params[k] for k in SECRET_PARAMS if params.get(k)}
    return PgTarget(dsn, name, schema, parts.text(rest, hide=True), tuple(sorted(secrets_)))


def _parse_keywords(text: str) -> PgTarget:
    shown = redact(text)
    try:
        pairs = _keyword_pairs(text)
    except _Unreadable as e:
        raise ConfigError(f"cannot read the connection string {shown} ({e}); quote a value "
                          "holding spaces or quotes as 'va\\'lue', or put the password in "
                          "PGPASSWORD or ~/.pgpass") from None
    name, schema = _name_and_schema([v for k, v in pairs if k == TABLE_PARAM], shown)
    rest = [(k, v) for k, v in pairs if k != TABLE_PARAM]
    dsn = _keyword_text(rest)
    params = _libpq_params(dsn, shown)
    if not params.get("dbname"):
        raise ConfigError(f"{shown} names no database: add dbname=DB")
    return PgTarget(dsn, name, schema, _keyword_text(rest, hide=True), secrets_of(dsn))


def parse_pg_uri(uri: str) -> PgTarget:
    """Split ``uri`` into the libpq string and beam-e5's ``table`` parameter; validate both."""
    if not is_pg_uri(uri):
        raise ConfigError(f"{redact(uri)!r} is not a postgresql:// URI nor a libpq "
                          "keyword/value connection string")
    text = uri.strip()
    return _parse_uri(text) if _is_uri(text) else _parse_keywords(text)


def redact(uri: Optional[str]) -> str:
    """``uri`` with every password hidden, whether or not it can be parsed."""
    if not uri:
        return ""
    text = uri.strip()
    if _is_uri(text):
        parts = _split_uri(text)
        # a second '@' (or one after a '/') means an unencoded '@' or '/' in the user info
        # (or an '@' in the query: rare, and then hiding too much is the safe side)
        clean = text.count("@") == (parts.userinfo is not None) and \
            all(v is not None for _, v in parts.params)
        return parts.text(parts.params, hide=True) if clean else _redact_unparsed_uri(text)
    if is_pg_uri(text):
        try:
            return _keyword_text(_keyword_pairs(text), hide=True)
        except _Unreadable:
            return _redact_unparsed_keywords(text)
    return uri


def secrets_of(dsn: str) -> tuple[str, ...]:
    """The password strings in a connection string (as written and decoded), to scrub."""
    text = dsn.strip()
    if _is_uri(text):
        return tuple(sorted(set(_uri_secrets(_split_uri(text)))))
    try:
        return tuple(sorted({v for k, v in _keyword_pairs(text) if k in SECRET_PARAMS and v}))
    except _Unreadable:
        return ()


def scrub(text: str, secrets_: tuple[str, ...] = ()) -> str:
    """``text`` with each of ``secrets_`` and ``$PGPASSWORD`` replaced by ``***``."""
    known = {s for s in secrets_ if s} | (
        {os.environ["PGPASSWORD"]} if os.environ.get("PGPASSWORD") else set())
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
