"""Chunking real long text with real tokenizers: the licences on this machine (thousands of
tokens each) with all-MiniLM-L6-v2, and Russian and Chinese with WordPiece, byte-level BPE and
a SentencePiece-style (Metaspace unigram) tokenizer."""

from __future__ import annotations

import glob

import numpy as np
import pytest

from beam_e5.model.chunking import LongTextConfig, chunk_spans
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder


def licences() -> dict[str, str]:
    out = {}
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        with open(path, encoding="utf-8") as f:
            out[path.rsplit("/", 1)[1]] = f.read()
    return out


RUSSIAN = (
    "Москва — столица России, город федерального значения, административный центр "
    "Центрального федерального округа. Это крупнейший по численности населения город "
    "страны и её важнейший транспортный узел.\n\nГород расположен на реке Москве в центре "
    "Восточно-Европейской равнины. В XIV веке Москва стала центром объединения русских "
    "земель; здесь находятся Кремль, Красная площадь и многие музеи, театры и библиотеки. "
)
CHINESE = (
    "北京是中华人民共和国的首都，是全国的政治中心、文化中心、国际交往中心和科技创新中心。"
    "北京有三千多年的建城史和八百多年的建都史，拥有故宫、天坛、颐和园等世界文化遗产。"
    "城市位于华北平原北部，背靠燕山，毗邻天津市和河北省。\n\n"
    "北京的交通十分发达，拥有两座大型国际机场和密集的地铁网络，每天有数百万人乘坐地铁出行。"
)


def long_multilingual(base: str, n: int) -> str:
    """A long text from varied repetitions (numbered, so windows differ)."""
    return "".join(f"{i + 1}. {base}" for i in range(n))


def check_plan(encoder: Encoder, text: str, plan, window: int, overlap: int) -> tuple[int, int]:
    """Coverage, budget, overlap and offsets of one document's windows; returns
    (windows whose span re-tokenises to exactly their tokens, windows)."""
    k = plan.prefix_tokens
    ids = plan.ids[k:]
    spans = plan.spans
    assert spans[0].token_start == 0 and spans[-1].token_end == len(ids)
    for a, b in zip(spans, spans[1:]):
        assert b.token_start <= a.token_end  # every token is in a window
        assert a.token_end - b.token_start >= overlap
    same = 0
    for sp in spans:
        assert 0 < sp.tokens <= window
        assert len(encoder._window_ids(plan, sp)) <= encoder.max_length
        piece = text[sp.char_start:sp.char_end]
        assert piece.strip()  # (byte-level BPE may keep a space token at an edge)
        again = encoder.tokenizer.ids([piece], special_tokens=False)[0]
        same += list(again) == ids[sp.token_start:sp.token_end]
    return same, len(spans)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return Encoder.load(EncoderConfig(minilm_dir, backend="torch").resolve())


def test_licences_chunk_exactly_with_minilm(minilm):
    texts = licences()
    assert len(texts) >= 10
    same = total = 0
    for cfg in (LongTextConfig(), LongTextConfig(chunk_tokens=100, overlap=20)):
        plans = minilm.plan_documents(list(texts.values()), cfg)
        for text, plan in zip(texts.values(), plans):
            window = cfg.window(minilm.text_budget(plan.prefix_tokens))
            assert window == (254 if cfg.chunk_tokens is None else 100)
            s, t = check_plan(minilm, text, plan, window, cfg.overlap_for(window))
            same, total = same + s, total + t
        assert sum(len(p.spans) > 1 for p in plans) >= 10  # thousands of tokens each
    assert total > 300
    assert same / total >= 0.99, f"{total - same} of {total} windows re-tokenise differently"


