"""Chunk windows from hand-built token offsets (no tokenizer, no model)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_e5.errors import ConfigError
from beam_e5.model.chunking import (
    LongTextConfig,
    chunk_spans,
    document_vector,
    split_prefix,
    text_offsets,
    truncate_span,
    window_budget,
)


def wordpiece(text: str, piece: int = 3) -> list[tuple[int, int]]:
    """Words (and punctuation) cut into pieces of ``piece`` characters, like WordPiece."""
    out = []
    for m in re.finditer(r"\w+|[^\w\s]", text):
        for s in range(m.start(), m.end(), piece):
            out.append((s, min(s + piece, m.end())))
    return out


def bytelevel(text: str) -> list[tuple[int, int]]:
    """One token per ASCII character; one per UTF-8 byte for others, all sharing the
    character's offsets (what HF byte-level BPE reports for a split character)."""
    out = []
    for i, ch in enumerate(text):
        out += [(i, i + 1)] * len(ch.encode("utf-8"))
    return out


def trimmed(text: str, sp) -> tuple[int, int]:
    """A span without the whitespace tokens at its edges (byte-level keeps spaces)."""
    piece = text[sp.char_start:sp.char_end]
    lead = len(piece) - len(piece.lstrip())
    return sp.char_start + lead, sp.char_start + len(piece.rstrip())


def word_starts(text: str) -> set[int]:
    return {m.start() for m in re.finditer(r"\S+", text)}


def word_ends(text: str) -> set[int]:
    return {m.end() for m in re.finditer(r"\S+", text)}


def char_boundary(offsets, b: int) -> bool:
    before = [e for s, e in offsets[:b] if e > s]
    after = [s for s, e in offsets[b:] if e > s]
    return not before or not after or max(before) <= min(after)


def check_invariants(text, offsets, spans, window, overlap, strict_overlap=True):
    assert spans[0].token_start == 0 and spans[-1].token_end == len(offsets)
    for a, b in zip(spans, spans[1:]):
        assert b.token_start <= a.token_end, "a token is in no chunk"
        if strict_overlap:
            assert a.token_end - b.token_start >= overlap, "overlap smaller than configured"
        assert b.token_start > a.token_start and b.token_end > a.token_end
    for sp in spans:  # never inside a character
        assert char_boundary(offsets, sp.token_start) and char_boundary(offsets, sp.token_end)
    for sp in spans:
        assert 0 < sp.tokens <= window
        chars = [o for o in offsets[sp.token_start:sp.token_end] if o[1] > o[0]]
        assert sp.char_start == min(s for s, _ in chars)
        assert sp.char_end == max(e for _, e in chars)


ENGLISH = ("The licence grants you the right to copy. It does not grant trademark rights!\n\n"
           "Section two: redistribution of modified versions is permitted, provided that the "
           "notice is kept. Warranty is disclaimed to the extent permitted by law. ") * 12


def test_one_window_when_the_text_fits():
    text = "hello brave new world"
    offs = wordpiece(text)
    assert chunk_spans(text, offs, 50, 8) == [truncate_span(text, offs, 50)]
    sp = chunk_spans(text, offs, 50, 8)[0]
    assert (sp.token_start, sp.token_end, sp.char_start, sp.char_end) == \
        (0, len(offs), 0, len(text))


def test_english_cuts_at_sentence_ends_and_starts_at_words():
    offs = wordpiece(ENGLISH)
    spans = chunk_spans(ENGLISH, offs, 64, 8)
    check_invariants(ENGLISH, offs, spans, 64, 8)
    assert len(spans) > 5
    ends = [ENGLISH[sp.char_end - 1] for sp in spans[:-1]]
    assert sum(c in ".!" for c in ends) >= len(ends) // 2, ends  # mostly sentence ends
    for sp in spans:
        assert sp.char_start in word_starts(ENGLISH) and sp.char_end in word_ends(ENGLISH)
    for a, b in zip(spans, spans[1:]):
        assert 8 <= a.token_end - b.token_start <= 16


