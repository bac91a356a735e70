"""Model sources: local checks, and gs:// directories staged once through the GCS emulator."""

import json
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from beam_e5.errors import ConfigError
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.loading import (
    cached_hub_commit,
    classify_model_ref,
    hub_commit,
    hub_files_dir,
    stage_gcs_model,
)


def test_classify_refs(tmp_path):
    assert classify_model_ref("intfloat/e5-small-v2").kind == "hub"
    assert classify_model_ref("gs://b/m/").ref == "gs://b/m"
    assert classify_model_ref(str(tmp_path)).kind == "local"
    with pytest.raises(ConfigError, match="does not exist"):
        classify_model_ref("./missing/model")
    with pytest.raises(ConfigError, match="empty"):
        classify_model_ref(" ")


def test_local_dir_without_config_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError, match="no config.json"):
        EncoderConfig(str(tmp_path)).resolve()


@pytest.mark.slow
def test_gcs_model_loads_and_matches_local(gcs_emulator, minilm_dir, tmp_path):
    url = gcs_emulator.upload_dir(minilm_dir, "models/all-MiniLM-L6-v2")
    spec = EncoderConfig(url, model_cache_dir=str(tmp_path / "cache")).resolve()
    assert spec.source.kind == "gcs" and spec.dim == 384
    assert spec.profile.max_length == 256  # read from gs:// sentence_bert_config.json
    texts = ["a model staged from a bucket", "hello world"]
    remote, _ = Encoder.load(spec).encode(texts)
    local, _ = Encoder.load(EncoderConfig(minilm_dir).resolve()).encode(texts)
    np.testing.assert_array_equal(remote, local)


def test_gcs_staging_copies_once_across_threads(gcs_emulator, minilm_dir, tmp_path,
                                                caplog):
    url = gcs_emulator.upload_dir(minilm_dir, "models/m1")
    cache = str(tmp_path / "cache")
    results = []
    with caplog.at_level(logging.INFO, logger="beam_e5.model.loading"):
        threads = [threading.Thread(target=lambda: results.append(stage_gcs_model(url, cache)))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(set(results)) == 1 and len(results) == 6
    assert sum("staged" in r.message for r in caplog.records) == 1
    assert (Path(results[0]) / ".complete").exists()
    assert not [p for p in Path(cache).iterdir() if p.name.startswith(".staging-")]


def _stage_in_child(url: str, cache: str) -> tuple[str, float]:
    path = stage_gcs_model(url, cache)
    return path, os.stat(os.path.join(path, ".complete")).st_mtime


def test_gcs_staging_copies_once_across_processes(gcs_emulator, minilm_dir, tmp_path):
    url = gcs_emulator.upload_dir(minilm_dir, "models/m2")
    cache = str(tmp_path / "cache")
    with ProcessPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(_stage_in_child, [url] * 3, [cache] * 3))
    assert len({r for r in results}) == 1  # same path, same marker: one copy


def test_gcs_missing_model_is_a_config_error(gcs_emulator):
    with pytest.raises(ConfigError, match="no objects under"):
        EncoderConfig(gcs_emulator.url("models/nothing-here")).resolve()


def test_corrupt_safetensors_is_refused_at_start(minilm_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(minilm_dir, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:1000])  # a half-copied file
    with pytest.raises(ConfigError, match="not a valid safetensors file"):
        EncoderConfig(str(broken)).resolve()


