"""What the handler's batching does with small bundles in a streaming pipeline.

Two measurements (the Python DirectRunner cannot run Beam's real-time ``PeriodicImpulse`` in
streaming mode: "GroupByKey ... was not replaced", so arrival is simulated by TestStream):

1. ``batches``: a TestStream on the DirectRunner in streaming mode delivers ``--n`` texts,
   one per bundle (one ``add_elements`` each, processing time advancing ``--interval`` s
   between them), into ``EmbedTexts``; per setting, the Beam batches the handler got and
   their mean and largest size (recorded in the handler: the DirectRunner runs in this
   process), the distinct keys the stateful ``BatchElements`` used, and the wall time
   (model load included).
   Settings: ``default`` (``max_batch_duration_secs`` unset: a batch never spans bundles),
   and Beam's ``max_batch_duration_secs`` = D (a stateful DoFn gathers texts across bundles
   until ``--batch-size`` texts or D seconds; TestStream's processing-time clock is virtual).
2. ``encode``: the encoder's forward-pass time for a batch of n texts (n = 1 .. 64,
   ``--repeats`` runs each, median), wall clock: the latency a batch of n adds, and its
   texts/s.

    python bench/bench_streaming_batching.py --n 64 --durations 0,0.25,1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402


def _stream(texts: list[str], interval: float):
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    stream = TestStream().advance_watermark_to(0)
    for i, text in enumerate(texts):
        stream = stream.add_elements([TimestampedValue((str(i), text), i * interval)])
        stream = stream.advance_processing_time(interval).advance_watermark_to(
            (i + 1) * interval)
    return stream.advance_watermark_to_infinity()


def run_batches(model: str, texts: list[str], interval: float, duration: float | None,
                batch_size: int) -> dict:
    from beam_e5.model.config import EncoderConfig
    from beam_e5.transforms.embed_texts import EmbedTexts
    from beam_e5.transforms.handler import E5ModelHandler

    sizes: list[int] = []  # the DirectRunner runs in this process: record each Beam batch
    when: list[float] = []
    original = E5ModelHandler.run_inference

    def recording(self, batch, model, inference_args=None):
        sizes.append(len(batch))
        when.append(time.perf_counter())
        return original(self, batch, model, inference_args)

    E5ModelHandler.run_inference = recording
    from apache_beam.transforms import util

    keys: list[str] = []  # the stateful BatchElements' keys: one per process is the design
    keyed = util.WithSharedKey.process

    def recording_keys(self, element):
        keys.append(self.key)
        return keyed(self, element)

    util.WithSharedKey.process = recording_keys
    p = beam.Pipeline(options=PipelineOptions(streaming=True))
    _ = (p | _stream(texts, interval)
         | EmbedTexts(EncoderConfig(model, beam_batch_size=batch_size),
                      max_batch_duration_secs=duration)
         | beam.Map(lambda r: r["id"]))
    t = time.perf_counter()
    try:
        p.run().wait_until_finish()
    finally:
        E5ModelHandler.run_inference = original
        util.WithSharedKey.process = keyed
    wall = time.perf_counter() - t
    return {"setting": "default" if duration is None else f"max_batch_duration_secs={duration}",
            "texts": sum(sizes), "beam_batches": len(sizes),
            "mean_batch": round(sum(sizes) / len(sizes), 2) if sizes else None,
            "largest_batch": max(sizes, default=0), "wall_s": round(wall, 2),
            "batching_keys": len(set(keys)),  # 0: the stateless (per-bundle) BatchElements
            # when the first and the last batch ran (s after the run started): batches
            # spread over the stream, or all held until the end of the stream
            "first_batch_s": round(when[0] - t, 2) if when else None,
            "last_batch_s": round(when[-1] - t, 2) if when else None}


def run_encode(model: str, texts: list[str], sizes: list[int], repeats: int) -> list[dict]:
    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder

    encoder = Encoder.load(EncoderConfig(model).resolve())
    encoder.encode(texts[:8])  # warm-up
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for r in range(repeats):  # sizes interleaved: a load change on a shared machine hits all
        for n in sizes:
            batch = [texts[(r * n + i) % len(texts)] for i in range(n)]
            t = time.perf_counter()
            encoder.encode(batch)
            times[n].append(time.perf_counter() - t)
    rows = []
    for n in sizes:
        ms = statistics.median(times[n]) * 1000
        rows.append({"batch": n, "median_ms": round(ms, 1), "ms_per_text": round(ms / n, 2),
                     "texts_per_s": round(n / ms * 1000, 1)})
    return rows


def main() -> None:
    from model_fixtures import minilm_path
    from realtext import licence_paragraphs

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="texts in the stream")
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--durations", default="0,0.25,1",
                    help="max_batch_duration_secs values; 0 = unset (the default); '' = skip")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sizes", default="1,2,4,8,16,32,64")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    # texts of one length (40 words), so batch sizes compare without padding effects
    texts = [" ".join(p.split()[:40]) for p in licence_paragraphs(400) if len(p.split()) >= 40]
    model = minilm_path()
    out = {"batches": [], "encode": []}
    for d in (float(x) for x in args.durations.split(",") if x):
        row = run_batches(model, texts[:args.n], args.interval, d or None, args.batch_size)
        print(json.dumps(row), flush=True)
        out["batches"].append(row)
    for row in run_encode(model, texts, [int(x) for x in args.sizes.split(",")], args.repeats):
        print(json.dumps(row), flush=True)
        out["encode"].append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
