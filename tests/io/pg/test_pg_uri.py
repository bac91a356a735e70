"""postgresql:// outputs: URI parsing and password redaction (no database)."""

import pytest

from beam_e5.errors import ConfigError
from beam_e5.io.pg.uri import is_pg_uri, parse_pg_uri, redact


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
    ("postgresql://u@h/db?table=" + "x" * 35, "at most 34"),
    ("postgresql://u@h/db?table=beam_e5_published", "metadata table"),
    ("postgresql://u:pw@h?table=docs", "names no database"),
])
def test_bad_uris_fail_with_a_message_that_says_what_to_do(uri, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_pg_uri(uri)
    assert ":pw@" not in str(err.value)


def test_the_longest_name_leaves_room_for_every_run_table_suffix():
    from beam_e5.io.pg.uri import MAX_NAME

    name = "x" * MAX_NAME
    assert parse_pg_uri(f"postgresql://u@h/db?table={name}").name == name
    for kind in ("r", "load_", "carry_", "rej_"):
        assert len(f"{name}__{kind}20261204174035_5a1192") <= 63  # PostgreSQL's limit


def test_is_pg_uri():
    assert is_pg_uri("postgresql://x/y") and is_pg_uri("POSTGRES://x/y")
    assert not is_pg_uri("out/") and not is_pg_uri("gs://b/x") and not is_pg_uri(None)


def test_keyword_form_splits_table_and_redacts():
    t = parse_pg_uri("host=/run/pg dbname=vectors user=app password='a b\\'c' table=s.docs")
    assert (t.schema, t.name) == ("s", "docs")
    assert t.dsn == "host=/run/pg dbname=vectors user=app password='a b\\'c'"
    assert t.redacted == "host=/run/pg dbname=vectors user=app password=***"
    assert t.secrets == ("a b'c",) and "a b" not in repr(t)
    assert is_pg_uri("host=x dbname=y") and not is_pg_uri("out=dir") and not is_pg_uri("out/")


@pytest.mark.parametrize("password", ["p#w", "p?w", "p:w", "p&w", "p=w", "pñw€"])
def test_characters_libpq_reads_raw_in_a_uri_password_are_kept(password):
    t = parse_pg_uri(f"postgresql://u:{password}@h/db?sslmode=require&table=docs")
    assert t.name == "docs" and t.dsn == f"postgresql://u:{password}@h/db?sslmode=require"
    assert t.redacted == "postgresql://u:***@h/db?sslmode=require"
    assert password in t.secrets and t.scrub(f"x {password} y") == "x *** y"


@pytest.mark.parametrize("password", ["p/w", "p@w", "p%w", "p%zzw", "p w", "p/w?x@y"])
def test_a_uri_password_libpq_would_misread_is_refused_with_how_to_encode(password):
    with pytest.raises(ConfigError, match="percent-encode") as err:
        parse_pg_uri(f"postgresql://u:{password}@h:5432/db?table=docs")
    message = str(err.value)
    assert password not in message and "pw" not in message.replace("PASSWORD", "")
    assert "postgresql://u:***@" in message


def test_redact_hides_up_to_the_last_at_when_the_uri_is_ambiguous():
    assert redact("postgresql://u:a@b/c@h/db?table=x") == "postgresql://u:***@h/db?table=x"
    assert redact("postgresql://h/db?password=a&b&sslmode=require") == \
        "postgresql://h/db?password=***&sslmode=require"
    assert redact("host=h password='unterminated") == "host=h password=***"


def test_scrub_takes_pgpassword_from_the_environment(monkeypatch):
    from beam_e5.io.pg.uri import scrub, secrets_of

    monkeypatch.setenv("PGPASSWORD", "envpw")
    assert scrub("a envpw b pw", ("pw",)) == "a *** b ***"
    assert secrets_of("postgresql://u:p%40ss@h/db") == ("p%40ss", "p@ss")


def test_an_empty_password_scrubs_nothing():
    from beam_e5.io.pg.uri import scrub, secrets_of

    assert secrets_of("postgresql://postgres:@/db?host=/tmp") == ()
    assert scrub("NaN not allowed", ("",)) == "NaN not allowed"
