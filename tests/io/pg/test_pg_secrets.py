"""No password reaches a user: real CLI runs against a real PostgreSQL that checks passwords.

The role of ``pg_password_database`` logs in with scram-sha-256 over the unix socket, so a
password that libpq reads wrongly fails as it would on a real server. Every password holds
the characters that break URIs (``#?/@%:&=`` and a space) and non-ASCII ones, and is made
of three distinctive words (``Xyl0ph``, ``Qu4rtz``, ``Fj0rdk``) so that a leak of any PART of
it (libpq turning what follows an unencoded ``@`` into a host name) is caught too. After
each run, every log record (caplog, at DEBUG), stdout and stderr, every file under the
report directory and the manifest recorded in the database are searched for each word.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from beam_e5.cli import main
from beam_e5.io.pg.uri import parse_pg_uri

WORDS = ("Xyl0ph", "Qu4rtz", "Fj0rdk")
SPECIALS = "#?/@%:&= "
NON_ASCII = "ñ€"


def _password(sep: str) -> str:
    return sep.join(WORDS)


ALL = _password(SPECIALS + NON_ASCII)  # every hostile character at once


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    docs = [{"id": f"d{i}", "text": f"document number {i} about secrets", "src": "x"}
            for i in range(3)]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def _run(output: str, corpus: Path, report: Path, model: str) -> int:
    return main(["--verbose", "embed", "--input", str(corpus), "--model", model,
                 "--max-length", "32", "--keep-fields", "src", "--store-text", "--output", output,
                 "--report-dir", str(report)])


def _everything(report: Path, capsys, caplog, db=None) -> str:
    """Every stream and file the run produced, and what it recorded in the database."""
    out, err = capsys.readouterr()
    parts = [out, err] + [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    parts += [str(r.args) for r in caplog.records]
    if report.exists():
        parts += [p.read_text(errors="replace") for p in report.rglob("*") if p.is_file()
                  and not p.name.endswith(".parquet")]
        parts += [p.read_bytes().decode("latin-1") for p in report.rglob("*.parquet")]
    if db is not None:
        with psycopg.connect(db.admin_uri.replace("/postgres?", f"/{db.dbname}?")) as conn:
            rows = conn.execute("SELECT manifest::text FROM beam_e5_published").fetchall() \
                if conn.execute("SELECT to_regclass('beam_e5_published')").fetchone()[0] \
                else []
            parts += [r[0] for r in rows]
    return "\n".join(parts)


def _assert_no_word(text: str) -> None:
    for word in WORDS:
        assert word not in text, f"{word!r} (part of the password) was printed or written"


def _uri(db, password_part: str) -> str:
    return (f"postgresql://{db.role}{password_part}@/{db.dbname}?host={db.socket_dir}"
            "&table=docs")


@pytest.mark.parametrize("sep", list(SPECIALS) + [NON_ASCII])
def test_unencoded_uri_passwords_are_read_right_or_refused_unprinted(
        sep, pg_password_database, corpus, tmp_path, tiny_models, capsys, caplog):
    """libpq reads '#?:&=' and non-ASCII in a URI password as written (beam-e5 splits the
    URI the way libpq does, so ``table=`` is found and the run connects); '/', '@', '%' and
    a space it cannot read as meant: refused before the run, with how to percent-encode."""
    caplog.set_level(logging.DEBUG)
    db, password = pg_password_database, _password(sep)
    db.set_password(password)
    report = tmp_path / "report"
    code = _run(_uri(db, ":" + password), corpus, report, tiny_models("bert", "e5-small-v2"))
    text = _everything(report, capsys, caplog, db)
    if sep in "/@% ":
        assert code == 2 and "percent-encode" in text and not report.exists()
    else:
        assert code == 0, text[-2000:]
        assert json.loads((report / "manifest.json").read_text())["counts"]["written"] == 3
    _assert_no_word(text)


@pytest.mark.parametrize("form", ["uri-encoded", "keyword", "PGPASSWORD", "pgpass"])
def test_every_way_of_giving_a_password_runs_and_prints_none(
        form, pg_password_database, corpus, tmp_path, tiny_models, capsys, caplog,
        monkeypatch):
    caplog.set_level(logging.DEBUG)
    db = pg_password_database
    db.set_password(ALL)
    output = _uri(db, "")
    if form == "uri-encoded":
        output = _uri(db, ":" + quote(ALL, safe=""))
    elif form == "keyword":
        escaped = ALL.replace("\\", "\\\\").replace("'", "\\'")
        output = (f"host={db.socket_dir} dbname={db.dbname} user={db.role} "
                  f"password='{escaped}' table=docs")
    elif form == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", ALL)
    else:
        passfile = tmp_path / "pgpass"
        escaped = ALL.replace("\\", "\\\\").replace(":", "\\:")
        passfile.write_text(f"*:*:{db.dbname}:{db.role}:{escaped}\n")
        passfile.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(passfile))
    report = tmp_path / "report"
    code = _run(output, corpus, report, tiny_models("bert", "e5-small-v2"))
    text = _everything(report, capsys, caplog, db)
    assert code == 0, text[-2000:]
    manifest = json.loads((report / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 3
    assert manifest["output"] == parse_pg_uri(output).redacted
    _assert_no_word(text)


@pytest.mark.parametrize("form", ["uri", "keyword"])
def test_a_wrong_password_is_one_line_without_it(form, pg_password_database, corpus, tmp_path,
                                                 tiny_models, capsys, caplog):
    """The server refuses; libpq's message reaches the user scrubbed of the password."""
    caplog.set_level(logging.DEBUG)
    db = pg_password_database
    db.set_password("the-right-one")
    output = (_uri(db, ":" + quote(ALL, safe="")) if form == "uri" else
              f"host={db.socket_dir} dbname={db.dbname} user={db.role} password='{ALL}' "
              "table=docs")
    report = tmp_path / "report"
    assert _run(output, corpus, report, tiny_models("bert", "e5-small-v2")) == 2
    text = _everything(report, capsys, caplog)
    assert "cannot connect to" in text and "password authentication failed" in text
    assert not report.exists()
    _assert_no_word(text)