def _sentence_transformers_parity(encoder: Encoder, minilm_dir: str, texts: list[str],
                                  cfg: LongTextConfig) -> int:
    from sentence_transformers import SentenceTransformer

    docs, stats = encoder.encode_documents(texts, cfg)
    pieces, ours = [], []
    for text, doc in zip(texts, docs):
        for c in doc.chunks:
            pieces.append(text[c.char_start:c.char_end])
            ours.append(c.vector)
    ref = SentenceTransformer(minilm_dir, device="cpu").encode(
        pieces, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    cos = np.sum(np.stack(ours) * ref, axis=1)
    assert cos.min() >= 0.9999, f"worst cosine {cos.min():.6f}: {pieces[int(cos.argmin())][:80]!r}"
    assert stats.windows == len(pieces) and stats.chunked == sum(len(d.chunks) > 1 for d in docs)
    for doc in docs:  # the document vector: token-weighted mean of its windows, unit length
        w = np.array([c.text_tokens for c in doc.chunks], np.float64)
        mean = (np.stack([c.vector for c in doc.chunks]) * w[:, None]).sum(0) / w.sum()
        assert np.allclose(doc.vector, mean / np.linalg.norm(mean), atol=1e-6)
    return len(pieces)


@pytest.mark.slow
def test_chunk_vectors_match_sentence_transformers_on_their_text(minilm, minilm_dir):
    texts = [licences()[name] for name in ("Apache-2.0", "MPL-2.0")]
    n = _sentence_transformers_parity(minilm, minilm_dir, texts, LongTextConfig())
    assert n >= 20


@pytest.mark.slow
def test_every_licence_chunk_matches_sentence_transformers_torch_and_onnx(minilm_dir):
    texts = list(licences().values())
    for backend in ("torch", "onnx"):
        enc = Encoder.load(EncoderConfig(minilm_dir, backend=backend).resolve())
        assert _sentence_transformers_parity(enc, minilm_dir, texts,
                                             LongTextConfig(chunk_tokens=200, overlap=24)) > 300


@pytest.mark.slow
def test_russian_and_chinese_with_wordpiece(minilm, minilm_dir):
    texts = [long_multilingual(RUSSIAN, 12), long_multilingual(CHINESE, 12)]
    cfg = LongTextConfig(chunk_tokens=96, overlap=16)
    plans = minilm.plan_documents(texts, cfg)
    for text, plan in zip(texts, plans):
        assert len(plan.spans) > 4
        same, total = check_plan(minilm, text, plan, 96, 16)
        assert same == total
    _sentence_transformers_parity(minilm, minilm_dir, texts, cfg)


def _metaspace_tokenizer():
    """A SentencePiece-style tokenizer (Metaspace '▁' words, like XLM-R's and Llama's),
    a small BPE trained here on the two texts."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<pad>", "<unk>"])
    tok.train_from_iterator([RUSSIAN, CHINESE, "1. 2. 3. passage: query: licence"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")


@pytest.mark.parametrize("base", [RUSSIAN, CHINESE], ids=["russian", "chinese"])
def test_multilingual_offsets_fall_on_characters_with_bpe_and_sentencepiece(
        tiny_models, base):
    text = long_multilingual(base, 10)
    # byte-level BPE (the tiny XLM-R fixture: 400 tokens of English, so every Cyrillic or
    # Chinese character is split into byte tokens that share the character's offsets)
    enc = Encoder.load(EncoderConfig(tiny_models("xlm-roberta", "multilingual-e5-small"),
                                     backend="torch").resolve())
    assert enc.prefix == "passage: "
    plan = enc.plan_documents([text], LongTextConfig(chunk_tokens=128, overlap=16))[0]
    offsets = enc.tokenizer.ids_and_offsets([enc.prefix + text])[1][0]
    shared = sum(a == b for a, b in zip(offsets, offsets[1:]))
    assert shared > 100  # characters really are split into several tokens
    same, total = check_plan(enc, text, plan, 128, 16)
    assert total > 5 and same / total >= 0.5
    docs, _ = enc.encode_documents([text], LongTextConfig(chunk_tokens=128, overlap=16))
    assert [(c.char_start, c.char_end) for c in docs[0].chunks] == [
        (s.char_start, s.char_end) for s in plan.spans]
    for sp in plan.spans:  # never between two tokens of one character
        k = plan.prefix_tokens
        for b in (sp.token_start, sp.token_end):
            if 0 < b < len(plan.ids) - k:
                assert offsets[k + b - 1] != offsets[k + b]
        text.encode("utf-8")  # and the span is valid text
        assert text[sp.char_start:sp.char_end].encode("utf-8").decode("utf-8")
    # SentencePiece-style (Metaspace) tokenizer
    tok = _metaspace_tokenizer()
    enc_sp = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = chunk_spans(text, enc_sp["offset_mapping"], 64, 8)
    ids = enc_sp["input_ids"]
    assert len(spans) > 4 and spans[-1].token_end == len(ids)
    lone = tok.convert_tokens_to_ids("\u2581")
    exact = modulo_lead = 0
    for sp in spans:
        again = tok(text[sp.char_start:sp.char_end], add_special_tokens=False)["input_ids"]
        exact += again == ids[sp.token_start:sp.token_end]
        # re-tokenised alone, a window starting inside a run of Chinese (no spaces: one
        # SentencePiece 'word') gains the '▁' that marks a word start; nothing else differs
        modulo_lead += (again[1:] if again[:1] == [lone] else again) == \
            ids[sp.token_start:sp.token_end]
    assert modulo_lead == len(spans), f"{modulo_lead} of {len(spans)}"
    if base is RUSSIAN:
        assert exact == len(spans)


def test_fail_and_truncate_report_tokens(minilm):
    text = licences()["GPL-3"]
    n = len(minilm.tokenizer.ids([text], special_tokens=False)[0])
    docs, stats = minilm.encode_documents([text, "short"], LongTextConfig("fail"))
    assert f"{n} tokens, over the limit of 254" in docs[0].error and not docs[1].error
    assert stats.failed == 1
    docs, stats = minilm.encode_documents([text, "short"], LongTextConfig("truncate"))
    assert docs[0].tokens_cut == n - 254 == stats.tokens_cut and docs[1].tokens_cut == 0
    c = docs[0].chunks[0]
    assert c.char_start == len(text) - len(text.lstrip())  # the title is indented
    assert text[c.char_start:c.char_end].startswith("GNU GENERAL")
    assert minilm.tokenizer.ids([text[:c.char_end]], special_tokens=False)[0] == \
        minilm.tokenizer.ids([text], special_tokens=False)[0][:254]


def test_chunk_tokens_beyond_what_the_prefix_leaves_is_said_once(minilm_dir, caplog):
    """--chunk-tokens 254 passes the launcher's check (256 less [CLS]/[SEP]) but "passage: "
    takes 2 more tokens on the worker: the windows are 252 tokens and a warning says so, once."""
    from beam_e5.model.profiles import ProfileOverrides

    encoder = Encoder.load(EncoderConfig(
        minilm_dir, backend="torch",
        overrides=ProfileOverrides(passage_prefix="passage: ")).resolve())
    cfg = LongTextConfig(chunk_tokens=254, overlap=0)
    cfg.check_budget(254)  # what the launcher checks: it fits
    text = " ".join(f"word{i}" for i in range(600))
    with caplog.at_level("WARNING", logger="beam_e5.model.encoder"):
        plans = encoder.plan_documents([text, text], cfg)
    said = [r.getMessage() for r in caplog.records if "--chunk-tokens 254" in r.getMessage()]
    assert plans[0].prefix_tokens == 2  # "passage", ":"
    assert said == [f"beam-e5: {cfg.shortened(252)}"]
    assert max(s.token_end - s.token_start for s in plans[0].spans) == 252
