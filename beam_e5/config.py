"""Compatibility import path: ``EncoderConfig`` lives in :mod:`beam_e5.model.config`.

Kept so that ``from beam_e5.config import EncoderConfig`` (the README's form before 0.2)
keeps working; new code writes ``from beam_e5 import EncoderConfig``.
"""

from beam_e5.model.config import EncoderConfig, EncoderSpec

__all__ = ["EncoderConfig", "EncoderSpec"]
