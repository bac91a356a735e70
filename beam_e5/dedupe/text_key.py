"""The dedupe key of a document's text.

Two texts are *exact* duplicates when their keys are equal. The key ignores the
differences that do not change what a text says to a reader or to an embedding model:

1. Unicode compatibility forms (NFKC): fullwidth ``ＡＢＣ`` is ``ABC``, the ligature
   ``ﬁ`` is ``fi``, a no-break space is a space.
2. Case, by full Unicode case folding (``str.casefold``): ``Straße`` and ``STRASSE``
   both become ``strasse``.
3. Whitespace: every run of whitespace (spaces, tabs, newlines, other Unicode spaces)
   becomes one space, and leading/trailing whitespace is dropped.

:func:`text_key` is the lowercase hex SHA-256 of the UTF-8 encoding of the normalised
text; it is stored on every ``Document`` as ``text_sha256``.
"""

from __future__ import annotations

import hashlib
import unicodedata

__all__ = ["normalize_for_key", "text_key"]


def normalize_for_key(text: str) -> str:
    """NFKC-normalise, casefold, collapse whitespace runs to one space and strip."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    # str.split() with no argument splits on runs of any Unicode whitespace.
    return " ".join(folded.split())


def text_key(text: str) -> str:
    """Hex SHA-256 of the UTF-8 bytes of ``normalize_for_key(text)``."""
    return hashlib.sha256(normalize_for_key(text).encode("utf-8")).hexdigest()
