"""Compatibility import path: ``EmbedTexts`` lives in :mod:`beam_e5.transforms.embed_texts`.

Kept so that ``from beam_e5.embed import EmbedTexts`` (the README's form before 0.2) keeps
working; new code writes ``from beam_e5 import EmbedTexts``.
"""

from beam_e5.transforms.embed_texts import EmbedTexts

__all__ = ["EmbedTexts"]
