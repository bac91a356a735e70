"""Tests for beam_e5.dedupe.text_key with hand-built inputs."""

from __future__ import annotations

import hashlib

import pytest

from beam_e5.dedupe.text_key import normalize_for_key, text_key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello World", "hello world"),
        # Fullwidth letters and digits (NFKC).
        ("ＡＢＣ　１２３", "abc 123"),
        # Ligatures (NFKC).
        ("ﬁnal ﬂow", "final flow"),
        # Full case folding: sharp s folds to "ss".
        ("Straße", "strasse"),
        ("STRASSE", "strasse"),
        # Tabs, newlines, CRLF, no-break space, em space, runs of them.
        ("a\tb\nc\r\nd\u00a0e\u2003f", "a b c d e f"),
        ("  \t lead and trail \n\n ", "lead and trail"),
        ("many     spaces", "many spaces"),
        ("", ""),
        (" \t\n\u00a0", ""),
        # Superscript digit and the Kelvin sign are compatibility characters.
        ("x² at 3 \u212a", "x2 at 3 k"),
    ],
)
def test_normalize_for_key(text: str, expected: str) -> None:
    assert normalize_for_key(text) == expected


def test_text_key_is_sha256_of_normalized_utf8() -> None:
    expected = hashlib.sha256("straße ist lang".casefold().encode("utf-8")).hexdigest()
    assert text_key("  STRASSE\tist\nLANG ") == expected
    assert len(text_key("x")) == 64
    assert text_key("x") == text_key("x").lower()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Straße", "STRASSE"),
        ("ﬁle", "FILE"),
        ("ＴＥＸＴ", "text"),
        ("one\ttwo\nthree", "one two three"),
        ("no\u00a0break", "no break"),
    ],
)
def test_equivalent_texts_share_a_key(a: str, b: str) -> None:
    assert text_key(a) == text_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("color", "colour"),
        ("a b", "ab"),
        ("café", "cafe"),  # accents are kept
        ("1,000", "1000"),  # punctuation is kept
    ],
)
def test_different_texts_have_different_keys(a: str, b: str) -> None:
    assert text_key(a) != text_key(b)