def test_no_overlap_tiles_the_tokens():
    offs = wordpiece(ENGLISH)
    spans = chunk_spans(ENGLISH, offs, 50, 0)
    check_invariants(ENGLISH, offs, spans, 50, 0)
    assert all(a.token_end == b.token_start for a, b in zip(spans, spans[1:]))


def test_word_boundary_when_no_sentence_end_is_near():
    text = " ".join(f"word{i}" for i in range(300))  # no punctuation at all
    offs = wordpiece(text)
    spans = chunk_spans(text, offs, 40, 4)
    check_invariants(text, offs, spans, 40, 4)
    for sp in spans:
        assert sp.char_start in word_starts(text) and sp.char_end in word_ends(text)


def test_a_word_longer_than_the_window_is_cut_at_a_character():
    text = "start " + "x" * 600 + " end"
    offs = wordpiece(text)
    spans = chunk_spans(text, offs, 30, 5)
    check_invariants(text, offs, spans, 30, 5)
    assert text[spans[-1].char_start:spans[-1].char_end].endswith("end")


def test_newline_is_a_paragraph_end():
    text = ("alpha beta gamma delta\n" * 40)
    offs = wordpiece(text)
    for sp in chunk_spans(text, offs, 25, 0)[:-1]:
        assert text[sp.char_end] == "\n"


def test_chinese_without_spaces_byte_level_never_splits_a_character():
    text = "北京是中华人民共和国的首都。它有三千多年的历史，是世界著名古都。" * 20
    offs = bytelevel(text)  # 3 tokens per character
    spans = chunk_spans(text, offs, 40, 6)
    check_invariants(text, offs, spans, 40, 6)
    for sp in spans:
        # a boundary between tokens of one character is never used
        assert offs[sp.token_start] != offs[sp.token_start - 1] if sp.token_start else True
        assert sp.token_end == len(offs) or offs[sp.token_end] != offs[sp.token_end - 1]
    assert sum(text[sp.char_end - 1] in "。，" for sp in spans[:-1]) >= len(spans) // 4


def test_russian_byte_level_and_wordpiece():
    text = "Москва — столица России, крупнейший по численности населения город страны. " * 30
    for offs in (bytelevel(text), wordpiece(text)):  # byte-level: 2 tokens a letter
        spans = chunk_spans(text, offs, 64, 8)
        check_invariants(text, offs, spans, 64, 8)
        for sp in spans:
            start, end = trimmed(text, sp)
            assert start in word_starts(text) and end in word_ends(text)


def test_zero_width_tokens_carry_no_characters():
    text = "one two three four five six seven eight nine ten"
    offs = wordpiece(text)
    offs = [(0, 0)] + offs[:5] + [(0, 0)] + offs[5:]  # e.g. special tokens kept by a caller
    spans = chunk_spans(text, offs, 6, 1)
    assert spans[0].token_start == 0 and spans[-1].token_end == len(offs)
    assert spans[0].char_start == 0
    for sp in spans:
        assert sp.tokens <= 6 and text[sp.char_start:sp.char_end].strip() == \
            text[sp.char_start:sp.char_end]


def test_overlapping_offsets_are_not_a_boundary():
    # tokens 1 and 2 share character 4 (a split character): no cut between them
    text = "abcd\u00e9fgh ijkl"
    offs = [(0, 4), (4, 5), (4, 5), (5, 8), (9, 13)]
    for window in range(2, 5):
        for sp in chunk_spans(text, offs, window, 0):
            assert sp.token_start != 2 and sp.token_end != 2


def test_empty_text_is_one_empty_span():
    assert [(s.token_start, s.token_end) for s in chunk_spans("", [], 10, 2)] == [(0, 0)]


