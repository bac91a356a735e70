"""beam-e5: E5/GTE text embeddings on Apache Beam, with exact and semantic dedupe."""

__version__ = "0.1.0"
