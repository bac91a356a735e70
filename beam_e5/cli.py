"""The ``beam-e5`` command line.

    beam-e5 embed --input corpus.jsonl --output out/ --model intfloat/e5-small-v2 [beam options]

Options this tool does not know (``--runner``, ``--direct_num_workers``, ``--project``, ...)
are passed to Beam unchanged. A misconfiguration prints one line saying what to do and exits
with status 2 before any pipeline starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import signal
import sys
import threading
from typing import Any, Optional, Sequence

from beam_e5.errors import ConfigError, RunFailed
from beam_e5.io.pg.uri import is_pg_uri
from beam_e5.io.rundir import OutputConfig, held_claims
from beam_e5.io.sinks import VECTOR_DTYPES
from beam_e5.io.snapshots import DEFAULT_MIN_RATIO
from beam_e5.model.backends.choose import BACKENDS
from beam_e5.model.config import DEVICES, DTYPES, EncoderConfig
from beam_e5.model.profiles import FAMILIES, POOLINGS, ROLES, ProfileOverrides

LOG = logging.getLogger("beam_e5")


def default_of(config: type, name: str) -> Any:
    """The default of a config dataclass's field: the one place each default is written."""
    for f in dataclasses.fields(config):
        if f.name == name:
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{config.__name__}.{name} has no plain default")
            return f.default
    raise TypeError(f"{config.__name__} has no field {name}")


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_flag(group, name: str, help_text: str) -> None:
    """A boolean flag that also takes ``--name=true|false`` (as Flex Templates pass it)."""
    group.add_argument(name, nargs="?", const=True, default=False, type=_bool, help=help_text)


def add_encoder_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--model", required=True,
                   help="Hugging Face name (intfloat/e5-small-v2), local directory or gs:// dir")
    g.add_argument("--revision", help="Hub revision (branch, tag or commit) to pin")
    g.add_argument("--role", choices=ROLES, default=default_of(EncoderConfig, "role"),
                   help="'passage' for corpus documents, 'query' for queries and symmetric "
                        "tasks (E5 prefixes differ)")
    g.add_argument("--profile", choices=list(FAMILIES),
                   help="the model's recipe (prefixes, pooling) when its name does not say it, "
                        "e.g. a fine-tuned e5 in /models/my-model; default: by model name")
    g.add_argument("--query-prefix", help="override the profile's query prefix")
    g.add_argument("--passage-prefix", help="override the profile's passage prefix")
    g.add_argument("--instruction", help="task description for E5 instruct query prefixes")
    g.add_argument("--pooling", choices=POOLINGS, help="override the profile's pooling")
    g.add_argument("--max-length", type=int,
                   help="the model's window in tokens (default: the profile's); what happens "
                        "to longer texts is --long-text's choice")
    g.add_argument("--device", choices=DEVICES, default=default_of(EncoderConfig, "device"))
    g.add_argument("--dtype", choices=DTYPES, default=default_of(EncoderConfig, "dtype"),
                   help="auto: float32 on CPU, bfloat16/float16 on CUDA; bfloat16 on a CPU "
                        "with bf16 instructions is faster and near-exact (the log says if "
                        "yours has them)")
    g.add_argument("--max-batch-tokens", type=int,
                   default=default_of(EncoderConfig, "max_batch_tokens"),
                   help="padded-token budget of one forward pass (default %(default)s)")
    g.add_argument("--max-batch-size", type=int,
                   default=default_of(EncoderConfig, "max_batch_size"),
                   help="max texts per forward pass (default %(default)s)")
    g.add_argument("--beam-batch-size", type=int,
                   default=default_of(EncoderConfig, "beam_batch_size"),
                   help="texts per Beam batch, sorted by length inside (default %(default)s)")
    g.add_argument("--torch-threads", type=int,
                   default=default_of(EncoderConfig, "torch_threads"),
                   help="CPU threads for inference, torch's, ONNX Runtime's or OpenVINO's; "
                        "0: one per core")
    g.add_argument("--backend", choices=BACKENDS, default=default_of(EncoderConfig, "backend"),
                   help="auto (default): onnx on CPU for encoder models (ONNX Runtime comes "
                        "with every install), openvino for --dtype bfloat16 on CPU where the "
                        "openvino extra is installed, torch on GPUs and for decoder models; "
                        "torch (CPU or CUDA); onnx: ONNX Runtime fp32 on CPU, same vectors, "
                        "faster; onnx-int8: int8 weights, approximate; openvino: OpenVINO "
                        "Runtime on CPU (pip install 'beam-e5[openvino]'), fp32 (same vectors) "
                        "or, with --dtype bfloat16 on a CPU with bf16 instructions, bf16 "
                        "(see docs/benchmarks.md)")
    g.add_argument("--model-cache-dir", default=None,
                   help="where gs:// models are staged on workers (default "
                        f"{default_of(EncoderConfig, 'model_cache_dir')})")
    add_flag(g, "--trust-remote-code", "allow model code from the Hub (off by default)")
    add_flag(g, "--allow-pickle-weights",
             "allow .bin/.pt weights (pickle; off by default: safetensors only)")


