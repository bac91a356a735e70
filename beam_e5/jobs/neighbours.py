"""Nearest-neighbour lookup over a finished run: a quick way to see the vectors work.

    beam-e5 neighbours --vectors OUT/ --model MODEL --query "how do I ..." [--k 5]

The query is embedded with the same model and ``role=query`` (E5 ``query: `` prefix), then
compared by cosine (a dot product: all vectors are unit length) with every stored vector.
This is a local inspection tool, not a vector database: it loads the vectors into memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa

from beam_e5.errors import ConfigError
from beam_e5.io.rundir import read_manifest
from beam_e5.io.sinks import read_vectors
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder


@dataclass(frozen=True)
class Neighbour:
    id: str
    score: float
    label: str  # the run's kept fields, "name=value" joined


BUILT_IN_COLUMNS = ("id", "embedding", "text_sha256", "tokens", "doc_id", "chunk", "chunks",
                    "char_start", "char_end", "tokens_cut")


def load_vectors(output_dir: str) -> tuple[list[str], np.ndarray, list[str]]:
    read_manifest(output_dir)  # only complete runs
    tables = list(read_vectors(output_dir.rstrip("/") + "/vectors-*.parquet"))
    if not tables:
        raise ConfigError(f"{output_dir} has no vectors-*.parquet files")
    table = pa.concat_tables(tables)
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    matrix = emb.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
    kept = [c for c in table.column_names if c not in BUILT_IN_COLUMNS]
    values = [table.column(c).to_pylist() for c in kept]
    labels = ["  ".join(f"{c}={v[i]}" for c, v in zip(kept, values) if v[i] is not None)
              for i in range(table.num_rows)]
    ids = table.column("id").to_pylist()
    if "chunk" in table.column_names:  # a chunk row: where its text lies in the document
        where = zip(table.column("chunk").to_pylist(), table.column("chunks").to_pylist(),
                    table.column("char_start").to_pylist(), table.column("char_end").to_pylist())
        labels = [(f"{lab}  chars {s}:{e}".strip() if c is not None and n > 1 else lab)
                  for lab, (c, n, s, e) in zip(labels, where)]
    return ids, matrix, labels


def nearest(query_vector: np.ndarray, ids: list[str], matrix: np.ndarray,
            labels: list[str], k: int) -> list[Neighbour]:
    """Top ``k`` by cosine; ties broken by id so the answer is deterministic."""
    scores = matrix @ query_vector
    order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), ids[i]))[:k]
    return [Neighbour(ids[i], float(scores[i]), labels[i]) for i in order]


def corpus_texts(path: str, wanted: set[str], id_field: str = "id",
                 text_field: str = "text") -> dict[str, str]:
    found = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            rid = str(rec.get(id_field))
            if rid in wanted:
                found[rid] = str(rec.get(text_field, ""))
    return found


def run_neighbours(vectors_dir: str, encoder: EncoderConfig, query: str, k: int,
                   corpus: Optional[str] = None) -> list[Neighbour]:
    ids, matrix, labels = load_vectors(vectors_dir)
    enc = Encoder.load(encoder.resolve())
    qvec, _ = enc.encode([query])
    result = nearest(qvec[0], ids, matrix, labels, k)
    # a chunk row is DOCID#N (and says "chars a:b"); any other row's id is the document's
    # own, which may hold '#' itself (man1/tar.1.gz#9)
    doc_ids = [n.id.rsplit("#", 1)[0] if "  chars " in n.label else n.id for n in result]
    texts = corpus_texts(corpus, set(doc_ids)) if corpus else {}
    print(f"{len(ids):,} vectors; top {k} for query {query!r} "
          f"(prefix {enc.prefix!r}, model {encoder.model}):")
    for rank, (n, doc_id) in enumerate(zip(result, doc_ids), 1):
        text = texts.get(doc_id, "")
        if "  chars " in n.label:  # a chunk: its own characters
            start, end = n.label.rsplit("  chars ", 1)[1].split(":")
            text = text[int(start):int(end)]
        snippet = " ".join(text.split())[:110]
        print(f"{rank:>2}. {n.score:.4f}  {n.id}  {n.label}".rstrip())
        if snippet:
            print(f"      {snippet}")
    return result
