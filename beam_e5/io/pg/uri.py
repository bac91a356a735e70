"""``postgresql://`` outputs: parse beam-e5's ``table`` parameter out of a libpq URI, redact it.

``--output 'postgresql://USER@HOST:PORT/DB?table=NAME'`` (or the unix-socket form
``postgresql://USER@/DB?host=/socket/dir&table=NAME``) is a libpq connection URI plus one
parameter of ours, ``table``: the stable name (``name`` or ``schema.name``) that readers
query. Every other parameter (``host``, ``sslmode``, ``connect_timeout``, ...) is libpq's and
passed through unchanged. Passwords are best left out of the URI (``PGPASSWORD``,
``~/.pgpass``, ``PGPASSFILE``, which libpq reads itself); one in the URI is accepted but never
logged or written anywhere: :func:`redact` replaces it.

Pure functions, no database access.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from beam_e5.errors import ConfigError

__all__ = ["META_TABLE", "PG_SCHEMES", "PgTarget", "is_pg_uri", "parse_pg_uri", "redact"]

PG_SCHEMES = ("postgresql://", "postgres://")
TABLE_PARAM = "table"
META_TABLE = "beam_e5_published"  # beam-e5's record of what each name serves: not a NAME
# Run tables are named NAME__rYYYYmmddHHMMSS_xxxxxx (and __load_/__carry_ variants): 63 bytes
# is PostgreSQL's identifier limit, so the stable name keeps room for the suffix.
MAX_NAME = 36
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_SECRET_PARAMS = ("password", "sslpassword")


def is_pg_uri(value: Optional[str]) -> bool:
    return bool(value) and value.strip().lower().startswith(PG_SCHEMES)


@dataclass(frozen=True)
class PgTarget:
    """A parsed ``postgresql://...?table=NAME``: where to connect and which name to publish."""

    dsn: str  # the libpq URI without beam-e5's parameters (may hold a password: never log it)
    name: str  # the stable name readers query
    schema: Optional[str] = None  # None: the connection's current_schema()

    @property
    def redacted(self) -> str:
        """The URI for logs and manifests: any password replaced by ``***``."""
        return redact(self.dsn)

    def __repr__(self) -> str:  # dataclass repr would print the password
        return f"PgTarget({self.redacted!r}, name={self.name!r}, schema={self.schema!r})"

    __str__ = __repr__


def _check_ident(value: str, what: str) -> str:
    if not _IDENT.match(value) or len(value) > MAX_NAME:
        raise ConfigError(f"{what} {value!r} must be a lower-case SQL identifier (letters, digits, "
                          f"_; not starting with a digit) of at most {MAX_NAME} characters; "
                          "fix the table= parameter of --output")
    return value


def parse_pg_uri(uri: str) -> PgTarget:
    """Split ``uri`` into the libpq DSN and beam-e5's ``table`` parameter; validate both."""
    if not is_pg_uri(uri):
        raise ConfigError(f"{redact(uri)!r} is not a postgresql:// URI")
    parts = urlsplit(uri.strip())
    params = parse_qsl(parts.query, keep_blank_values=True)
    tables = [v for k, v in params if k == TABLE_PARAM]
    if len(tables) != 1 or not tables[0]:
        raise ConfigError(f"{redact(uri)} names no table: add ?table=NAME (the table or view that "
                          "readers query), e.g. postgresql://user@host:5432/db?table=docs")
    schema, _, name = tables[0].rpartition(".")
    schema = _check_ident(schema, "schema") if schema else None
    name = _check_ident(name, "table")
    if name == META_TABLE:
        raise ConfigError(f"table={META_TABLE} is beam-e5's own metadata table; choose "
                          "another name")
    rest = [(k, v) for k, v in params if k != TABLE_PARAM]
    if not parts.path.strip("/"):
        raise ConfigError(f"{redact(uri)} names no database: postgresql://USER@HOST:PORT/DB"
                          "?table=NAME")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest, safe="/:"),
                      parts.fragment))
    return PgTarget(dsn=dsn, name=name, schema=schema)


def redact(uri: Optional[str]) -> str:
    """``uri`` with the password (in the user-info or a ``password=`` parameter) hidden."""
    if not uri:
        return ""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k in _SECRET_PARAMS else v) for k, v in pairs],
                          safe="/:*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