def encoder_config(args: argparse.Namespace) -> EncoderConfig:
    extra = {"model_cache_dir": args.model_cache_dir} if args.model_cache_dir else {}
    return EncoderConfig(
        model=args.model, role=args.role, revision=args.revision,
        overrides=ProfileOverrides(family=args.profile, query_prefix=args.query_prefix,
                                   passage_prefix=args.passage_prefix, pooling=args.pooling,
                                   max_length=args.max_length, instruction=args.instruction),
        device=args.device, dtype=args.dtype, max_batch_tokens=args.max_batch_tokens,
        max_batch_size=args.max_batch_size, beam_batch_size=args.beam_batch_size,
        trust_remote_code=args.trust_remote_code,
        allow_pickle_weights=args.allow_pickle_weights, torch_threads=args.torch_threads,
        backend=args.backend,
        **extra)


def add_reader_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("input")
    g.add_argument("--input", required=True, help="file, glob or gs:// pattern (comma-separated)")
    from beam_e5.io.readers import FORMATS, ReaderConfig

    g.add_argument("--input-format", choices=FORMATS,
                   default=default_of(ReaderConfig, "input_format"))
    g.add_argument("--id-field", default=default_of(ReaderConfig, "id_field"))
    g.add_argument("--text-field", default=default_of(ReaderConfig, "text_field"))
    g.add_argument("--title-field", default=None,
                   help="prepended to the text as 'title text' (BEIR corpora)")
    g.add_argument("--keep-fields", default="",
                   help="comma-separated input fields carried to the output (stored as "
                        "strings); FIELD:COLUMN keeps FIELD as the column COLUMN, e.g. "
                        "doc_id:source_doc_id for a field named like a column beam-e5 writes")


def reader_config(args: argparse.Namespace):
    from beam_e5.io.readers import ReaderConfig

    keep = tuple(f.strip() for f in args.keep_fields.split(",") if f.strip())
    return ReaderConfig(input=args.input, input_format=args.input_format,
                        id_field=args.id_field, text_field=args.text_field,
                        title_field=args.title_field, keep_fields=keep)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output")
    g.add_argument("--output", required=True,
                   help="directory (local or gs://), or (embed, reembed) a postgresql:// URI "
                        "with ?table=NAME")
    g.add_argument("--vector-dtype", choices=tuple(VECTOR_DTYPES),
                   default=default_of(OutputConfig, "vector_dtype"))
    add_flag(g, "--overwrite", "replace a previous run in --output")


def add_long_text_args(parser: argparse.ArgumentParser) -> None:
    from beam_e5.model.chunking import LONG_TEXT_MODES, LongTextConfig

    g = parser.add_argument_group("long documents")
    g.add_argument("--long-text", choices=LONG_TEXT_MODES,
                   default=default_of(LongTextConfig, "mode"),
                   help="a document longer than the model's window: chunk (default: embed all "
                        "of it in overlapping windows, plus a document vector), truncate (the "
                        "first window only; rows say how many tokens were cut) or fail (to "
                        "errors)")
    g.add_argument("--chunk-tokens", type=int, default=None,
                   help="text tokens per window (default: all the model's max length holds)")
    g.add_argument("--chunk-overlap", type=int, default=None,
                   help="tokens shared by consecutive windows (default: min(32, window/4))")


def long_text_config(args: argparse.Namespace):
    from beam_e5.model.chunking import LongTextConfig

    return LongTextConfig(args.long_text, args.chunk_tokens, args.chunk_overlap)


