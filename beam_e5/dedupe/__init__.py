"""The dedupe rules, without Beam: the exact-dedupe text key and rule, the semantic (cosine)
core, threshold exploration."""