def test_corrupt_config_json_is_refused_at_start(minilm_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken-config"
    shutil.copytree(minilm_dir, broken)
    (broken / "sentence_bert_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        EncoderConfig(str(broken)).resolve()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_model_file_is_refused(minilm_dir, tmp_path):
    import shutil

    locked = tmp_path / "locked"
    shutil.copytree(minilm_dir, locked)
    (locked / "config.json").chmod(0)
    with pytest.raises(ConfigError, match="permission denied"):
        EncoderConfig(str(locked)).resolve()


_HUB_WORKER = """
import json, logging, sys
import beam_e5.model.encoder as encoder_module
from beam_e5.model.backends.base import LoadRequest
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.loading import hub_files_dir

cache, mode = sys.argv[1], sys.argv[2]
seen = {}
load_backend = encoder_module.load_backend
def recording(request):  # what the weights are loaded at
    seen['revision'] = request.revision
    return load_backend(request)
encoder_module.load_backend = recording
if mode == 'broken':  # files from which the tokenizer cannot be built: transformers takes over
    encoder_module.hub_files_dir = lambda repo, revision: sys.argv[3]
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
texts = ['hello world', 'query: another text', '']
enc = Encoder.load(EncoderConfig('intfloat/e5-small-v2', backend='onnx',
                                 model_cache_dir=cache).resolve())
vectors, _ = enc.encode(texts)
state = {'tokenizer': type(enc.tokenizer).__name__, 'ids': enc.tokenizer.ids(texts),
         'transformers': 'transformers' in sys.modules, 'torch': 'torch' in sys.modules,
         'files': hub_files_dir('intfloat/e5-small-v2'), 'vectors': vectors.tolist(), **seen}
if mode == 'compare':  # what transformers resolves from the hub name itself
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained('intfloat/e5-small-v2')
    state['hf_ids'] = [list(x) for x in hf(texts)['input_ids']]
    through_transformers = LoadRequest(model='m', path='intfloat/e5-small-v2')
    state['hf_commit'] = through_transformers.model_config.commit_hash
print(json.dumps(state))
"""

_SHA = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(model: str, root: Path) -> Path:
    """``model`` laid out in ``root`` as the Hub cache lays out intfloat/e5-small-v2 at
    commit _SHA (refs/main naming it)."""
    import shutil

    repo = root / "models--intfloat--e5-small-v2"
    shutil.copytree(model, repo / "snapshots" / _SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(_SHA)
    return repo / "snapshots" / _SHA


def _hub_worker(tmp_path: Path, mode: str, *extra: str) -> tuple[dict, str]:
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", _HUB_WORKER, str(tmp_path / "cache"), mode,
                          *extra], env=env, capture_output=True, text=True, check=True,
                         timeout=300, cwd=Path(__file__).resolve().parents[2])
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_a_hub_model_reads_its_config_and_tokenizer_without_transformers(tiny_models,
                                                                         tmp_path):
    """A hub name resolves to the Hub cache's snapshot of its files (huggingface_hub, offline
    here from a cache laid out as the Hub's): the first worker builds and saves the
    tokenizer, the next one loads config and tokenizer without transformers or torch, with
    the ids transformers gives the same name; the weights load at the files' commit, which
    also keys the graph."""
    snapshot = _hub_cache(tiny_models("bert", "e5-small-v2"), tmp_path / "hub")
    first, _ = _hub_worker(tmp_path, "compare")
    second, _ = _hub_worker(tmp_path, "plain")
    assert first["files"] == str(snapshot)
    assert first["ids"] == first["hf_ids"]
    assert first["revision"] == second["revision"] == first["hf_commit"] == _SHA
    assert second["tokenizer"] == "SnapshotTokenizer"
    assert (second["transformers"], second["torch"]) == (False, False)
    assert second["ids"] == first["ids"] and second["vectors"] == first["vectors"]


def test_a_hub_tokenizer_that_does_not_build_from_the_files_falls_back(tiny_models, tmp_path):
    snapshot = _hub_cache(tiny_models("bert", "e5-small-v2"), tmp_path / "hub")
    broken = tmp_path / "broken" / _SHA  # a tokenizer class transformers does not know
    broken.mkdir(parents=True)
    (broken / "config.json").write_text((snapshot / "config.json").read_text())
    (broken / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "NoSuchTokenizer"}))
    state, log = _hub_worker(tmp_path, "broken", str(broken))
    assert "did not load from its files in the Hub cache" in log
    assert state["revision"] == _SHA and state["ids"][0][0] == state["ids"][1][0]


def test_a_hub_model_is_fetched_without_weights_subfolders_or_graphs(tiny_models, tmp_path):
    """What ``hub_files_dir`` asks huggingface_hub for (its own filter, as the download
    applies it) builds the same tokenizer as the whole folder."""
    import shutil

    from huggingface_hub.utils import filter_repo_objects
    from transformers import AutoTokenizer

    from beam_e5.model.loading import HUB_SKIPPED_FILES
    from beam_e5.model.tokenizer import load_tokenizer

    model = Path(tiny_models("bert", "e5-small-v2"))
    names = [p.name for p in model.iterdir()] + ["1_Pooling/config.json", "onnx/model.onnx",
                                                 "pytorch_model.bin", "tf_model.h5"]
    kept = list(filter_repo_objects(names, ignore_patterns=list(HUB_SKIPPED_FILES)))
    assert sorted(kept) == ["config.json", "tokenizer.json", "tokenizer_config.json"]
    (tmp_path / "files").mkdir()
    for name in kept:
        shutil.copy(model / name, tmp_path / "files" / name)
    texts = ["hello world", "query: naïve café", ""]
    assert load_tokenizer(str(tmp_path / "files"), cache_dir=str(tmp_path / "c")).ids(texts) \
        == [list(x) for x in AutoTokenizer.from_pretrained(str(model))(texts)["input_ids"]]


def test_hub_files_dir_falls_back_where_the_files_cannot_be_had(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    assert hub_files_dir("intfloat/e5-small-v2") is None
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(tmp_path))
    assert hub_files_dir("intfloat/e5-small-v2") is None  # no config.json there
    assert hub_commit(str(tmp_path / ("ab" * 20))) == "ab" * 20
    assert hub_commit(str(tmp_path)) is None
    assert cached_hub_commit(str(tmp_path)) is None  # a directory is no repo
    assert cached_hub_commit("not a repo id!") is None