def add_pg_args(parser: argparse.ArgumentParser) -> None:
    from beam_e5.io.pg.config import INDEX_KINDS, PgSinkConfig

    def default(name: str) -> Any:
        return default_of(PgSinkConfig, name)

    g = parser.add_argument_group(
        "PostgreSQL/pgvector output (--output 'postgresql://USER@HOST:PORT/DB?table=NAME')")
    g.add_argument("--report-dir", default=None,
                   help="with a postgresql:// --output: directory (local or gs://) for the "
                        "manifest, errors, duplicates and deleted ids")
    g.add_argument("--index", choices=INDEX_KINDS, default=None,
                   help=f"vector index built after the load, cosine ops (default "
                        f"{default('index')})")
    g.add_argument("--hnsw-m", type=int, default=None,
                   help=f"HNSW m (default {default('hnsw_m')})")
    g.add_argument("--hnsw-ef-construction", type=int, default=None,
                   help=f"HNSW ef_construction (default {default('hnsw_ef_construction')})")
    g.add_argument("--ivfflat-lists", type=int, default=None,
                   help="IVFFlat lists (default: rows/1000, sqrt(rows) above 1M rows)")
    add_flag(g, "--store-text", "store the embedded text in a 'text' column")
    g.add_argument("--pg-batch-rows", type=int, default=None,
                   help=f"rows per binary COPY from a worker (default {default('batch_rows')})")
    g.add_argument("--pg-maintenance-work-mem", default=None,
                   help="maintenance_work_mem for the index build, e.g. 2GB (default: the "
                        "server's)")


# the pg flags, by PgSinkConfig field; None (not given) keeps the field's default
# the flags that only a postgresql:// --output takes, and the two whose PgSinkConfig field
# has another name (the rest are the field's own name)
PG_FLAGS = ("report_dir", "index", "hnsw_m", "hnsw_ef_construction", "ivfflat_lists",
            "pg_batch_rows", "pg_maintenance_work_mem")
PG_FIELD_OF_FLAG = {"pg_batch_rows": "batch_rows",
                    "pg_maintenance_work_mem": "maintenance_work_mem"}


def _given_pg_flags(args: argparse.Namespace) -> dict[str, Any]:
    given = {dest: getattr(args, dest) for dest in PG_FLAGS if getattr(args, dest) is not None}
    if args.store_text:
        given["store_text"] = True
    return given


def pg_output(args: argparse.Namespace):
    """A postgresql:// --output: the pgvector table, with --report-dir as run directory."""
    from beam_e5.io.pg.config import PgSinkConfig
    from beam_e5.io.targets.pgvector import PgvectorOutput

    if args.publish:
        raise ConfigError("--publish moves a pointer file; with a postgresql:// --output the run "
                          "publishes by swapping the table behind table=NAME: drop --publish")
    given = _given_pg_flags(args)
    fields = {PG_FIELD_OF_FLAG.get(dest, dest): value for dest, value in given.items()}
    sink = PgSinkConfig(args.output, fields.pop("report_dir", ""), **fields)
    return PgvectorOutput(sink, args.vector_dtype, args.overwrite)


def parquet_output(args: argparse.Namespace):
    """A directory --output (local or gs://): Parquet snapshots, an optional --publish pointer."""
    from beam_e5.io.targets.parquet import ParquetOutput

    extra = list(_given_pg_flags(args))
    if extra:
        raise ConfigError(f"--{extra[0].replace('_', '-')} applies to a postgresql:// "
                          "--output only")
    return ParquetOutput(OutputConfig(args.output, args.vector_dtype, args.overwrite),
                         args.publish)


# Which output an --output names: the first whose test accepts it (a new store: one line).
OUTPUT_KINDS = ((is_pg_uri, pg_output), (lambda output: True, parquet_output))


def vector_output(args: argparse.Namespace):
    return next(build for accepts, build in OUTPUT_KINDS if accepts(args.output))(args)


