"""The count-balance rule every job's manifest obeys, in documents::

    read == written + exact_duplicates + semantic_duplicates + invalid

A long document embedded in several windows is one document there; its window rows are
counted beside it (``chunk_rows``, ``chunked_documents``). A document the output could not
store is invalid: refused by its record rule before embedding (``unstorable``), or refused
while loading (``refused_at_write``: embedded, then counted invalid instead of written,
its window rows taken off ``chunk_rows``).
"""

from __future__ import annotations

__all__ = ["check_balance", "manifest_counts"]

# Counted when a stage produced them; copied to the manifest as they are.
OPTIONAL_COUNTS = ("carried", "new", "reembedded", "deleted", "chunk_rows", "chunked_documents",
                   "truncated_documents", "tokens_cut")
# Counted by outputs that refuse some records; in the manifest when not zero (every output
# then has the same counts for a corpus that every output can store)
REFUSAL_COUNTS = ("unstorable", "refused_at_write")


def check_balance(counts: dict[str, int]) -> dict[str, int]:
    """Return ``counts`` if they balance; a RuntimeError (a bug in beam-e5) if not."""
    balance = (counts["written"] + counts.get("exact_duplicates", 0)
               + counts.get("semantic_duplicates", 0) + counts["invalid"])
    if counts["read"] != balance:
        raise RuntimeError(f"counts do not balance: read={counts['read']} but written + "
                           f"duplicates + invalid = {balance} ({counts}); this is a bug, "
                           "please report it")
    return counts


def manifest_counts(raw: dict[str, int]) -> dict[str, int]:
    """The embed manifest's counts from the per-stream counts of the pipeline; balanced."""
    refused = raw.get("refused_at_write", 0)
    counts = {
        "read": raw["documents"] + raw["reader_errors"],
        "invalid": (raw["reader_errors"] + raw.get("id_conflicts", 0) + raw["embed_errors"]
                    + raw.get("unstorable", 0) + refused
                    + raw.get("id_collisions", 0)),
        "exact_duplicates": raw.get("exact_duplicates", 0),
        "semantic_duplicates": raw.get("semantic_duplicates", 0),
        "embedded": raw["embedded"],
        "written": raw["written"] - refused,
    }
    counts.update({name: raw[name] for name in OPTIONAL_COUNTS if name in raw})
    counts.update({name: raw[name] for name in REFUSAL_COUNTS if raw.get(name)})
    if "carried_chunk_rows" in raw:  # window rows of documents carried inside the store
        counts["chunk_rows"] = counts.get("chunk_rows", 0) + raw["carried_chunk_rows"]
    if raw.get("refused_window_rows"):
        counts["chunk_rows"] = counts.get("chunk_rows", 0) - raw["refused_window_rows"]
    return check_balance(counts)
