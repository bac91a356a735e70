"""Variant B of ``bench/bench_embed.py``: Beam's own ``MLTransform`` + ``SentenceTransformerEmbeddings``.

    python bench/mltransform_runner.py --input corpus.jsonl --output DIR --model PATH \
        --max-seq-length 256 --threads 2

Reads the JSONL corpus with ``ReadFromText`` + ``json.loads``, embeds the ``text`` column with
``MLTransform(write_artifact_location=TMP).with_transform(SentenceTransformerEmbeddings(
model_name=PATH, columns=['text'], max_seq_length=N))`` on the DirectRunner, and writes
``id`` + ``embedding`` (list<float32>) to ``DIR/vectors-*.parquet``: what a Beam user would
write without beam-e5. ``DIR/result.json`` gets the job time (the pipeline, model load and the
import of sentence-transformers/transformers included; not torch's or Beam's import) and the
batch statistics.

The batch statistics come from wrapping sentence-transformers' own methods in this process
(the DirectRunner runs the DoFns in-process): every ``SentenceTransformer.encode`` call is one
Beam batch (RunInference calls ``model.encode(batch)`` once per batch), and every
``SentenceTransformer.preprocess`` call is one forward pass, whose ``input_ids`` shape gives
the padded tokens and whose ``attention_mask`` sum gives the real tokens. The wrappers only
read shapes and one sum, so they cost nothing measurable.

:func:`instrument_sentence_transformers` is also used by variant C (plain
``SentenceTransformer.encode``), so B and C count padding the same way.

The model already L2-normalises (its ``modules.json`` ends with a ``Normalize`` module), so
no ``normalize_embeddings`` argument is needed; ``--normalize`` passes
``inference_args={'normalize_embeddings': True}`` for models that do not.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class BatchStats:
    """What the wrapped sentence-transformers methods saw, in this process."""

    def __init__(self) -> None:
        self.encode_calls = 0  # Beam batches (B) or encode() calls (C)
        self.encode_sizes: list[int] = []
        self.forward_calls = 0
        self.padded_tokens = 0
        self.real_tokens = 0
        self.max_width = 0
        self.load_seconds = 0.0

    def as_dict(self) -> dict:
        sizes = sorted(self.encode_sizes)
        return {
            "encode_calls": self.encode_calls,
            "encode_batch_size_min": sizes[0] if sizes else 0,
            "encode_batch_size_median": sizes[len(sizes) // 2] if sizes else 0,
            "encode_batch_size_max": sizes[-1] if sizes else 0,
            "forward_calls": self.forward_calls,
            "padded_tokens": self.padded_tokens,
            "real_tokens": self.real_tokens,
            "max_width": self.max_width,
            "load_seconds": round(self.load_seconds, 3),
        }


def instrument_sentence_transformers() -> BatchStats:
    """Wrap ``SentenceTransformer.__init__``, ``encode`` and ``preprocess`` to count batches."""
    from sentence_transformers import SentenceTransformer

    stats = BatchStats()
    init, encode, preprocess = (SentenceTransformer.__init__, SentenceTransformer.encode,
                                SentenceTransformer.preprocess)

    @functools.wraps(init)
    def timed_init(self, *args, **kwargs):
        start = time.perf_counter()
        init(self, *args, **kwargs)
        stats.load_seconds += time.perf_counter() - start

    @functools.wraps(encode)
    def counted_encode(self, inputs, *args, **kwargs):
        stats.encode_calls += 1
        stats.encode_sizes.append(1 if isinstance(inputs, str) else len(inputs))
        return encode(self, inputs, *args, **kwargs)

    @functools.wraps(preprocess)
    def counted_preprocess(self, *args, **kwargs):
        features = preprocess(self, *args, **kwargs)
        # a transformers BatchEncoding (a UserDict, not a dict) or a plain dict
        ids = features.get("input_ids") if hasattr(features, "get") else None
        if ids is not None and getattr(ids, "ndim", 0) == 2:
            stats.forward_calls += 1
            stats.padded_tokens += int(ids.shape[0]) * int(ids.shape[1])
            stats.max_width = max(stats.max_width, int(ids.shape[1]))
            mask = features.get("attention_mask")
            stats.real_tokens += int(mask.sum()) if mask is not None else int(ids.numel())
        return features

    SentenceTransformer.__init__ = timed_init
    SentenceTransformer.encode = counted_encode
    SentenceTransformer.preprocess = counted_preprocess
    return stats


def _to_row(row: dict) -> dict:
    emb = row["text"]
    return {"id": row["id"], "embedding": emb.tolist() if hasattr(emb, "tolist") else list(emb)}


def run(input_path: str, output_dir: str, model: str, max_seq_length: int,
        normalize: bool = False, beam_args: list[str] | None = None,
        load_model_args: dict | None = None) -> dict:
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.options.pipeline_options import PipelineOptions

    # The clock starts before sentence-transformers (and so transformers) is imported: A
    # imports transformers lazily inside its pipeline, so every variant's job time includes
    # that import, and none includes torch's or Beam's.
    start = time.perf_counter()
    from apache_beam.ml.transforms.base import MLTransform
    from apache_beam.ml.transforms.embeddings.huggingface import (
        SentenceTransformerEmbeddings,
    )

    stats = instrument_sentence_transformers()
    artifacts = tempfile.mkdtemp(prefix="bench-mltransform-artifacts-")
    extra = {"inference_args": {"normalize_embeddings": True}} if normalize else {}
    if load_model_args:
        extra["load_model_args"] = load_model_args
    embedder = SentenceTransformerEmbeddings(model_name=model, columns=["text"],
                                             max_seq_length=max_seq_length, **extra)
    schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32()))])
    os.makedirs(output_dir, exist_ok=True)
    for old in Path(output_dir).glob("vectors-*.parquet"):
        old.unlink()
    with beam.Pipeline(options=PipelineOptions(beam_args or [])) as p:
        _ = (p
             | "Read" >> beam.io.ReadFromText(input_path)
             | "Parse" >> beam.Map(json.loads)
             | "Select" >> beam.Map(lambda r: {"id": str(r["id"]), "text": r["text"]})
             | "MLTransform" >> MLTransform(write_artifact_location=artifacts)
                .with_transform(embedder)
             | "ToRow" >> beam.Map(_to_row)
             | "Write" >> beam.io.WriteToParquet(os.path.join(output_dir, "vectors"), schema,
                                                 file_name_suffix=".parquet"))
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), **stats.as_dict()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--max-seq-length", type=int, required=True)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--normalize", action="store_true",
                    help="pass normalize_embeddings=True (for models without Normalize)")
    ap.add_argument("--st-backend", choices=["torch", "openvino"], default="torch",
                    help="sentence-transformers' backend (openvino: --model is a saved "
                         "OpenVINO export; its default precision, --threads threads)")
    args, beam_args = ap.parse_known_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ov = ({"backend": "openvino", "model_kwargs": {"ov_config": {
        "INFERENCE_NUM_THREADS": str(args.threads)} if args.threads else {}}}
          if args.st_backend == "openvino" else None)
    result = run(args.input, args.output, args.model, args.max_seq_length, args.normalize,
                 beam_args, ov)
    Path(args.output, "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