def add_semantic_args(parser: argparse.ArgumentParser, flag: str) -> None:
    g = parser.add_argument_group("semantic dedupe")
    g.add_argument(flag, dest="threshold", type=float, default=None,
                   help="drop a document whose cosine to one with a smaller order key is >= T")
    from beam_e5.dedupe.core import KEEP_CHOICES
    from beam_e5.transforms.semantic_dedupe import SemanticDedupeConfig

    g.add_argument("--keep", choices=KEEP_CHOICES, default=default_of(SemanticDedupeConfig, "keep"),
                   help="which document of a near-duplicate pair survives")


def semantic_config(args: argparse.Namespace):
    if args.threshold is None:
        return None
    from beam_e5.transforms.semantic_dedupe import SemanticDedupeConfig

    return SemanticDedupeConfig(threshold=args.threshold, keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beam-e5", allow_abbrev=False, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
            ("embed", "read a corpus, dedupe, embed, write vectors (Parquet or PostgreSQL)"),
            ("reembed", "like embed, but carry unchanged vectors over from --previous")):
        embed = sub.add_parser(name, allow_abbrev=False, help=help_text)
        add_reader_args(embed)
        add_encoder_args(embed)
        add_output_args(embed)
        add_long_text_args(embed)
        add_pg_args(embed)
        add_flag(embed, "--no-exact-dedupe", "embed every document, even exact duplicates")
        add_semantic_args(embed, "--dedupe-threshold")
        if name == "reembed":
            embed.add_argument("--previous", required=True,
                               help="previous snapshot directory, or a --publish pointer file; "
                                    "with a postgresql:// --output, that same URI")
        embed.add_argument("--publish", default=None,
                           help="pointer file (local or gs://) set to --output after success")
        embed.add_argument("--publish-min-ratio", type=float, default=DEFAULT_MIN_RATIO,
                           help="refuse to publish a run with fewer documents than this "
                                "fraction of the snapshot --publish names now (default 0.5; "
                                "0 turns the guard off); an empty run is never published")
    dedupe = sub.add_parser("dedupe", allow_abbrev=False,
                            help="remove near-duplicates from vectors of an earlier run")
    dedupe.add_argument("--input", required=True, help="vectors-*.parquet glob (local or gs://)")
    dedupe.add_argument("--output", required=True, help="directory for the result")
    add_flag(dedupe, "--overwrite", "replace a previous run in --output")
    add_flag(dedupe, "--explain", "no dedupe: write a similarity histogram and table to --output")
    dedupe.add_argument("--explain-sample", type=int, default=2000)
    dedupe.add_argument("--explain-max-vectors", type=int, default=None)
    add_semantic_args(dedupe, "--threshold")
    nn = sub.add_parser("neighbours", allow_abbrev=False,
                        help="nearest neighbours of a query in a finished run")
    nn.add_argument("--vectors", required=True, help="the --output directory of a run")
    nn.add_argument("--query", required=True)
    nn.add_argument("--k", type=int, default=5)
    nn.add_argument("--corpus", help="the run's JSONL input, to print text snippets")
    add_encoder_args(nn)
    nn.set_defaults(role="query")
    return parser


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for previous in [h for h in LOG.handlers if getattr(h, "beam_e5_cli", False)]:
        LOG.removeHandler(previous)  # main() called again in one process: one handler, the
        # current stderr (a closed stream from an earlier call would fail every log line)
    handler.beam_e5_cli = True
    LOG.addHandler(handler)
    LOG.setLevel(logging.DEBUG if verbose else logging.INFO)
    LOG.propagate = False
    beam_steps = logging.getLogger("apache_beam.runners.common")
    if not any(isinstance(f, _NotDiskFull) for f in beam_steps.filters):
        beam_steps.addFilter(_NotDiskFull())  # the CLI says it in one line


