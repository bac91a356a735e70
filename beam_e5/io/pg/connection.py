"""psycopg connections for the pgvector output, and the one place psycopg is imported.

psycopg and the pgvector adapter are the ``pg`` extra (``pip install 'beam-e5[pg]'``): a
Parquet run imports this package's modules without them, so they are imported here under a
guard, and :func:`connect` (the way in to every statement) says how to install them.
The other modules take :data:`sql` (``psycopg.sql``) from here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from beam_e5.errors import ConfigError
from beam_e5.io.pg.uri import scrub, secrets_of

try:
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
except ImportError:  # pragma: no cover - the pg extra is part of the test install
    psycopg = register_vector = sql = conninfo_to_dict = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["CONNECTION_DEFAULTS", "PgError", "connect", "register_types", "scrubbed", "sql"]

# TCP keepalives and a connect timeout unless the URI sets its own: the launcher's connection
# (holding the lock) sits idle for as long as the pipeline runs. Text goes as UTF-8 (what
# Python holds), so a character the database's encoding lacks is the server's refusal of
# that one row (SQLSTATE 22P05), not an encoding error in the client.
CONNECTION_DEFAULTS = {"client_encoding": "UTF8", "connect_timeout": "30", "keepalives": "1",
                       "keepalives_idle": "60", "keepalives_interval": "10",
                       "keepalives_count": "6",
                       "application_name": "beam-e5"}


class PgError(RuntimeError):
    """A database error whose text was scrubbed of every password the run knows of.

    libpq repeats parts of a connection string in some of its messages; the driver's own
    exception (and its text) is never chained to this one, so no traceback shows it.
    """

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@contextmanager
def scrubbed(secrets: tuple[str, ...]) -> Iterator[None]:
    """Re-raise any psycopg error inside as a :class:`PgError` without the ``secrets``."""
    try:
        yield
    except Exception as e:
        if psycopg is None or not isinstance(e, psycopg.Error):
            raise
        text = scrub(str(e).strip(), secrets)
        raise PgError(f"{type(e).__name__}: {text}", getattr(e, "sqlstate", None)) from None


def _require_psycopg() -> None:
    if psycopg is None or register_vector is None:
        raise ConfigError("a postgresql:// output needs psycopg 3 and pgvector: pip install "
                          "'beam-e5[pg]'")


def register_types(conn: Connection[Any]) -> None:
    """Teach ``conn`` pgvector's types (``vector``, ``halfvec``); the extension must exist."""
    _require_psycopg()
    register_vector(conn)


def connect(dsn: str, autocommit: bool = True, register: bool = True) -> Connection[Any]:
    """A psycopg connection with the pgvector types registered (``vector``, ``halfvec``)."""
    _require_psycopg()
    with scrubbed(secrets_of(dsn)):
        given = conninfo_to_dict(dsn)
        libpq_params = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
        conn = psycopg.connect(dsn, autocommit=autocommit, **libpq_params)
        if register:
            register_vector(conn)
    return conn
