"""Texts the model cannot read: no token at all, or nothing but the tokenizer's unknown token.

Such a text still gets a vector (the prefix and special tokens alone make one), but it says
nothing about the text: unrelated texts come out identical and semantic dedupe would then
drop them as duplicates of each other. :func:`degenerate_reason` says why a text must go to
the errors output instead; :func:`mostly_unknown` flags texts that are embedded but should
be looked at (counted in the summary and manifest).
"""

from __future__ import annotations

MOSTLY_UNKNOWN_FRACTION = 0.5


def degenerate_reason(content_tokens: int, unknown_tokens: int) -> str:
    """Why a text with ``content_tokens`` tokens of its own (prefix and special tokens not
    counted), ``unknown_tokens`` of them unknown, cannot be embedded; "" if it can."""
    if content_tokens <= 0:
        return ("the text tokenises to nothing (only zero-width, control or other characters "
                "the tokenizer drops): its vector would not depend on it")
    if unknown_tokens >= content_tokens:
        return (f"every token of the text is the tokenizer's unknown token ({unknown_tokens} "
                "[UNK]): its vector would not depend on it. Is the model right for this "
                "language or script?")
    return ""


def mostly_unknown(content_tokens: int, unknown_tokens: int) -> bool:
    """More than half of the text's own tokens are unknown (embedded, but warned about)."""
    return content_tokens > 0 and unknown_tokens > MOSTLY_UNKNOWN_FRACTION * content_tokens


__all__ = ["MOSTLY_UNKNOWN_FRACTION", "degenerate_reason", "mostly_unknown"]
