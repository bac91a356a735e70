"""Long documents: token-exact chunk windows with character offsets, and the long-text policy.

A document is tokenised once (a fast tokenizer's ``return_offsets_mapping``); this module
decides, from those token offsets alone, where to cut it into windows of at most ``window``
tokens that overlap by ``overlap`` tokens. It never re-tokenises, so the encoder feeds the
model exactly the token ids it chunked.

Cut points, in order of preference (each searched from the window's end backwards):

1. a paragraph or sentence end in the last quarter of the window;
2. a word boundary (whitespace between the tokens, or a character of a script written
   without spaces, such as Chinese, on either side, or punctuation on both sides);
3. any boundary between characters (only when a single "word" is longer than the window,
   e.g. a long base64 string);
4. a plain token boundary (only if no character boundary exists: cannot happen unless one
   character spans more tokens than the window holds).

A boundary between tokens ``b-1`` and ``b`` is a *character* boundary when every token before
it ends at or before the first character of every token after it. Byte-level BPE tokenizers
split one character (a Chinese ideograph, an emoji) into several tokens that all carry the
same character offsets; there is no character boundary between them, so a cut never lands
inside a character and ``text[char_start:char_end]`` always holds whole characters.

Tokens with empty offsets (``(0, 0)`` for special tokens, or zero-width pieces) carry no
character; they are kept in the windows but ignored for character offsets.

A chunk's characters are ``text[char_start:char_end]``: from the first character of its
first token to the last character of its last token (surrounding whitespace excluded).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Optional, Sequence

import numpy as np

from beam_e5.errors import ConfigError

LONG_TEXT_MODES = ("chunk", "truncate", "fail")
# Default overlap between consecutive windows, in tokens: about one English sentence (a
# sentence averages 20-30 tokens), so a fact cut at a window's edge is still read whole by
# one of the two windows, for ~6% more tokens at 510-token windows. Never more than a quarter
# of the window (small --chunk-tokens or --max-length).
DEFAULT_OVERLAP_TOKENS = 32
MIN_WINDOW_TOKENS = 8

_SENTENCE_END = ".!?;\u2026"  # followed by whitespace
_CJK_SENTENCE_END = "\u3002\uff01\uff1f\uff1b\uff0e"  # 。！？；． (no space follows)


def window_budget(max_length: int) -> int:
    """Text tokens a model of ``max_length`` holds at most: less [CLS]/[SEP]-style tokens
    (the prefix, checked per text, takes a few more)."""
    return max_length - 2


@dataclass(frozen=True)
class LongTextConfig:
    """What to do with a document longer than the model's window.

    mode: ``chunk`` (embed all of it, in overlapping windows), ``truncate`` (embed the first
        window, report the tokens cut) or ``fail`` (send the document to errors).
    chunk_tokens: text tokens per window (``chunk`` only); default: as many as the model's max
        length holds after the special tokens and the prefix.
    overlap: tokens shared by consecutive windows (``chunk`` only); default
        ``min(32, window // 4)``.
    """

    mode: str = "chunk"
    chunk_tokens: Optional[int] = None
    overlap: Optional[int] = None

    def __post_init__(self) -> None:
        if self.mode not in LONG_TEXT_MODES:
            raise ConfigError(f"--long-text must be one of {', '.join(LONG_TEXT_MODES)}, "
                              f"got {self.mode!r}")
        if self.mode != "chunk" and (self.chunk_tokens is not None or self.overlap is not None):
            raise ConfigError(f"--chunk-tokens and --chunk-overlap apply to --long-text chunk "
                              f"only; drop them or use --long-text chunk (got {self.mode})")
        if self.chunk_tokens is not None and (isinstance(self.chunk_tokens, bool) or not isinstance(
                self.chunk_tokens, int) or self.chunk_tokens < MIN_WINDOW_TOKENS):
            raise ConfigError(f"--chunk-tokens must be an integer >= {MIN_WINDOW_TOKENS}, "
                              f"got {self.chunk_tokens!r}")
        if self.overlap is not None and (isinstance(self.overlap, bool) or not isinstance(
                self.overlap, int) or self.overlap < 0):
            raise ConfigError(f"--chunk-overlap must be an integer >= 0, got {self.overlap!r}")
        if (self.overlap is not None and self.chunk_tokens is not None
                and 2 * self.overlap > self.chunk_tokens):
            raise ConfigError(f"--chunk-overlap {self.overlap} is more than half of "
                              f"--chunk-tokens {self.chunk_tokens}; use at most "
                              f"{self.chunk_tokens // 2}")

    def window(self, budget: int) -> int:
        """Text tokens per window, given what the model holds (``budget``)."""
        return min(self.chunk_tokens or budget, budget)

    def shortened(self, budget: int) -> Optional[str]:
        """What to tell the user when ``--chunk-tokens`` is more than a window holds once the
        prefix's tokens are known (on the workers: the launcher checks against the window less
        the special tokens only), or None when it fits."""
        if self.mode != "chunk" or self.chunk_tokens is None or self.chunk_tokens <= budget:
            return None
        return (f"--chunk-tokens {self.chunk_tokens} is more than the model's window holds "
                f"after its special tokens and the prefix ({budget} text tokens): windows are "
                f"{budget} tokens; pass --chunk-tokens {budget} to say so, or leave it out")

    def overlap_for(self, window: int) -> int:
        """Overlap in tokens for a window of ``window`` tokens (at most half of it)."""
        if self.overlap is None:
            return min(DEFAULT_OVERLAP_TOKENS, window // 4)
        return min(self.overlap, window // 2)

    def check_budget(self, budget: int) -> None:
        """Fail before the run if the model's window cannot hold the configured windows:
        ``--chunk-tokens`` beyond it (it would be cut to the window silently, while the
        manifest said otherwise), or an overlap over half of it."""
        if self.mode == "chunk" and budget < MIN_WINDOW_TOKENS:
            raise ConfigError(f"the model's window holds only {budget} text tokens after its "
                              f"special tokens and prefix; raise --max-length")
        if self.mode == "chunk" and self.chunk_tokens is not None and self.chunk_tokens > budget:
            raise ConfigError(f"--chunk-tokens {self.chunk_tokens} exceeds what the model's "
                              f"window holds ({budget} text tokens: max length less its special "
                              f"tokens); pass --chunk-tokens {budget} or less, or leave it out "
                              "(windows then fill the model)")
        if self.mode == "chunk" and self.overlap is not None and 2 * self.overlap > self.window(
                budget):
            raise ConfigError(f"--chunk-overlap {self.overlap} is more than half of the window "
                              f"({self.window(budget)} tokens); use at most "
                              f"{self.window(budget) // 2}")

    def signature(self) -> dict[str, Any]:
        """What enters the model signature (``truncate``, the old behaviour, adds nothing)."""
        if self.mode == "truncate":
            return {}
        out: dict[str, Any] = {"long_text": self.mode}
        if self.mode == "chunk":
            out.update({"chunk_tokens": self.chunk_tokens or "max",
                        "chunk_overlap": "default" if self.overlap is None else self.overlap})
        return out


@dataclass(frozen=True)
class ChunkSpan:
    """Tokens ``[token_start, token_end)`` of a document, and their characters."""

    token_start: int
    token_end: int
    char_start: int
    char_end: int

    @property
    def tokens(self) -> int:
        return self.token_end - self.token_start


# Boundary classes: how good a cut between two tokens is.
HARD, CHAR, WORD, SENTENCE = 0, 1, 2, 3


def _no_space_script(ch: str) -> bool:
    """Characters of scripts written without spaces between words (each one a 'word')."""
    o = ord(ch)
    return (0x2E80 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF or 0xF900 <= o <= 0xFAFF
            or 0xFF00 <= o <= 0xFFEF or 0x20000 <= o <= 0x3FFFF or 0x0E00 <= o <= 0x0EFF)


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def _clean_offsets(offsets: Sequence[Sequence[int]], length: int) -> list[tuple[int, int]]:
    out = []
    for start, end in offsets:
        start, end = max(0, min(int(start), length)), max(0, min(int(end), length))
        out.append((start, end) if end > start else (0, 0))  # zero-width: no character
    return out


class _Boundaries:
    """Per boundary ``b`` (between tokens ``b-1`` and ``b``): its class and characters."""

    def __init__(self, text: str, offsets: list[tuple[int, int]]) -> None:
        n = len(offsets)
        self.n = n
        left_end = [0] * (n + 1)  # max end of the tokens before b
        run = 0
        for i, (s, e) in enumerate(offsets):
            if e > s:
                run = max(run, e)
            left_end[i + 1] = run
        right_start = [len(text)] * (n + 1)  # min start of the tokens from b on
        run = len(text)
        for i in range(n - 1, -1, -1):
            s, e = offsets[i]
            if e > s:
                run = min(run, s)
            right_start[i] = run
        self.left_end, self.right_start = left_end, right_start
        self.cls = [HARD] * (n + 1)
        for b in range(n + 1):
            self.cls[b] = _classify(text, left_end[b], right_start[b])
        for b in range(1, n):
            s, e = offsets[b - 1]
            if self.cls[b] > CHAR and e > s and text[s:e].isspace():
                # after a whitespace-only token (SentencePiece's lone '▁', byte-level 'Ġ'):
                # that token belongs to the next word, so cut before it
                self.cls[b] = CHAR
        self.cls[0] = self.cls[n] = SENTENCE
        self.offsets = offsets

    def span(self, start: int, end: int) -> ChunkSpan:
        chars = [(s, e) for s, e in self.offsets[start:end] if e > s]
        if not chars:
            pos = self.left_end[start]
            return ChunkSpan(start, end, pos, pos)
        return ChunkSpan(start, end, min(s for s, _ in chars), max(e for _, e in chars))

    def earliest(self, lo: int, hi: int, at_least: int) -> Optional[int]:
        for b in range(lo, hi + 1):
            if self.cls[b] >= at_least:
                return b
        return None

    def latest(self, lo: int, hi: int, at_least: int) -> Optional[int]:
        for b in range(hi, lo - 1, -1):
            if self.cls[b] >= at_least:
                return b
        return None


def _classify(text: str, left_end: int, right_start: int) -> int:
    if left_end > right_start:
        return HARD  # a character (or more) is shared by tokens on both sides
    gap = text[left_end:right_start]
    lc = text[left_end - 1] if left_end > 0 else " "
    rc = text[right_start] if right_start < len(text) else " "
    around = gap + lc + rc
    space = any(c.isspace() for c in gap) or lc.isspace() or rc.isspace()
    # ". " ends a sentence, but not after a digit: "2.3. Limitations", "1. Install"
    before = text[left_end - 2] if left_end > 1 else " "
    if ("\n" in around or (lc in _SENTENCE_END and space and not before.isdigit())
            or lc in _CJK_SENTENCE_END):
        return SENTENCE
    if (space or _no_space_script(lc) or _no_space_script(rc)
            or (not lc.isalnum() and not rc.isalnum() and (_is_punct(lc) or _is_punct(rc)))):
        return WORD
    return CHAR


def chunk_spans(text: str, offsets: Sequence[Sequence[int]], window: int,
                overlap: int) -> list[ChunkSpan]:
    """Cut a document's tokens into windows of at most ``window`` tokens.

    ``offsets`` are the character ``(start, end)`` of each text token (no special or prefix
    tokens) in ``text``. Consecutive windows share at least ``overlap`` tokens (more when
    the next window must start at a word boundary further back: at most
    ``max(2 * overlap, window // 2)`` unless no word boundary is that near; less only for
    windows barely wider than one character's tokens); every token lies in a window.
    A text of at most ``window`` tokens is one span.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0 <= 2 * overlap <= window:
        raise ValueError(f"overlap must be in [0, window / 2], got {overlap} for {window}")
    bounds = _Boundaries(text, _clean_offsets(offsets, len(text)))
    n = bounds.n
    spans = []
    start = end = 0
    while True:
        if n - start <= window:
            spans.append(bounds.span(start, n))
            return spans
        hi = start + window
        floor = end + 1  # each window ends after the previous one
        lo = max(start + overlap + 1, floor)  # room for the next window's overlap
        # ... counted from the first character boundary after ``start``, where the next
        # window can begin (a character split into several byte tokens has none inside)
        first = bounds.earliest(start + 1, hi, CHAR)
        if first is not None and overlap:
            lo = max(lo, min(first + overlap, hi))
        end = (bounds.latest(max(lo, hi - max(window // 4, 1)), hi, SENTENCE)
               or bounds.latest(lo, hi, WORD) or bounds.latest(lo, hi, CHAR)
               or bounds.latest(floor, hi, CHAR) or hi)
        spans.append(bounds.span(start, end))
        target = end - overlap
        if overlap == 0:
            nxt = end
        else:
            # the next window starts at a word near ``overlap`` tokens back; failing that at
            # a character boundary; failing that (tiny windows of multi-token characters)
            # right at this window's end rather than inside a character
            nxt = (bounds.latest(max(start + 1, end - max(2 * overlap, window // 2)), target,
                                 WORD)
                   or bounds.latest(start + 1, target, CHAR)
                   or (end if bounds.cls[end] >= CHAR else max(target, start + 1)))
            if (nxt + window < n and bounds.cls[end] >= CHAR
                    and bounds.latest(end + 1, nxt + window, CHAR) is None):
                nxt = end  # from nxt no window could end past this one at a character
        start = nxt


def truncate_span(text: str, offsets: Sequence[Sequence[int]], window: int,
                  prefix_chars: int = 0) -> ChunkSpan:
    """The first ``window`` tokens of a document (what ``truncate`` embeds, and the one span
    of a document that fits).

    ``offsets`` may be into ``prefix + text``: ``prefix_chars`` shifts them (as
    :func:`text_offsets` does). A cut at a fixed token needs no boundary analysis, so this
    is one pass over the kept tokens: it runs for every document, chunked or not.
    """
    end = min(window, len(offsets))
    length = len(text)
    kept = offsets[:end]
    if kept:  # the usual case, at C speed: the first token starts first, the last ends last
        (s0, e0), (s1, e1) = kept[0], kept[-1]
        if s0 == min(map(itemgetter(0), kept)) and e1 == max(map(itemgetter(1), kept)):
            lo, first_end = _clamp(s0 - prefix_chars, length), _clamp(e0 - prefix_chars, length)
            last_start, hi = _clamp(s1 - prefix_chars, length), _clamp(e1 - prefix_chars, length)
            if first_end > lo and hi > last_start:  # both hold characters of the text
                return ChunkSpan(0, end, lo, hi)
    lo, hi = length, -1
    for s, e in kept:
        if e > s:
            s, e = _clamp(s - prefix_chars, length), _clamp(e - prefix_chars, length)
            if e > s:
                if s < lo:
                    lo = s
                if e > hi:
                    hi = e
    return ChunkSpan(0, end, lo, hi) if hi >= 0 else ChunkSpan(0, end, 0, 0)


def _clamp(x: int, length: int) -> int:
    return 0 if x < 0 else length if x > length else x


def split_prefix(offsets: Sequence[Sequence[int]], prefix_chars: int) -> int:
    """How many leading tokens of ``prefix + text`` belong to the prefix alone.

    A token that reaches past the prefix (a byte-level BPE token holding the prefix's
    trailing space and the text's first word) belongs to the text.
    """
    k = 0
    while k < len(offsets) and prefix_chars > 0 and offsets[k][1] <= prefix_chars:
        k += 1
    return k


def text_offsets(offsets: Sequence[Sequence[int]], prefix_chars: int) -> list[tuple[int, int]]:
    """Offsets into ``prefix + text`` shifted to offsets into ``text``."""
    out = []
    for s, e in offsets:
        if e <= s:
            out.append((0, 0))
        else:
            out.append((max(0, s - prefix_chars), max(0, e - prefix_chars)))
    return out


def document_vector(vectors: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    """Token-weighted mean of a document's chunk vectors, L2-normalised (float32)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1, 1)
    if w.sum() <= 0:
        w = np.ones_like(w)
    mean = (np.asarray(vectors, dtype=np.float64) * w).sum(axis=0) / w.sum()
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)


__all__ = ["ChunkSpan", "DEFAULT_OVERLAP_TOKENS", "LONG_TEXT_MODES", "LongTextConfig",
           "chunk_spans", "document_vector", "split_prefix", "text_offsets", "truncate_span"]
