"""A real PostgreSQL server with pgvector for the tests, from the ``pgserver`` wheel.

``pg_server`` (session) starts one server in a fresh temporary directory, listening on a unix
socket only (no TCP port), and stops it and deletes its data at the end of the session.
``pg_database`` (per test) creates a fresh database with the ``vector`` extension on it and
yields its URI; the database is dropped afterwards.

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
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest


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
    name = "t_" + uuid.uuid4().hex[:12]
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    uri = with_database(admin, name)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    try:
        yield uri
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
