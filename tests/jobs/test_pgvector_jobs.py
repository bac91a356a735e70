"""`beam-e5 embed` / `reembed` into PostgreSQL end to end (real server via pgserver, no mocks).

* reembed after 5% edits, 2% deletions, 3% additions: exact counts, carried rows byte-identical
  (copied inside the database), only the new and changed texts reach the model;
* reembed of chunked long documents: every row of an unchanged document (its window rows
  DOCID#N and its document row) carried inside the database byte for byte, a changed one's
  rows all replaced, a deleted one's all gone, counts in documents;
* a run killed (SIGKILL) in the middle of its load, then rerun: a concurrent reader of the
  stable name sees the previous table or the new one, never a mix, and no id twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from realtext import write_nightly_corpora

from beam_e5.cli import main
from beam_e5.io.pg.connection import connect
from tools.localtext import build_local_corpus, write_jsonl

pytestmark = pytest.mark.slow
FAST = ["--max-length", "32"]
SECRET = "hunter2-do-not-log"


def _with_password(uri: str) -> str:
    # pgserver's postgres user has trust auth: a password in the URI is sent to no one, but
    # it is in the URI, so it must not reach a log, the manifest or the database
    return uri.replace("postgresql://postgres:@", f"postgresql://postgres:{SECRET}@", 1)


def _table_rows(uri: str, table: str) -> dict[str, tuple]:
    with connect(uri) as conn:
        rows = conn.execute(f'SELECT id, embedding, text_sha256, tokens FROM "{table}"')
        return {r[0]: (r[1].to_numpy().tobytes(), r[2], r[3]) for r in rows}


def _published(uri: str) -> tuple[str, str, dict]:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT table_name, previous_table, manifest FROM beam_e5_published "
                            "WHERE name = 'docs'").fetchone()


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("pg-reembed")
    return (root, *write_nightly_corpora(root))


def test_reembed_into_the_published_table(corpora, pg_database, tiny_models, tmp_path,
                                          capsys, caplog):
    root, edited, deleted, new = corpora
    model = tiny_models("bert", "e5-small-v2")
    out = _with_password(pg_database) + "&table=docs"
    # one row per document here (truncate); chunked documents: test_reembed_chunked_documents
    common = ["--model", model, "--keep-fields", "collection", "--store-text",
              "--long-text", "truncate"] + FAST
    caplog.set_level(logging.DEBUG)
    assert main(["reembed", "--input", str(root / "v2.jsonl"), "--previous", out, "--output",
                 out, "--report-dir", str(tmp_path / "r0")] + common) == 2
    assert "nothing is published under docs yet" in capsys.readouterr().err
    assert main(["embed", "--input", str(root / "v1.jsonl"), "--output", out,
                 "--report-dir", str(tmp_path / "r1")] + common) == 0
    first, _, _ = _published(pg_database)
    assert main(["reembed", "--input", str(root / "v2.jsonl"), "--previous", out,
                 "--output", out, "--report-dir", str(tmp_path / "r2")] + common) == 0

    m = json.loads((tmp_path / "r2" / "manifest.json").read_text())
    c = m["counts"]
    assert (c["carried"], c["reembedded"], c["new"], c["deleted"]) == (930, 50, 30, 20)
    assert c["read"] == 1010 == c["written"] + c["exact_duplicates"] + c["invalid"]
    assert m["stats"]["texts_embedded"] == 80  # only new and changed texts reach the model
    assert c["embedded"] == 80
    assert m["pg"]["rows_carried_in_db"] == 930 and m["pg"]["rows_loaded"] == 80

    current, previous, stored = _published(pg_database)
    assert previous == first and stored["counts"] == c
    old, cur = _table_rows(pg_database, first), _table_rows(pg_database, current)
    with connect(pg_database) as conn:  # the view readers query is the new table
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM docs").fetchone() == \
            (1010, 1010)
        texts = dict(conn.execute("SELECT id, text FROM docs WHERE id = ANY(%s)",
                                  (sorted(edited),)).fetchall())
    assert set(cur) == (set(old) - deleted) | new
    assert all(t.endswith(" (revised)") for t in texts.values()) and len(texts) == 50
    for doc_id, row in cur.items():
        if doc_id not in edited and doc_id not in new:
            assert row == old[doc_id]  # byte-identical vector, same key and tokens
        elif doc_id in edited:
            assert row[1] != old[doc_id][1]

    # another model signature (here a longer max length): nothing can be carried
    assert main(["reembed", "--input", str(root / "v2.jsonl"), "--previous", out, "--output",
                 out, "--report-dir", str(tmp_path / "r3"), "--model", model, "--keep-fields",
                 "collection", "--store-text", "--long-text", "truncate",
                 "--max-length", "48"]) == 0
    c3 = json.loads((tmp_path / "r3" / "manifest.json").read_text())["counts"]
    assert (c3["carried"], c3["reembedded"] + c3["new"], c3["deleted"]) == (0, 1010, 0)

    # the password is in the URI only: not in the manifest, the database, or any log line
    seen = (capsys.readouterr().out + capsys.readouterr().err + caplog.text
            + (tmp_path / "r1" / "manifest.json").read_text()
            + (tmp_path / "r2" / "manifest.json").read_text() + json.dumps(stored)
            + (tmp_path / "r3" / "manifest.json").read_text())
    assert SECRET not in seen and "postgres:***@" in seen


def test_kill_during_load_then_rerun_readers_never_see_a_mix(corpora, pg_database, tiny_models,
                                                             tmp_path):
    root, *_ = corpora
    model = tiny_models("bert", "e5-small-v2")
    big = build_local_corpus(3000, seed=4, max_chars=600, duplicate_fraction=0.02)
    write_jsonl(big, tmp_path / "big.jsonl")
    out = pg_database + "&table=docs"
    assert main(["embed", "--input", str(root / "v1.jsonl"), "--output", out, "--report-dir",
                 str(tmp_path / "r1"), "--model", model] + FAST) == 0

    query = ("SELECT count(*), md5(string_agg(id || ':' || text_sha256, ',' ORDER BY id)) "
             "FROM docs")
    with psycopg.connect(pg_database) as conn:
        before = conn.execute(query).fetchone()
    seen: list[tuple] = []
    failures: list[str] = []
    stop = threading.Event()

    def reader() -> None:  # queries the stable name all along, each query its own snapshot
        with psycopg.connect(pg_database, autocommit=True) as conn:
            while not stop.is_set():
                try:
                    seen.append(conn.execute(query).fetchone())
                except Exception as e:  # noqa: BLE001 - any failure is a finding
                    failures.append(repr(e))
                time.sleep(0.02)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    args = ["embed", "--input", str(tmp_path / "big.jsonl"), "--output", out, "--report-dir",
            str(tmp_path / "r2"), "--model", model, "--pg-batch-rows", "25",
            "--beam-batch-size", "32", "--index", "hnsw"] + FAST
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "beam_e5"] + args, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    loaded = 0
    try:
        deadline = time.monotonic() + 180
        with psycopg.connect(pg_database, autocommit=True) as conn:
            while time.monotonic() < deadline and proc.poll() is None and loaded < 100:
                tables = [r[0] for r in conn.execute(
                    "SELECT relname FROM pg_class WHERE relname LIKE 'docs\\_\\_load\\_%'")]
                if tables:
                    loaded = conn.execute(f'SELECT count(*) FROM "{tables[0]}"').fetchone()[0]
                time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        assert loaded >= 100  # killed in the middle of the load
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with psycopg.connect(pg_database) as conn:
        assert conn.execute(query).fetchone() == before  # the previous table still serves
    assert not (tmp_path / "r2" / "manifest.json").exists()

    assert main(args + ["--overwrite"]) == 0  # rerun (its report dir has the killed run's files)
    time.sleep(0.3)
    stop.set()
    thread.join(10)
    m = json.loads((tmp_path / "r2" / "manifest.json").read_text())
    with psycopg.connect(pg_database) as conn:
        after = conn.execute(query).fetchone()
        rows = m["counts"]["written"] + m["counts"]["chunk_rows"]  # documents + window rows
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM docs").fetchone() == \
            (rows,) * 2
        tables = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE 'docs\\_\\_%' AND relkind = 'r'")}
    current, previous, _ = _published(pg_database)
    assert tables == {current, previous}  # the killed run's load table is gone
    assert failures == []
    assert set(seen) <= {before, after}, "a reader saw a table that was neither"
    assert before in seen and after in seen
    print(f"reader: {len(seen)} queries, {seen.count(before)} on the previous table, "
          f"{seen.count(after)} on the new one; killed with {loaded} rows loaded")


CHUNK_COLS = "id, embedding, doc_id, chunk, chunks, char_start, char_end, tokens, text_sha256"


def _rows_by_doc(uri: str, table: str) -> dict[str, dict[str, tuple]]:
    with connect(uri) as conn:
        rows = conn.execute(f'SELECT {CHUNK_COLS} FROM "{table}"').fetchall()
    out: dict[str, dict[str, tuple]] = {}
    for r in rows:
        out.setdefault(r[2], {})[r[0]] = (r[1].to_numpy().tobytes(),) + tuple(r[2:])
    return out


def test_reembed_chunked_documents_carries_every_row_in_the_database(pg_database, tiny_models,
                                                                     tmp_path):
    model = tiny_models("bert", "e5-small-v2")
    docs = build_local_corpus(24, seed=11, max_chars=200, duplicate_fraction=0.0)
    short = [dict(d, text=" ".join(d["text"].split()[:4])) for d in docs[:20]]
    long = [dict(d, text=" ".join(x["text"] for x in docs[i:i + 12]))  # several windows each
            for i, d in enumerate(docs[20:24])]
    write_jsonl(short + long, tmp_path / "v1.jsonl")
    changed, gone = long[0]["id"], long[1]["id"]
    v2 = [dict(d, text=d["text"] + " (revised)") if d["id"] == changed else d
          for d in short + long if d["id"] != gone]
    write_jsonl(v2, tmp_path / "v2.jsonl")
    out = pg_database + "&table=longdocs"
    common = ["--model", model, "--index", "none"] + FAST
    assert main(["embed", "--input", str(tmp_path / "v1.jsonl"), "--output", out,
                 "--report-dir", str(tmp_path / "r1")] + common) == 0
    with psycopg.connect(pg_database) as conn:
        first = conn.execute("SELECT table_name FROM beam_e5_published "
                             "WHERE name = 'longdocs'").fetchone()[0]
    old = _rows_by_doc(pg_database, first)
    c1 = json.loads((tmp_path / "r1" / "manifest.json").read_text())["counts"]
    assert len(old) == c1["written"] == 24
    assert c1["chunked_documents"] == sum(len(rows) > 1 for rows in old.values()) >= 4
    assert sum(len(rows) for rows in old.values()) == 24 + c1["chunk_rows"]
    # the table holds more rows than documents: a guard comparing documents with rows
    # would refuse the reembed below as a shrink
    assert c1["chunk_rows"] > 24
    for d in long:
        rows = old[d["id"]]
        n = rows[d["id"]][3]  # chunks, on the document row
        assert n > 1 and set(rows) == {d["id"]} | {f"{d['id']}#{i}" for i in range(n)}

    assert main(["reembed", "--input", str(tmp_path / "v2.jsonl"), "--previous", out,
                 "--output", out, "--report-dir", str(tmp_path / "r2")] + common) == 0
    m = json.loads((tmp_path / "r2" / "manifest.json").read_text())
    c = m["counts"]
    assert (c["carried"], c["reembedded"], c["new"], c["deleted"]) == (22, 1, 0, 1)
    assert c["read"] == 23 == c["written"] + c["exact_duplicates"] + c["invalid"]
    assert c["embedded"] == 1 and m["stats"]["texts_embedded"] == 1
    with psycopg.connect(pg_database) as conn:
        current = conn.execute("SELECT table_name FROM beam_e5_published "
                               "WHERE name = 'longdocs'").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM longdocs WHERE chunk IS NULL OR chunks = 1"
                            ).fetchone()[0] == 23
    cur = _rows_by_doc(pg_database, current)
    assert sum(len(rows) for rows in cur.values()) == 23 + c["chunk_rows"] == m["pg"]["rows"]
    carried_rows = sum(len(rows) for doc_id, rows in old.items() if doc_id not in (changed, gone))
    assert m["pg"]["rows_carried_in_db"] == carried_rows
    assert m["pg"]["rows_loaded"] == len(cur[changed])
    assert gone not in cur  # every row of the deleted document is gone
    assert set(cur) == set(old) - {gone}
    for doc_id, rows in cur.items():
        if doc_id == changed:  # all its rows replaced: the new text's hash on every one
            n = rows[doc_id][3]
            assert n > 1 and set(rows) == {doc_id} | {f"{doc_id}#{i}" for i in range(n)}
            assert all(row[-1] != old[doc_id][doc_id][-1] for row in rows.values())
            # the edit is at the end: the last window and the document vector moved (the
            # first windows hold the same text, so the same vectors)
            assert rows[f"{doc_id}#{n - 1}"][0] != old[doc_id].get(f"{doc_id}#{n - 1}", (b"",))[0]
            assert rows[doc_id][0] != old[doc_id][doc_id][0]
        else:  # byte-identical: vector, chunk columns, tokens, text hash
            assert rows == old[doc_id]
