"""Beam transforms: the RunInference model handler, ``EmbedTexts``, exact and semantic dedupe,
the re-embed split.

Importing this package imports Beam's RunInference module (``apache_beam.ml.inference.base``)
without its optional ``ModelManager``, whose module imports torch and scipy: 1.0 s and about
210 MiB of every process that embeds with a CPU runtime (ONNX Runtime, OpenVINO), which needs
neither (measured: ``bench/bench_startup.py``; docs/benchmarks.md, "Sixth round"). Beam's
module already treats ModelManager as optional (an ``ImportError`` leaves it None) and
imports it itself when a pipeline asks for it (``RunInference(..., use_model_manager=True)``),
so Beam loses nothing: it is only not imported up front. beam-e5 never asks for it.

A worker process (Dataflow, Flink, Spark, the DirectRunner's ``multi_processing`` mode)
imports Beam's module as it unpickles the first RunInference DoFn, before any beam-e5 code
runs, unless it has imported this package first: Beam's ``--beam_plugins`` option names
modules that every worker imports at start-up (``sdk_worker_main``), before any bundle.
The embed job adds this package to it (:func:`with_worker_imports`), and Dataflow adds
:class:`WorkerImports` (a ``BeamPlugin``) to every job whose launcher imported this package.
"""

from __future__ import annotations

import sys

from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.utils.plugin import BeamPlugin

_BASE = "apache_beam.ml.inference.base"
_MODEL_MANAGER = "apache_beam.ml.inference.model_manager"


def import_run_inference_without_model_manager() -> None:
    """Import Beam's RunInference module with its ModelManager left to be imported on use.

    The ModelManager's module is marked absent (``sys.modules[name] = None``, which makes its
    import raise ``ImportError``) while Beam's module imports, then unmarked, so a later
    import of it works. Nothing changes where the module is already imported (the user's
    code or a worker's unpickling got there first) or where Beam's import needs it after all
    (a Beam version without the fallback): then it is imported as usual."""
    if _BASE in sys.modules or _MODEL_MANAGER in sys.modules:
        return
    sys.modules[_MODEL_MANAGER] = None  # type: ignore[assignment]
    try:
        import apache_beam.ml.inference.base as base
    except ImportError:  # this Beam cannot do without it: import it as usual
        sys.modules.pop(_MODEL_MANAGER, None)
        import apache_beam.ml.inference.base as base
    finally:
        if sys.modules.get(_MODEL_MANAGER, ...) is None:
            del sys.modules[_MODEL_MANAGER]
    if getattr(base, "resource", True) is None:
        # Beam's fallback also drops the resource module it imports beside ModelManager
        # (the model-load memory metric): put it back
        try:
            import resource
        except ImportError:  # not on this platform: Beam's None stands
            return
        base.resource = resource


import_run_inference_without_model_manager()

WORKER_PLUGIN = __name__  # "beam_e5.transforms"


class WorkerImports(BeamPlugin):
    """Makes Dataflow's workers import this package at start-up: its runner names every
    ``BeamPlugin`` subclass in ``--beam_plugins`` itself (a worker imports
    ``beam_e5.transforms.WorkerImports``'s module)."""


def with_worker_imports(beam_args: list[str]) -> list[str]:
    """``beam_args`` with this package among the ``--beam_plugins`` (the user's kept), so
    that each worker process imports it before unpickling the first DoFn."""
    plugins = PipelineOptions(beam_args).view_as(SetupOptions).beam_plugins or []
    if WORKER_PLUGIN in plugins:
        return list(beam_args)
    return [*beam_args, f"--beam_plugins={WORKER_PLUGIN}"]
