"""Beam transforms: the RunInference model handler, ``EmbedTexts``, exact and semantic dedupe,
the re-embed split."""
