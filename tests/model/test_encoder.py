"""The encoder on real MiniLM weights (parity with sentence-transformers) and tiny models."""

import os

import numpy as np
import pytest
import torch
from realtext import mixed_length_texts

from beam_e5.errors import ConfigError
from beam_e5.model.backends.torch_backend import pick_device
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import (
    Encoder,
    EncodeStats,
    pad_batch,
    run_splitting_on_oom,
)
from beam_e5.model.profiles import ProfileOverrides


@pytest.fixture(scope="module")
def minilm_encoder(minilm_dir):
    # the CPU fp32 reference, also on a machine with a GPU (where --device auto takes it)
    return Encoder.load(EncoderConfig(minilm_dir, device="cpu", max_batch_tokens=4096).resolve())


@pytest.mark.slow
def test_parity_with_sentence_transformers(minilm_dir, minilm_encoder):
    from sentence_transformers import SentenceTransformer

    texts = mixed_length_texts(320)
    ours, stats = minilm_encoder.encode(texts)
    ref = SentenceTransformer(minilm_dir, device="cpu").encode(
        texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == ref.shape == (320, 384) and ours.dtype == np.float32
    cos = np.sum(ours * ref, axis=1)
    assert cos.min() >= 0.99999, f"worst cosine {cos.min()} at {cos.argmin()}"
    # the texts are distinct, so matching position by position proves the input order
    assert len(set(texts)) == len(texts)
    assert np.array_equal(np.argmax(ours @ ref.T, axis=1), np.arange(320))
    assert stats.truncated >= 20 and max(stats.tokens_per_text) == 256
    assert stats.padded_tokens >= stats.real_tokens > 0
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_empty_and_huge_texts_embed(minilm_encoder):
    huge = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
    vecs, stats = minilm_encoder.encode(["", huge, "   "])
    assert vecs.shape == (3, 384) and np.all(np.isfinite(vecs))
    assert stats.truncated_per_text == [False, True, False]
    assert stats.tokens_per_text[1] == 256 and stats.tokens_per_text[0] == 2  # [CLS] [SEP]


def test_character_cut_never_changes_tokens(minilm_encoder, minilm_dir):
    # Whitespace runs make a text long in characters but short in tokens: the cheap
    # character cut must fall back to the full text. transformers' own truncation is the
    # reference.
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(minilm_dir)
    sparse = "word" + " " * 5000 + "tail " * 10
    ids = minilm_encoder.tokenize([sparse]).ids[0]
    assert ids == reference(sparse, truncation=True, max_length=256)["input_ids"]
    long_text = "alpha beta gamma " * 3000
    assert minilm_encoder.tokenize([long_text]).ids[0] == reference(
        long_text, truncation=True, max_length=256)["input_ids"]


@pytest.mark.slow
def test_results_in_input_order_across_micro_batches(minilm_dir):
    # fp32 on CPU, also where a GPU is present: exact agreement is the point here
    enc = Encoder.load(EncoderConfig(minilm_dir, device="cpu", max_batch_tokens=300,
                                     max_batch_size=3).resolve())
    texts = mixed_length_texts(40)
    batched, stats = enc.encode(texts)
    single = np.stack([enc.encode([t])[0][0] for t in texts])
    assert stats.micro_batches > 10
    assert np.min(np.sum(batched * single, axis=1)) > 0.99999


def _fed_texts(encoder, texts):
    """Decode the input_ids the model really receives (a forward pre-hook on the model)."""
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs["input_ids"].clone())

    handle = encoder.backend.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        encoder.encode(texts)
    finally:
        handle.remove()
    rows = [r for batch in seen for r in batch.tolist()]
    return [encoder.tokenizer.decode([t for t in r if t != encoder.pad_id]) for r in rows]


