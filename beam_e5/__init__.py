"""beam-e5: E5/GTE text embeddings on Apache Beam, with exact and semantic dedupe.

The public API is what this module exports (``from beam_e5 import EmbedTexts``); see the
README's "Public API" section. Names are loaded on first use, so ``import beam_e5`` stays
cheap and the lower layers never import this facade.
"""

from __future__ import annotations

import importlib
from typing import Any

from beam_e5._version import __version__

_PUBLIC = {
    "EmbedTexts": "beam_e5.transforms.embed_texts",
    "E5TextEmbeddings": "beam_e5.transforms.rag",
    "E5MLTransform": "beam_e5.transforms.beam_yaml",
    "E5ModelHandler": "beam_e5.transforms.handler",
    "Embedding": "beam_e5.transforms.handler",
    "ExactDedupe": "beam_e5.transforms.exact_dedupe",
    "SemanticDedupe": "beam_e5.transforms.semantic_dedupe",
    "SemanticDedupeConfig": "beam_e5.transforms.semantic_dedupe",
    "EncoderConfig": "beam_e5.model.config",
    "EncoderSpec": "beam_e5.model.config",
    "Encoder": "beam_e5.model.encoder",
    "LongTextConfig": "beam_e5.model.chunking",
    "ProfileOverrides": "beam_e5.model.profiles",
    "ReadCorpus": "beam_e5.io.readers",
    "ReaderConfig": "beam_e5.io.readers",
    "ConfigError": "beam_e5.errors",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'beam_e5' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