class _NotDiskFull(logging.Filter):
    """Drops Beam's traceback of a step that failed on a full disk (main() reports it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is not None
                    and disk_full(record.exc_info[1]))


def run_embed_command(args: argparse.Namespace, beam_args: list[str]) -> int:
    from beam_e5.jobs.embed import EmbedJob, run_embed

    output = vector_output(args)
    job = EmbedJob(reader=reader_config(args), encoder=encoder_config(args), output=output,
                   exact_dedupe=not args.no_exact_dedupe, semantic=semantic_config(args),
                   previous=getattr(args, "previous", None),
                   publish_min_ratio=args.publish_min_ratio, long_text=long_text_config(args))
    summary = run_embed(job, beam_args)
    print(summary.render())
    print(f"  output: {output.label}")
    if output.run_dir.output != output.label:
        print(f"  report: {output.run_dir.output}")
    return 0


def run_dedupe_command(args: argparse.Namespace, beam_args: list[str]) -> int:
    from beam_e5.jobs.dedupe import DedupeJob, run_dedupe, run_explain

    if args.explain:
        table = run_explain(args.input, args.output, args.explain_sample,
                            args.explain_max_vectors)
        print("threshold  sampled  duplicates  estimated  fraction")
        for row in table:
            print(f"{row['threshold']:>9.2f}  {row['sampled']:>7}  {row['sampled_duplicates']:>10}"
                  f"  {row['estimated_duplicates']:>9}  {row['fraction']:>8.2%}")
        print(f"histogram: {args.output}/nn_similarity.png")
        return 0
    semantic = semantic_config(args)
    if semantic is None:
        raise ConfigError("beam-e5 dedupe needs --threshold T (or --explain to choose one)")
    job = DedupeJob(args.input, OutputConfig(args.output, overwrite=args.overwrite), semantic)
    print(run_dedupe(job, beam_args).render())
    return 0


def _beam_options_parser() -> argparse.ArgumentParser:
    """A parser that knows every option of every Beam ``PipelineOptions`` class."""
    from apache_beam.options.pipeline_options import (
        PipelineOptions,
        _BeamArgumentParser,
    )

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def unknown_beam_args(beam_args: Sequence[str]) -> list[str]:
    """The leftover arguments that no Beam ``PipelineOptions`` class defines either.

    Beam itself only logs a warning for those and runs on, so a typo such as
    ``--dedupe-treshold 0.9`` would silently run without dedupe.
    """
    _, unknown = _beam_options_parser().parse_known_args(list(beam_args))
    return [a for a in unknown if a.startswith("-")]


def _suggest(arg: str, ours: argparse.ArgumentParser) -> str:
    import difflib

    known = [opt for p in (ours, _beam_options_parser()) for action in p._actions
             for opt in action.option_strings if opt.startswith("--")]
    match = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1)
    return f" (did you mean {match[0]}?)" if match else ""


INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


class StopOnInterrupt:
    """Ctrl-C (SIGINT) during a run stops it within a second, whatever the pipeline does.

    Python runs a signal handler only in the main thread, between bytecodes, so a long call
    into native code (tokenising one huge document, an inference pass) held Ctrl-C back for
    tens of seconds, and the KeyboardInterrupt then came out of some stage as a traceback.
    Here SIGINT is blocked in this thread and in every thread the run starts, and a watcher
    thread takes it (``sigtimedwait``): it gives up the run's output claims (partial files
    and the ``_RUNNING`` marker removed, so the same command can simply be rerun), prints
    one line and exits with status 130 without waiting for the pipeline's threads.

    Threads started before the block (by imports: two of them once torch, Beam and the rest
    are in) still take SIGINT, and Python's handler then waits for the main thread, which may
    wait on a whole document's inference (30 s in
    ``tests/test_hostile_round2.py``). Python's C-level handler writes the signal's number to
    its wakeup fd at once, in whichever thread took it: the watcher reads that pipe too.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._woken = threading.Event()  # __exit__ has signalled the watcher: it may end
        self._interrupted = threading.Event()  # set by the handler, for a thread started
        self._thread: Optional[threading.Thread] = None  # before the block that got SIGINT
        self._old: Any = None
        self._wakeup: Optional[tuple[int, int]] = None  # the pipe Python's handler writes to
        self._old_wakeup_fd = -1

    def __enter__(self) -> "StopOnInterrupt":
        if (threading.current_thread() is threading.main_thread()
                and hasattr(signal, "sigtimedwait")):
            self._wakeup = os.pipe()
            for fd in self._wakeup:
                os.set_blocking(fd, False)
            self._old_wakeup_fd = signal.set_wakeup_fd(self._wakeup[1],
                                                       warn_on_full_buffer=False)
            self._old = (signal.signal(signal.SIGINT, lambda *_: self._interrupted.set()),
                         signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}))
            self._thread = threading.Thread(target=self._watch, name="beam-e5-sigint",
                                            daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                got = signal.sigtimedwait({signal.SIGINT}, 0.2)
                if self._stop.is_set():  # the run ended (and __exit__ woke this thread)
                    return
                # a wait cut short past its timeout (the process was stopped and continued:
                # Ctrl-Z and fg, a debugger or profiler attaching) returns an empty siginfo
                if self._interrupted.is_set() or self._taken_elsewhere() or (
                        got is not None and got.si_signo == signal.SIGINT):
                    stop_run_now()
        finally:
            # alive until __exit__ has sent its wake-up: a signal to a thread that has ended
            # (its pthread freed) is undefined behaviour; one still pending here is dropped
            # with the thread
            self._woken.wait()

    def _taken_elsewhere(self) -> bool:
        """Has a thread that does not block SIGINT taken one (its number in the pipe)?"""
        try:
            return signal.SIGINT in os.read(self._wakeup[0], 512)
        except OSError:  # nothing written (BlockingIOError), or the pipe already closed
            return False

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            # wake the watcher now rather than at its next 0.2 s timeout: a SIGINT sent to
            # its thread alone, which it takes as the end of the run (the flag is set first)
            signal.pthread_kill(self._thread.ident, signal.SIGINT)
            self._woken.set()
            self._thread.join()
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old[1])
            signal.signal(signal.SIGINT, self._old[0])
            signal.set_wakeup_fd(self._old_wakeup_fd)
            for fd in self._wakeup or ():
                os.close(fd)