@pytest.mark.parametrize("family,name,role,expected", [
    ("bert", "e5-small-v2", "passage", "passage : hello world"),
    ("bert", "e5-base-v2", "query", "query : hello world"),
    ("xlm-roberta", "multilingual-e5-base", "query", "query: hello world"),
    ("xlm-roberta", "multilingual-e5-large-instruct", "query",
     "Instruct: Given a web search query, retrieve relevant passages that answer the query\n"
     "Query: hello world"),
    ("xlm-roberta", "multilingual-e5-large-instruct", "passage", "hello world"),
    ("mistral", "e5-mistral-7b-instruct", "query",
     "Instruct: Given a web search query, retrieve relevant passages that answer the query\n"
     "Query: hello world"),
    ("bert", "gte-small", "query", "hello world"),
    ("bert", "bge-small-en-v1.5", "query",
     "represent this sentence for searching relevant passages : hello world"),
])
def test_prefix_fed_to_model(tiny_models, family, name, role, expected):
    # torch backend: the hook reads the ids the torch model receives
    enc = Encoder.load(EncoderConfig(tiny_models(family, name), role=role,
                                     backend="torch").resolve())
    assert _fed_texts(enc, ["hello world"]) == [expected]


def test_e5_mistral_appends_eos_and_pools_last(tiny_models):
    enc = Encoder.load(EncoderConfig(tiny_models("mistral", "e5-mistral-7b-instruct"),
                                     role="passage").resolve())
    ids = enc.tokenize(["hello world", "a " * 2000]).ids
    assert all(x[-1] == enc.eos_id for x in ids)
    assert len(ids[1]) == enc.max_length
    assert enc.profile.pooling == "last"


def test_e5_mistral_left_and_right_padding_agree(tiny_models):
    texts = ["hello world", "the quick brown fox jumps over the lazy dog " * 3, "beam"]
    # fp32 on CPU, also where a GPU is present (bf16 there differs by 1e-3 either way)
    right = Encoder.load(EncoderConfig(
        tiny_models("mistral", "e5-mistral-7b-instruct", "right"), device="cpu").resolve())
    left = Encoder.load(EncoderConfig(
        tiny_models("mistral", "e5-mistral-7b-instruct", "left"), device="cpu").resolve())
    assert left.left_padding and not right.left_padding
    a, _ = right.encode(texts)
    b, _ = left.encode(texts)
    np.testing.assert_allclose(a, b, atol=1e-5)
    single = np.stack([right.encode([t])[0][0] for t in texts])
    np.testing.assert_allclose(a, single, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_pooling_override_changes_vectors(tiny_models, pooling):
    path = tiny_models("bert", "gte-base")
    enc = Encoder.load(EncoderConfig(path, overrides=ProfileOverrides(pooling=pooling)).resolve())
    vecs, _ = enc.encode(["hello world", "quick brown fox"])
    assert enc.profile.pooling == pooling
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_pickle_only_weights_refused_unless_opted_in(tmp_path):
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32))
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle checkpoint
    (tmp_path / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(100)))  # its tokenizer
    with pytest.raises(ConfigError, match="pickle"):
        EncoderConfig(str(tmp_path)).resolve()
    assert EncoderConfig(str(tmp_path), allow_pickle_weights=True).resolve().dim == 16


