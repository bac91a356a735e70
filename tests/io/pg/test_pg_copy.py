"""Arrow to PostgreSQL column types and CREATE TABLE (no database)."""

from psycopg import sql

from beam_e5.io.pg.copy import create_table_sql, pg_columns
from beam_e5.io.sinks import vectors_schema


def test_table_columns_follow_the_vectors_schema():
    schema = vectors_schema(384, "float32", ("collection", "text"), {})
    assert pg_columns(schema) == [("id", "text"), ("embedding", "vector(384)"),
                                  ("text_sha256", "text"), ("tokens", "integer"),
                                  ("doc_id", "text"), ("chunk", "integer"),
                                  ("chunks", "integer"), ("char_start", "bigint"),
                                  ("char_end", "bigint"), ("tokens_cut", "integer"),
                                  ("collection", "text"), ("text", "text")]
    assert pg_columns(vectors_schema(8, "float16", (), {}))[1] == ("embedding", "halfvec(8)")
    statement = create_table_sql(sql.Identifier("s", "t"), pg_columns(schema)[:2],
                                 unlogged=True).as_string(None)
    assert statement == 'CREATE UNLOGGED TABLE "s"."t" ("id" text NOT NULL, ' \
                        '"embedding" vector(384) NOT NULL)'