def test_truncate_span_is_the_first_window():
    offs = wordpiece(ENGLISH)
    sp = truncate_span(ENGLISH, offs, 20)
    assert (sp.token_start, sp.token_end, sp.char_start) == (0, 20, 0)
    assert sp.char_end == offs[19][1]


def _first_window_reference(text, offsets, window, prefix_chars):
    """The span of the first ``window`` tokens by the general rule: shift the offsets into
    the text, drop tokens without characters, take the smallest start and largest end."""
    kept = text_offsets(offsets, prefix_chars)[:window]
    chars = [(min(s, len(text)), min(e, len(text))) for s, e in kept]
    chars = [(s, e) for s, e in chars if e > s]
    if not chars:
        return (0, min(window, len(offsets)), 0, 0)
    return (0, min(window, len(offsets)), min(s for s, _ in chars), max(e for _, e in chars))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), prefix_chars=st.integers(0, 4), window=st.integers(1, 12))
def test_truncate_span_equals_the_general_rule(data, prefix_chars, window):
    """The one-pass span (with its in-order shortcut) agrees with the general rule on
    offsets in order, out of order, zero-width, and reaching into the prefix or past the end."""
    text = data.draw(st.text(alphabet="ab .", min_size=1, max_size=20))
    bound = len(text) + prefix_chars + 2
    pair = st.tuples(st.integers(0, bound), st.integers(-1, 4)).map(lambda p: (p[0], p[0] + p[1]))
    offsets = data.draw(st.lists(pair, max_size=15))
    sp = truncate_span(text, offsets, window, prefix_chars)
    assert (sp.token_start, sp.token_end, sp.char_start, sp.char_end) == \
        _first_window_reference(text, offsets, window, prefix_chars)


@pytest.mark.parametrize("offsets, window, prefix_chars", [
    ([(0, 1), (2, 5), (3, 4)], 5, 0),  # the last token does not end last
    ([(2, 3), (0, 1), (4, 6)], 5, 0),  # the first token does not start first
    ([(0, 0), (2, 4), (5, 5)], 5, 0),  # zero-width first and last tokens
    ([(0, 3), (3, 9), (9, 12)], 5, 3),  # the first token lies in the prefix
    ([(3, 5), (5, 20)], 5, 3),  # the last token reaches past the text
    ([(0, 2), (2, 4), (4, 6)], 2, 0),  # cut by the window
])
def test_truncate_span_hand_built(offsets, window, prefix_chars):
    text = "abcdefgh"
    sp = truncate_span(text, offsets, window, prefix_chars)
    assert (sp.token_start, sp.token_end, sp.char_start, sp.char_end) == \
        _first_window_reference(text, offsets, window, prefix_chars)


def test_prefix_split_and_shift():
    prefix = "passage: "
    text = prefix + "hello world"
    offs = [(0, 7), (7, 8), (9, 14), (15, 20)]
    assert [text[s:e] for s, e in offs] == ["passage", ":", "hello", "world"]
    assert split_prefix(offs, len(prefix)) == 2
    assert text_offsets(offs[2:], len(prefix)) == [(0, 5), (6, 11)]
    # a byte-level token holding the prefix's trailing space and the first word is text
    offs = [(0, 7), (7, 8), (8, 14), (14, 20)]
    assert split_prefix(offs, len(prefix)) == 2
    assert text_offsets(offs[2:], len(prefix)) == [(0, 5), (5, 11)]
    assert split_prefix(offs, 0) == 0


def test_document_vector_is_weighted_and_normalised():
    v = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    d = document_vector(v, [3, 1])
    assert d.dtype == np.float32 and np.isclose(np.linalg.norm(d), 1.0)
    assert np.allclose(d, np.array([3, 1]) / np.sqrt(10), atol=1e-6)


