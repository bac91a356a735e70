"""psycopg connections to a real PostgreSQL (pgserver; no mocks)."""

from __future__ import annotations

from beam_e5.io.pg.connection import connect


def test_connections_get_keepalives_unless_the_uri_sets_them(pg_database):
    with connect(pg_database + "&keepalives_idle=7") as conn:
        params = conn.info.get_parameters()
        assert params["keepalives_idle"] == "7" and params["keepalives_interval"] == "10"
        assert conn.execute("SHOW application_name").fetchone()[0] == "beam-e5"