def test_pad_batch_right_and_left():
    ids, mask = pad_batch([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=2, left=True)
    assert ids.tolist() == [[5, 6, 7], [2, 2, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == np.int64


def test_secure_defaults():
    cfg = EncoderConfig("intfloat/e5-small-v2")
    assert cfg.trust_remote_code is False and cfg.allow_pickle_weights is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_an_error():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


def test_oom_splits_and_retries_never_drops():
    calls = []

    def fn(items):
        calls.append(len(items))
        if len(items) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return [x * 10 for x in items]

    stats = EncodeStats()
    assert run_splitting_on_oom(fn, list(range(7)), stats) == [x * 10 for x in range(7)]
    assert stats.oom_splits == 3 and calls[0] == 7


def test_oom_on_single_item_propagates():
    def fn(items):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_splitting_on_oom(fn, [1], EncodeStats())


def test_bf16_on_cpu_stays_close_to_fp32_and_the_log_says_so(minilm_dir, minilm_encoder,
                                                               caplog, monkeypatch):
    """``--backend torch --dtype bfloat16`` on CPU (PyTorch bf16, pooling in fp32): close to
    fp32 on real weights and real texts of mixed length. (``auto`` takes OpenVINO for bf16
    where it is installed: tests/model/backends/test_openvino_backend.py.)"""
    import beam_e5.model.backends.choose as choose

    caplog.set_level("INFO", logger="beam_e5")
    monkeypatch.setattr(choose, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    texts = mixed_length_texts(200)
    ref, _ = minilm_encoder.encode(texts)
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "")  # restored (unset) afterwards
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    bf16 = Encoder.load(EncoderConfig(minilm_dir, device="cpu", dtype="bfloat16",
                                      backend="torch").resolve())
    assert bf16.backend.name == "torch" and bf16.backend.precision == "bfloat16"
    # oneDNN's per-shape cache is bounded before the first bf16 pass (memory stays flat)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "128"
    assert "(PyTorch, bfloat16; --backend torch)" in caplog.text
    # a CPU without bf16 instructions: the user is told bf16 is emulated there
    assert "drop --dtype bfloat16 here" in caplog.text
    vecs, _ = bf16.encode(texts)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    cos = np.sum(vecs * ref, axis=1)
    assert cos.mean() >= 0.9999 and cos.min() >= 0.999, (cos.mean(), cos.min())
    # the nearest neighbour of every text is the same one in both precisions
    sims, sims_ref = vecs @ vecs.T, ref @ ref.T
    np.fill_diagonal(sims, -1)
    np.fill_diagonal(sims_ref, -1)
    assert np.mean(sims.argmax(axis=1) == sims_ref.argmax(axis=1)) >= 0.97


def test_fp32_default_on_a_bf16_cpu_names_the_faster_flag(minilm_dir, caplog,
                                                           monkeypatch):
    import beam_e5.model.backends.choose as choose

    caplog.set_level("INFO", logger="beam_e5")
    monkeypatch.setattr(choose, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "")  # restored (unset) afterwards
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    enc = Encoder.load(EncoderConfig(minilm_dir, backend="torch", device="cpu").resolve())
    assert enc.backend.precision == "float32"
    assert "(PyTorch, float32; --backend torch)" in caplog.text
    assert "this CPU computes bf16 natively: --dtype bfloat16" in caplog.text
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ  # fp32 leaves oneDNN alone
    caplog.clear()
    Encoder.load(EncoderConfig(minilm_dir, backend="torch", device="cpu",
                               dtype="float32").resolve())
    assert "--dtype bfloat16" not in caplog.text  # asked for fp32: nothing to advise


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_half_precision_matches_cpu(minilm_dir, minilm_encoder, dtype):
    texts = mixed_length_texts(200)
    ref, _ = minilm_encoder.encode(texts)
    gpu = Encoder.load(EncoderConfig(minilm_dir, device="cuda", dtype=dtype).resolve())
    assert gpu.backend.name == "torch" and gpu.backend.device == "cuda"
    vecs, stats = gpu.encode(texts)
    assert vecs.dtype == np.float32 and stats.oom_splits == 0
    cos = np.sum(vecs * ref, axis=1)
    assert cos.min() >= 0.999 and cos.mean() >= 0.9999, (cos.mean(), cos.min())


def test_profile_flag_prefixes_a_renamed_model(tiny_models):
    path = tiny_models("bert", "my-finetuned-model")
    plain = EncoderConfig(path, backend="torch").resolve()
    assert plain.prefix == "" and plain.profile.family == "generic"
    forced = EncoderConfig(path, backend="torch",
                           overrides=ProfileOverrides(family="e5")).resolve()
    assert forced.signature()["profile.family"] == "e5"
    assert _fed_texts(Encoder.load(forced), ["hello world"]) == ["passage : hello world"]
