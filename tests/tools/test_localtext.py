"""Tests for tools.localtext and the bundled sample corpus built with it."""

from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path

import pytest

from beam_e5.dedupe.text_key import text_key
from beam_e5.errors import ConfigError
from beam_e5.io.readers import ReadCorpus, ReaderConfig
from beam_e5.transforms.exact_dedupe import ExactDedupe
from tools.localtext import build_local_corpus, main, strip_roff, write_jsonl

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "corpus.jsonl"
needs_share = pytest.mark.skipif(
    not Path("/usr/share/common-licenses").is_dir() or not Path("/usr/share/man/man1").is_dir(),
    reason="needs Debian documentation under /usr/share",
)


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    if not Path("/usr/share/common-licenses").is_dir():
        pytest.skip("needs Debian documentation under /usr/share")
    return build_local_corpus(600, seed=3)


@pytest.mark.slow
@needs_share
def test_deterministic_given_seed(corpus: list[dict]) -> None:
    assert build_local_corpus(600, seed=3) == corpus
    assert build_local_corpus(600, seed=4) != corpus


@needs_share
def test_size_ids_and_collections(corpus: list[dict]) -> None:
    assert len(corpus) == 600
    assert len({d["id"] for d in corpus}) == 600
    assert {d["collection"] for d in corpus} == {"licence", "copyright", "man", "doc"}
    assert all(set(d) == {"id", "text", "collection"} and d["text"].strip() for d in corpus)


@needs_share
def test_has_planted_duplicates(corpus: list[dict]) -> None:
    by_id = {d["id"]: d for d in corpus}
    dups = [d for d in corpus if "~dup" in d["id"]]
    assert len(dups) == 30  # 5% of 600
    for d in dups:
        original = by_id[d["id"].split("~dup")[0]]
        assert text_key(d["text"]) == text_key(original["text"])
    assert any(
        d["text"] != by_id[d["id"].split("~dup")[0]]["text"] for d in dups
    )  # some are variants
    assert len({text_key(d["text"]) for d in corpus}) == 570


@needs_share
def test_lengths_are_skewed(corpus: list[dict]) -> None:
    sizes = [len(d["text"]) for d in corpus]
    assert max(sizes) <= 4000
    assert statistics.median(sizes) < statistics.mean(sizes)
    assert sum(s < 500 for s in sizes) > len(sizes) / 3
    assert sum(s > 3000 for s in sizes) >= 5


def test_synthetic_share_dir(tmp_path: Path) -> None:
    (tmp_path / "common-licenses").mkdir()
    (tmp_path / "common-licenses" / "LIC").write_text(
        "\n\n".join(f"Licence clause {i}. " * 5 for i in range(30))
    )
    (tmp_path / "doc" / "pkg").mkdir(parents=True)
    (tmp_path / "doc" / "pkg" / "copyright").write_text(
        "Files: *\nCopyright: 2020 Someone\nLicense: MIT\n"
    )
    (tmp_path / "doc" / "pkg" / "README.md").write_text(
        "# pkg\n\nThis package does a thing well.\n"
    )
    (tmp_path / "man" / "man1").mkdir(parents=True)
    roff = (".TH LS 1\n.SH NAME\nls \\- list directory contents\n.SH DESCRIPTION\n"
            "List \\fBinformation\\fR here.\n")
    (tmp_path / "man" / "man1" / "ls.1.gz").write_bytes(gzip.compress(roff.encode()))
    docs = build_local_corpus(
        9, seed=0, duplicate_fraction=0.25, share_dir=str(tmp_path)
    )  # 7 chunks + 2
    ids = {d["id"] for d in docs}
    assert {"man1/ls.1.gz#0", "doc/pkg/copyright#0", "doc/pkg/README.md#0"} <= ids
    assert sum("~dup" in i for i in ids) == 2
    with pytest.raises(ConfigError, match="found only"):
        build_local_corpus(500, share_dir=str(tmp_path))


def test_strip_roff() -> None:
    roff = "\n".join(
        [
            '.\\" a comment',
            ".de XX",
            "macro body \\$1",
            "..",
            ".TH LS 1",
            ".SH NAME",
            "ls \\- list \\fBdirectory\\fR contents",
            '\\" another comment',
            ".PP",
            "See \\fIfile\\fP\\(em or \\(lqquotes\\(rq\\&.",
        ]
    )
    words = ["ls", "-", "list", "directory", "contents", "See", "file\u2014", "or", '"quotes".']
    assert strip_roff(roff).split() == words


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        build_local_corpus(0)
    with pytest.raises(ConfigError):
        build_local_corpus(10, duplicate_fraction=1.0)
    with pytest.raises(ConfigError):
        build_local_corpus(10, max_chars=10)


def test_cli_and_write_jsonl(tmp_path: Path) -> None:
    docs = [{"id": "a", "text": "ünïcode"}]
    write_jsonl(docs, tmp_path / "sub" / "x.jsonl")
    assert (tmp_path / "sub" / "x.jsonl").read_text(
        encoding="utf-8"
    ) == '{"id": "a", "text": "ünïcode"}\n'
    assert (
        main(
            ["--n", "5", "--out", str(tmp_path / "y.jsonl"), "--share-dir", str(tmp_path / "none")]
        )
        == 2
    )
    if Path("/usr/share/common-licenses").is_dir():
        assert main(["--n", "40", "--out", str(tmp_path / "z.jsonl")]) == 0
        assert len((tmp_path / "z.jsonl").read_text().splitlines()) == 40


def test_bundled_sample_corpus(run_beam) -> None:
    assert SAMPLE.stat().st_size < 1_500_000
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1000
    assert {r["collection"] for r in rows} == {"licence", "copyright", "man", "doc"}
    assert sum(len(r["text"]) > 3000 for r in rows) > 0

    def build(p):
        read = p | ReadCorpus(ReaderConfig(str(SAMPLE), keep_fields=("collection",)))
        deduped = read.documents | ExactDedupe()
        return {"unique": deduped.unique, "duplicates": deduped.duplicates, "errors": read.errors}

    run = run_beam(build)
    assert run.outputs["errors"] == []
    assert len(run.outputs["unique"]) == 950
    assert len(run.outputs["duplicates"]) == 50
    assert all("~dup" in d["id"] for d in run.outputs["duplicates"])
