"""The PostgreSQL/pgvector output, one module per concern.

* :mod:`~beam_e5.io.pg.uri`: parse and redact ``postgresql://...?table=NAME`` (pure functions).

This package imports nothing, so that reading a URI does not load psycopg or Beam.
"""
