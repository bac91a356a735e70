"""A real PostgreSQL server with pgvector for the tests, from the ``pgserver`` wheel.

``pg_server`` (session) starts one server in a fresh temporary directory, listening on a unix
socket only (no TCP port), and stops it and deletes its data at the end of the session.
``pg_database`` (per test) creates a fresh database with the ``vector`` extension on it and
yields its URI; the database is dropped afterwards. ``pg_password_database`` is the same
for a role that must authenticate with a password (pgserver otherwise trusts every local
connection, so a password would never be checked).

Running as root (as CI does): PostgreSQL's ``initdb`` and ``postgres`` refuse to run as root.
pgserver handles this itself, as documented in its ``PostgresServer``: when the effective
uid is 0 it runs ``initdb``/``pg_ctl`` as the system user ``pgserver`` (created with
``useradd`` if missing) and makes the data and binary directories readable to it. We only
have to put the data directory where that user can reach it: a ``tempfile.mkdtemp`` folder
under the system temp dir (pytest's own tmp folders are mode 0700 for root, and pgserver
would widen their permissions).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (harmless:
        warnings.simplefilter("ignore")  # pgserver then keeps its lock file in /tmp/runtime-UID)
        import pgserver

    root = Path(tempfile.mkdtemp(prefix="beam-e5-pg-"))
    server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def with_database(uri: str, database: str) -> str:
    """``uri`` (pgserver's ``postgresql://postgres:@/postgres?host=DIR``) for another db."""
    head, _, query = uri.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")


@pytest.fixture
def pg_database(pg_server) -> Iterator[str]:
    """A fresh database with the vector extension; yields its libpq URI (unix socket)."""
    yield from _fresh_database(pg_server, "")


@pytest.fixture
def pg_latin1_database(pg_server) -> Iterator[str]:
    """The same in LATIN1: a server that refuses characters outside Latin-1 at COPY."""
    yield from _fresh_database(pg_server, " ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                                          "TEMPLATE template0")


def _fresh_database(pg_server, options: str) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{options}')
    uri = with_database(admin, name)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    try:
        yield uri
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class PasswordDatabase:
    """A database owned by a role that must log in with a password (scram-sha-256)."""

    socket_dir: str
    dbname: str
    role: str
    admin_uri: str

    def set_password(self, password: str) -> None:
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(self.role), sql.Literal(password)))


@pytest.fixture
def pg_password_database(pg_server) -> Iterator[PasswordDatabase]:
    """A fresh database (with ``vector``) whose owner role authenticates by password.

    pgserver trusts every local connection, which would never send a password; a line put
    first in ``pg_hba.conf`` makes this one role on this one database use scram-sha-256 over
    the unix socket, so a wrong or mangled password fails as it would on a real server.
    """
    suffix = uuid.uuid4().hex[:10]
    role, name = f"pw_{suffix}", f"tpw_{suffix}"
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                 sql.Identifier(role)))
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
    with psycopg.connect(with_database(admin, name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    line = f"local {name} {role} scram-sha-256\n"
    hba.write_text(line + hba.read_text())
    _reload(admin)
    socket_dir = admin.partition("?host=")[2]
    _wait_for_password_auth(f"host={socket_dir} dbname={name} user={role}")
    try:
        yield PasswordDatabase(socket_dir, name, role, admin)
    finally:
        hba.write_text(hba.read_text().replace(line, ""))
        _reload(admin)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _wait_for_password_auth(dsn: str) -> None:
    """pg_reload_conf() only signals the server: wait until the new line is in force."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            psycopg.connect(dsn, password="").close()
        except psycopg.OperationalError:
            return
        time.sleep(0.05)
    raise RuntimeError("pg_hba.conf reload did not take effect in 10 s")


def _reload(admin: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