def test_config_validation():
    assert LongTextConfig().mode == "chunk"
    with pytest.raises(ConfigError, match="--long-text"):
        LongTextConfig("split")
    with pytest.raises(ConfigError, match="chunk only"):
        LongTextConfig("truncate", chunk_tokens=100)
    with pytest.raises(ConfigError, match="more than half"):
        LongTextConfig(chunk_tokens=100, overlap=60)
    with pytest.raises(ConfigError, match=">= 8"):
        LongTextConfig(chunk_tokens=4)
    cfg = LongTextConfig()
    assert cfg.window(510) == 510 and cfg.overlap_for(510) == 32 and cfg.overlap_for(40) == 10
    assert LongTextConfig(chunk_tokens=128).window(510) == 128
    with pytest.raises(ConfigError, match="more than half"):
        LongTextConfig(overlap=100).check_budget(126)
    with pytest.raises(ConfigError, match=r"--chunk-tokens 511 exceeds .*\(510 text tokens"):
        LongTextConfig(chunk_tokens=511).check_budget(510)
    LongTextConfig(chunk_tokens=510).check_budget(510)  # the whole window: fine
    assert window_budget(512) == 510
    assert LongTextConfig(chunk_tokens=510).shortened(510) is None
    assert LongTextConfig().shortened(507) is None  # no --chunk-tokens: windows fill the model
    assert LongTextConfig("truncate").shortened(10) is None
    assert "windows are 507 tokens; pass --chunk-tokens 507" in LongTextConfig(
        chunk_tokens=510).shortened(507)
    assert LongTextConfig("truncate").signature() == {}
    assert LongTextConfig().signature()["long_text"] == "chunk"


WORDS = st.sampled_from(["a", "licence", "北京", "Москва", "x" * 25, "end.", "\n\n", "é",
                         "emoji😀", "word,", "—"])


@settings(max_examples=150, deadline=None)
@given(words=st.lists(WORDS, min_size=0, max_size=150), window=st.integers(16, 64),
       data=st.data(), byte_level=st.booleans())
def test_properties(words, window, data, byte_level):
    """Coverage, budget, overlap, offsets and whole characters, on random mixed text."""
    text = " ".join(words)
    offs = bytelevel(text) if byte_level else wordpiece(text)
    overlap = data.draw(st.integers(0, window // 4))
    spans = chunk_spans(text, offs, window, overlap)
    if offs:
        check_invariants(text, offs, spans, window, overlap)


def test_overlap_holds_when_the_first_word_is_multi_byte_characters():
    """Found by test_properties in CI: a window that ended right after '北京' (6 byte tokens)
    left no character boundary 4 tokens back, and the next window started with no overlap.
    The window now ends where the next one can overlap it."""
    text = "北京 Москва"
    offs = bytelevel(text)
    spans = chunk_spans(text, offs, 16, 4)
    check_invariants(text, offs, spans, 16, 4)


@settings(max_examples=100, deadline=None)
@given(words=st.lists(WORDS, min_size=1, max_size=40), window=st.integers(4, 16),
       data=st.data())
def test_tiny_windows_of_multi_token_characters(words, window, data):
    """Windows barely wider than a character's tokens: overlap may shrink, but every token
    is covered and no cut falls inside a character."""
    text = " ".join(words)
    offs = bytelevel(text)
    overlap = data.draw(st.integers(0, window // 2))
    spans = chunk_spans(text, offs, window, overlap)
    check_invariants(text, offs, spans, window, overlap, strict_overlap=False)


def test_boundary_classes():
    from beam_e5.model.chunking import CHAR, HARD, SENTENCE, WORD, _classify

    assert _classify("ends here. Next", 10, 11) == SENTENCE
    assert _classify("one\ntwo", 3, 4) == SENTENCE
    assert _classify("see 2.3. Limits", 8, 9) == WORD  # a section number, not a sentence end
    assert _classify("hello world", 5, 6) == WORD
    assert _classify("北京", 1, 1) == WORD  # no spaces in Chinese: each character a word
    assert _classify("unbelievable", 2, 2) == CHAR
    assert _classify("abc", 2, 1) == HARD  # tokens on both sides share a character