def stop_run_now() -> None:
    """Give up every output claim of this process, say so on one line, exit 130 at once."""
    places = []
    for claim in held_claims():
        try:
            claim.end(failed=True)
            if not claim.complete:
                claim.abandon()  # again: a bundle may have finished a file meanwhile
            places.append(claim.output_dir)
        except Exception:  # noqa: BLE001 - stopping must not fail; the rerun says what is left
            pass
    where = f" from {', '.join(places)}" if places else ""
    sys.stdout.flush()
    print(f"beam-e5: interrupted (Ctrl-C): the run stopped and published nothing; its partial "
          f"files were removed{where}: rerun the same command to start again",
          file=sys.stderr, flush=True)
    os._exit(INTERRUPTED_EXIT)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is ENOSPC; Beam re-raises a worker's
    OSError as another type with the text ``[Errno 28] No space left on device``."""
    seen: set[int] = set()
    stack: list[Optional[BaseException]] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or (
                f"[Errno {errno.ENOSPC}]" in str(e) or os.strerror(errno.ENOSPC) in str(e)):
            return True
        stack += [e.__cause__, e.__context__]
    return False


def disk_full_message(exc: BaseException, args: argparse.Namespace) -> str:
    """One line naming where the run was writing."""
    filename = next((e.filename for e in (exc, exc.__cause__, exc.__context__)
                     if isinstance(e, OSError) and e.filename), None)
    where = filename or (args.report_dir if is_pg_uri(args.output) else args.output)
    return (f"disk full at {where} ({os.strerror(errno.ENOSPC)}): the run stopped and "
            "published nothing, and its partial files were removed; free some space (or "
            "choose an --output on a larger disk) and rerun the same command")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if args.command == "neighbours" and beam_args:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    unknown = unknown_beam_args(beam_args) if beam_args else []
    if unknown:
        sub = parser._subparsers._group_actions[0].choices[args.command]
        parser.error(f"unrecognized option {unknown[0]}{_suggest(unknown[0], sub)}: it is "
                     f"neither a beam-e5 {args.command} option nor a Beam pipeline option "
                     f"(beam-e5 {args.command} --help lists ours)")
    setup_logging(args.verbose)
    try:
        if args.command in ("embed", "reembed"):
            with StopOnInterrupt():
                return run_embed_command(args, beam_args)
        if args.command == "dedupe":
            with StopOnInterrupt():
                return run_dedupe_command(args, beam_args)
        if args.command == "neighbours":
            from beam_e5.jobs.neighbours import run_neighbours

            run_neighbours(args.vectors, encoder_config(args), args.query, args.k, args.corpus)
            return 0
    except ConfigError as e:
        print(f"beam-e5: error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        if getattr(e, "summary", None) is not None:
            print(e.summary.render())
        print(f"beam-e5: run failed: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if not disk_full(e):
            raise
        print(f"beam-e5: run failed: {disk_full_message(e, args)}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
