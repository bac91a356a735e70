"""e5-base shape (random weights): static vs dynamic OpenVINO, bf16, 2 streams."""
import sys, os, time, tempfile, queue, numpy as np, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
from transformers import BertConfig, BertModel
from beam_e5.model.backends.openvino_backend import convert_ir, compile_config, IR_FILE
import openvino as ov
from pathlib import Path
out = Path(tempfile.gettempdir()) / "e5base-ir"
if not (out / IR_FILE).exists():
    out.mkdir(exist_ok=True)
    torch.manual_seed(0)
    m = BertModel(BertConfig(num_hidden_layers=12, hidden_size=768, intermediate_size=3072, num_attention_heads=12, max_position_embeddings=512), add_pooling_layer=False)
    convert_ir(m, out)
graph = str(out / IR_FILE)
prec = sys.argv[1]; rows, width = int(sys.argv[2]), int(sys.argv[3])
core = ov.Core()
cfg = compile_config(prec, 0, tempfile.mkdtemp(), "THROUGHPUT"); cfg.pop("CACHE_DIR")
def rss(): return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
r0 = rss(); t = time.perf_counter(); dyn = core.compile_model(graph, "CPU", cfg); print("dyn compile", round(time.perf_counter() - t, 2), "rss+", rss() - r0)
m = core.read_model(graph); m.reshape({"input_ids": [rows, width], "attention_mask": [rows, width]})
r0 = rss(); t = time.perf_counter(); sta = core.compile_model(m, "CPU", cfg); print("static compile", round(time.perf_counter() - t, 2), "rss+", rss() - r0)
rng = np.random.default_rng(0)
batches = [{"input_ids": rng.integers(1000, 20000, (rows, width)), "attention_mask": np.ones((rows, width), np.int64)} for _ in range(12)]
def run(compiled):
    reqs = [compiled.create_infer_request() for _ in range(2)]
    done = queue.SimpleQueue()
    for i, r in enumerate(reqs): r.set_callback(done.put, i)
    free = [0, 1]; t = time.perf_counter()
    for b in batches:
        if not free: free.append(done.get())
        reqs[free.pop()].start_async(b)
    for r in reqs: r.wait()
    return time.perf_counter() - t
run(dyn); run(sta)
res = {"dyn": [], "sta": []}
for k in range(3):
    for name, c in ((("dyn", dyn), ("sta", sta)) if k % 2 == 0 else (("sta", sta), ("dyn", dyn))):
        res[name].append(run(c))
for n, v in res.items(): print(prec, rows, width, n, [round(x, 2) for x in v], "median", round(float(np.median(v)), 3))
