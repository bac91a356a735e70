"""The tokenizer snapshot: transformers' own backend, saved once, read without transformers.

The reference is transformers' ``AutoTokenizer`` on the same directory: every ids and offsets
list must be the same, for the real all-MiniLM-L6-v2 (WordPiece), a Unigram XLM-R tokenizer
that transformers 5 builds from its class, and the byte-level BPE fixtures.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beam_e5.model.tokenizer import (
    HfTokenizer,
    SnapshotTokenizer,
    TokenizerInfo,
    backend_alone_runs,
    load_tokenizer,
    snapshot_path,
)

HARD_TEXTS = [
    "Hello World", "", " ", "   leading and trailing   ", "passage: query: x",
    "naïve café, Ærøskøbing, Straße", "東京都の人口は約1400万人です。", "Привет, мир!",
    "emoji 😀👍🏽 and ZWJ 👨‍👩‍👧", "zero\u200bwidth\u00adsoft", "tab\tnew\nline\r\nend",
    "[CLS] inside [SEP] text [PAD] [UNK] [MASK]", "<s> xml-ish </s> <pad> <unk> <mask>",
    "a" * 3000, "word " * 700, "mixed: ﬁ ligature, ½, Ⅻ, ①, ＡＢＣ fullwidth",
    "\x00\x01 control \x7f", "e\u0301 combining accent", "🤖" * 50,
]


def _xlmr_unigram_dir(root: Path) -> str:
    """A Unigram tokenizer that transformers 5 rebuilds from the XLM-R class (Metaspace)."""
    from transformers import XLMRobertaTokenizer

    pieces = ["▁hello", "▁world", "▁", "h", "e", "l", "o", "w", "r", "d", "▁the", "s", "t",
              "a", "n", "é", "東", "京", "query", ":", "▁query", "▁passage", "▁café", "м", "и"]
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, -float(i + 1)) for i, p in enumerate(pieces)] + [("<mask>", 0.0)]
    out = root / "xlmr-unigram"
    XLMRobertaTokenizer(vocab=vocab).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def tokenizer_dirs(minilm_dir, tiny_models, tmp_path_factory):
    return {"minilm": minilm_dir,
            "xlmr-unigram": _xlmr_unigram_dir(tmp_path_factory.mktemp("unigram")),
            "xlmr-bpe": tiny_models("xlm-roberta", "multilingual-e5-small"),
            "mistral-bpe": tiny_models("mistral", "e5-mistral-7b-instruct")}


@pytest.mark.parametrize("name", ["minilm", "xlmr-unigram", "xlmr-bpe", "mistral-bpe"])
def test_the_snapshot_tokenises_as_transformers_does(tokenizer_dirs, tmp_path, name):
    from transformers import AutoTokenizer

    path = tokenizer_dirs[name]
    reference = AutoTokenizer.from_pretrained(path)
    built = load_tokenizer(path, cache_dir=str(tmp_path))  # builds and saves the snapshot
    read = load_tokenizer(path, cache_dir=str(tmp_path))  # reads it
    assert isinstance(built, SnapshotTokenizer) and isinstance(read, SnapshotTokenizer)
    assert read.info == built.info == TokenizerInfo.of(reference)
    for special in (True, False):
        want = reference(HARD_TEXTS, add_special_tokens=special)["input_ids"]
        assert read.ids(HARD_TEXTS, special_tokens=special) == want
    want = reference(HARD_TEXTS, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = read.ids_and_offsets(HARD_TEXTS)
    assert ids == want["input_ids"]
    assert offsets == [[tuple(o) for o in row] for row in want["offset_mapping"]]
    row = reference("Hello World")["input_ids"]
    assert read.decode(row) == reference.decode(row, skip_special_tokens=True)


def test_the_info_is_what_transformers_says(tokenizer_dirs, tmp_path):
    info = load_tokenizer(tokenizer_dirs["minilm"], cache_dir=str(tmp_path)).info
    assert (info.pad_token_id, info.eos_token_id, info.unk_token_id) == (0, None, 100)
    assert info.padding_side == "right" and info.model_max_length == 512
    assert info.name == "BertTokenizer" and info.split_special_tokens is False


def test_a_second_worker_reads_the_snapshot_without_importing_transformers(minilm_dir,
                                                                           tmp_path):
    load_tokenizer(minilm_dir, cache_dir=str(tmp_path))
    code = ("import sys; from beam_e5.model.tokenizer import load_tokenizer, SnapshotTokenizer;"
            f"t = load_tokenizer({minilm_dir!r}, cache_dir={str(tmp_path)!r});"
            "print(type(t).__name__, t.ids(['hello world']), 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=os.getcwd())).stdout
    assert out.split() == ["SnapshotTokenizer", "[[101,", "7592,", "2088,", "102]]", "False"]


def test_the_snapshot_follows_the_files_and_the_versions(minilm_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(minilm_dir, model)
    first = snapshot_path(str(model), str(tmp_path / "cache"), False)
    assert first == snapshot_path(str(model), str(tmp_path / "cache"), False)
    assert first != snapshot_path(str(model), str(tmp_path / "cache"), True)
    config = model / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"do_lower_case": true',
                                                 '"do_lower_case": false'))
    changed = snapshot_path(str(model), str(tmp_path / "cache"), False)
    assert changed != first  # an edited file is a new snapshot
    cased = load_tokenizer(str(model), cache_dir=str(tmp_path / "cache"))
    assert cased.ids(["Hello"], special_tokens=False) != [[7592]]  # no longer lower-cased
    assert snapshot_path("intfloat/e5-small-v2", str(tmp_path), False) is None  # hub names


def test_an_unreadable_snapshot_is_built_again(minilm_dir, tmp_path, caplog):
    target = snapshot_path(minilm_dir, str(tmp_path), False)
    target.parent.mkdir(parents=True)
    target.write_text('{"info": {"pad_token_id": 0}, "backend": "not json"}')
    with caplog.at_level(logging.WARNING, logger="beam_e5.model.tokenizer"):
        tok = load_tokenizer(minilm_dir, cache_dir=str(tmp_path))
    assert "unreadable" in caplog.text and tok.ids(["hello"]) == [[101, 7592, 102]]
    assert json.loads(target.read_text())["info"]["unk_token_id"] == 100  # rewritten


def test_a_cache_that_cannot_be_written_still_tokenises(minilm_dir, tmp_path, caplog):
    blocker = tmp_path / "a-file"  # a cache folder under a file cannot be made, even by root
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="beam_e5.model.tokenizer"):
        tok = load_tokenizer(minilm_dir, cache_dir=str(blocker / "cache"))
    assert tok.ids(["hello"]) == [[101, 7592, 102]] and "cannot save" in caplog.text


def _waiting_on_a_lock(pid: int) -> bool:
    """Is process ``pid`` blocked on a file lock (``/proc/locks`` lists its request "->")?"""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines()
               if len(line.split()) > 5)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_a_worker_that_finds_the_snapshot_being_built_waits_and_reads_it(minilm_dir, tmp_path):
    """The workers of a cold machine build the snapshot once: one that comes while another
    holds the build lock waits for it, then reads what it saved, without transformers."""
    import fcntl
    import shutil

    built_elsewhere = tmp_path / "elsewhere"
    load_tokenizer(minilm_dir, cache_dir=str(built_elsewhere))
    saved = snapshot_path(minilm_dir, str(built_elsewhere), False)
    target = snapshot_path(minilm_dir, str(tmp_path / "cache"), False)
    target.parent.mkdir(parents=True)
    code = ("import sys; from beam_e5.model.tokenizer import load_tokenizer;"
            f"t = load_tokenizer({minilm_dir!r}, cache_dir={str(tmp_path / 'cache')!r});"
            "print(type(t).__name__, t.ids(['hello world']), 'transformers' in sys.modules)")
    with open(str(target) + ".lock", "w") as lock:  # the builder, holding the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                  text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
        try:
            for _ in range(600):
                if _waiting_on_a_lock(worker.pid) or worker.poll() is not None:
                    break
                time.sleep(0.05)
            assert _waiting_on_a_lock(worker.pid), "the worker did not wait for the build"
            shutil.copyfile(saved, target)  # the builder saves its snapshot, then unlocks
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    out, _ = worker.communicate(timeout=120)
    assert out.split() == ["SnapshotTokenizer", "[[101,", "7592,", "2088,", "102]]", "False"]


def _loading(monkeypatch, tokenizer):
    """Make transformers' AutoTokenizer hand back ``tokenizer`` (built from a real directory):
    how a remote-code class would arrive."""
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *args, **kwargs: tokenizer)


def test_a_class_with_a_call_of_its_own_keeps_transformers(minilm_dir, tmp_path, monkeypatch):
    """Remote code can tokenise in Python before its backend: then the backend alone is not
    what transformers runs, and transformers is used (no snapshot)."""
    from transformers import AutoTokenizer, BertTokenizer

    class Backwards(BertTokenizer):
        def _encode_plus(self, text, *args, **kwargs):
            text = [t[::-1] for t in text] if isinstance(text, list) else text[::-1]
            return super()._encode_plus(text, *args, **kwargs)

    assert backend_alone_runs(AutoTokenizer.from_pretrained(minilm_dir))
    assert not backend_alone_runs(Backwards.from_pretrained(minilm_dir))
    _loading(monkeypatch, Backwards.from_pretrained(minilm_dir))
    tok = load_tokenizer(minilm_dir, cache_dir=str(tmp_path))
    assert isinstance(tok, HfTokenizer) and tok.is_fast
    assert tok.ids(["hi"], special_tokens=False) != [[7632]]  # its own call, reversed
    assert not list(tmp_path.glob("tokenizers/*.json"))  # no snapshot (a lock file only)


def test_a_backend_that_cannot_be_saved_keeps_transformers(minilm_dir, tmp_path, monkeypatch):
    """A Python-defined pre-tokenizer (RoFormer's jieba one, remote code) cannot be
    serialised: the worker still loads, through transformers."""
    from tokenizers.pre_tokenizers import PreTokenizer
    from transformers import AutoTokenizer

    class Words:
        def pre_tokenize(self, pretok):
            pretok.split(lambda i, s: s.split(" ", "removed"))

    hf = AutoTokenizer.from_pretrained(minilm_dir)
    hf.backend_tokenizer.pre_tokenizer = PreTokenizer.custom(Words())
    _loading(monkeypatch, hf)
    tok = load_tokenizer(minilm_dir, cache_dir=str(tmp_path))
    assert isinstance(tok, HfTokenizer) and tok.ids(["hello world"]) == [[101, 7592, 2088, 102]]
    assert not list(tmp_path.glob("tokenizers/*.json"))  # no snapshot (a lock file only)


def test_a_snapshot_that_tokenises_differently_is_not_saved(minilm_dir, tmp_path, monkeypatch,
                                                            caplog):
    """The probe texts catch what the class check cannot: here a call replaced on the
    instance, which the class's methods do not show."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(minilm_dir)
    plain = hf._encode_plus
    hf._encode_plus = lambda text, *a, **k: plain(
        [t.replace("World", "Planet") for t in text] if isinstance(text, list) else text,
        *a, **k)
    assert backend_alone_runs(hf)
    _loading(monkeypatch, hf)
    with caplog.at_level(logging.WARNING, logger="beam_e5.model.tokenizer"):
        tok = load_tokenizer(minilm_dir, cache_dir=str(tmp_path))
    assert isinstance(tok, HfTokenizer) and "does not tokenise as transformers" in caplog.text
    assert not list(tmp_path.glob("tokenizers/*.json"))  # no snapshot (a lock file only)


def test_split_special_tokens_and_added_tokens_are_kept(minilm_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "model"
    shutil.copytree(minilm_dir, model)
    hf = AutoTokenizer.from_pretrained(model, split_special_tokens=True)
    hf.add_tokens(["beamish", "e5ish"])  # added, not special
    hf.save_pretrained(model)
    reference = AutoTokenizer.from_pretrained(model)
    assert reference.split_special_tokens is True
    tok = load_tokenizer(str(model), cache_dir=str(tmp_path / "cache"))
    read = load_tokenizer(str(model), cache_dir=str(tmp_path / "cache"))
    assert isinstance(read, SnapshotTokenizer) and read.info.split_special_tokens is True
    texts = ["[CLS] beamish e5ish [SEP] x", "Beamish"] + HARD_TEXTS
    assert read.ids(texts) == tok.ids(texts) == reference(texts)["input_ids"]
    want = reference(texts, add_special_tokens=False, return_offsets_mapping=True)
    assert read.ids_and_offsets(texts) == (
        want["input_ids"], [[tuple(o) for o in row] for row in want["offset_mapping"]])


def test_remote_code_files_are_part_of_the_key(minilm_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(minilm_dir, model)
    before = snapshot_path(str(model), str(tmp_path), True)
    (model / "tokenization_custom.py").write_text("# a remote-code tokenizer\n")
    assert snapshot_path(str(model), str(tmp_path), True) != before
