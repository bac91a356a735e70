"""postgresql:// outputs: URI parsing, password redaction, config validation (no database)."""

import pytest

from beam_e5.cli import main
from beam_e5.errors import ConfigError
from beam_e5.io.pg.uri import is_pg_uri, parse_pg_uri, redact
from beam_e5.io.pgvector import PgSinkConfig, create_table_sql, pg_columns
from beam_e5.io.sinks import vectors_schema


def test_tcp_uri_splits_table_from_the_libpq_dsn():
    t = parse_pg_uri("postgresql://app:s3cret@db.internal:5433/vectors?sslmode=require"
                     "&table=docs")
    assert t.name == "docs" and t.schema is None
    assert t.dsn == "postgresql://app:s3cret@db.internal:5433/vectors?sslmode=require"
    assert t.redacted == "postgresql://app:***@db.internal:5433/vectors?sslmode=require"
    assert "s3cret" not in repr(t) and "s3cret" not in str(t)


def test_unix_socket_uri_and_schema_qualified_table():
    t = parse_pg_uri("postgresql://app@/vectors?host=/cloudsql/p:r:i&table=search.docs")
    assert (t.schema, t.name) == ("search", "docs")
    assert t.dsn == "postgresql://app@/vectors?host=/cloudsql/p:r:i"
    assert t.redacted == t.dsn  # nothing to hide


def test_redact_hides_password_parameters_too():
    assert redact("postgres://u@h/db?password=pw&sslpassword=k&sslmode=verify-full") == \
        "postgres://u@h/db?password=***&sslpassword=***&sslmode=verify-full"
    assert redact("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert redact("gs://bucket/dir") == "gs://bucket/dir" and redact(None) == ""


@pytest.mark.parametrize("uri, message", [
    ("postgresql://u@h/db", "names no table"),
    ("postgresql://u@h/db?table=", "names no table"),
    ("postgresql://u@h/db?table=a&table=b", "names no table"),
    ("postgresql://u@h/db?table=Docs", "lower-case SQL identifier"),
    ("postgresql://u@h/db?table=docs;drop", "lower-case SQL identifier"),
    ("postgresql://u@h/db?table=" + "x" * 37, "at most 36"),
    ("postgresql://u@h/db?table=beam_e5_published", "metadata table"),
    ("postgresql://u:pw@h?table=docs", "names no database"),
])
def test_bad_uris_fail_with_a_message_that_says_what_to_do(uri, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_pg_uri(uri)
    assert ":pw@" not in str(err.value)


def test_is_pg_uri():
    assert is_pg_uri("postgresql://x/y") and is_pg_uri("POSTGRES://x/y")
    assert not is_pg_uri("out/") and not is_pg_uri("gs://b/x") and not is_pg_uri(None)


@pytest.mark.parametrize("kwargs, message", [
    ({"report_dir": ""}, "needs --report-dir"),
    ({"report_dir": "postgresql://u@h/db"}, "not a database"),
    ({"index": "flat"}, "--index must be one of"),
    ({"hnsw_m": 1}, "--hnsw-m must be between"),
    ({"hnsw_m": 16, "hnsw_ef_construction": 20}, "at least twice"),
    ({"ivfflat_lists": -1}, "--ivfflat-lists"),
    ({"batch_rows": 0}, "--batch-rows must be at least 1"),
    ({"maintenance_work_mem": "lots"}, "memory size"),
])
def test_sink_config_validation(kwargs, message):
    args = {"report_dir": "reports/", **kwargs}
    with pytest.raises(ConfigError, match=message):
        PgSinkConfig("postgresql://u@h/db?table=docs", **args)


def test_manifest_options_never_hold_the_password():
    cfg = PgSinkConfig("postgresql://u:hunter2@h/db?table=docs", "r/")
    assert "hunter2" not in repr(cfg.options()) and "hunter2" not in repr(cfg)


def test_table_columns_follow_the_vectors_schema():
    schema = vectors_schema(384, "float32", ("collection", "text"), {})
    assert pg_columns(schema) == [("id", "text"), ("embedding", "vector(384)"),
                                  ("text_sha256", "text"), ("tokens", "integer"),
                                  ("doc_id", "text"), ("chunk", "integer"),
                                  ("chunks", "integer"), ("char_start", "bigint"),
                                  ("char_end", "bigint"), ("tokens_cut", "integer"),
                                  ("collection", "text"), ("text", "text")]
    assert pg_columns(vectors_schema(8, "float16", (), {}))[1] == ("embedding", "halfvec(8)")
    sql = create_table_sql('"s"."t"', pg_columns(schema)[:2], unlogged=True)
    assert sql == 'CREATE UNLOGGED TABLE "s"."t" ("id" text NOT NULL, "embedding" vector(384) ' \
                  'NOT NULL)'


BASE = ["embed", "--input", "data/sample/corpus.jsonl", "--model", "m"]


@pytest.mark.parametrize("extra, message", [
    (["--output", "out/", "--index", "hnsw"], "--index applies to a postgresql:// --output"),
    (["--output", "out/", "--store-text"], "--store-text applies to a postgresql://"),
    (["--output", "postgresql://u:pw@h/db?table=docs"], "needs --report-dir"),
    (["--output", "postgresql://u:pw@h/db?table=docs", "--report-dir", "r/", "--publish", "p"],
     "drop --publish"),
    (["--output", "postgresql://u:pw@h/db?table=docs", "--report-dir", "r/",
      "--keep-fields", "text", "--store-text"], "drop one of them"),
])
def test_cli_misconfigurations_exit_2_before_anything_runs(extra, message, capsys):
    assert main(BASE + extra) == 2
    err = capsys.readouterr().err
    assert message in err and ":pw@" not in err


def test_reembed_previous_must_be_the_output_uri(capsys):
    args = ["reembed", "--input", "data/sample/corpus.jsonl", "--model", "m",
            "--report-dir", "r/", "--output", "postgresql://u:pw@h/db?table=docs"]
    assert main(args + ["--previous", "postgresql://u:pw@h/db?table=other"]) == 2
    assert "differs from --output" in capsys.readouterr().err
    assert main(args + ["--previous", "snapshots/LATEST"]) == 2
    assert "must be the same URI" in capsys.readouterr().err
    assert main(["reembed", "--input", "x.jsonl", "--model", "m", "--output", "out/",
                 "--previous", "postgresql://u@h/db?table=docs"]) == 2
    assert "--output must be the same URI" in capsys.readouterr().err
