"""Importing ``beam_e5.transforms`` brings Beam's RunInference without its ModelManager (whose
module imports torch and scipy), and a job on a CPU runtime then never imports torch. Each
check runs in a fresh interpreter: what is imported is process-wide."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_runinference_is_imported_without_torch_and_beam_can_still_load_its_model_manager():
    found = _python(
        "import json, resource, sys\n"
        "import beam_e5.transforms.embed_texts\n"
        "import apache_beam.ml.inference.base as base\n"
        "before = {m: m in sys.modules for m in ('torch', 'scipy.optimize', "
        "'apache_beam.ml.inference.model_manager')}\n"
        "state = {'before': before, 'manager': base.ModelManager, "
        "'resource': base.resource is resource}\n"
        "from apache_beam.ml.inference.model_manager import ModelManager\n"  # what Beam does on use
        "state['later'] = ModelManager.__name__\n"
        "print(json.dumps(state))")
    assert found["before"] == {"torch": False, "scipy.optimize": False,
                               "apache_beam.ml.inference.model_manager": False}
    assert found["manager"] is None  # Beam imports it itself when a pipeline asks for one
    assert found["resource"]  # the model-load memory metric still reads the process's RSS
    assert found["later"] == "ModelManager"


def test_where_beam_came_first_nothing_changes():
    found = _python(
        "import json, sys\n"
        "import apache_beam.ml.inference.base as base\n"
        "import beam_e5.transforms\n"
        "print(json.dumps({'manager': base.ModelManager.__name__, "
        "'torch': 'torch' in sys.modules}))")
    assert found == {"manager": "ModelManager", "torch": True}


def test_an_embed_job_on_a_cached_cpu_runtime_never_imports_torch(tiny_models, tmp_path):
    """The second run finds the ONNX graph cached: torch, transformers and scipy stay out of
    the process (the first run builds the graph, which needs torch). The defaults, as a user
    runs it: ``--device auto`` is the CPU without asking torch where no GPU driver is."""
    from beam_e5.model.hardware import gpu_driver_present

    if gpu_driver_present():
        pytest.skip("a GPU driver is installed: --device auto asks torch, as it should")
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"text number {i} " * (i + 1)})
                              + "\n" for i in range(20)))
    model = tiny_models("bert", "e5-small-v2")
    argv = ["embed", "--input", str(corpus), "--model", model,  # --backend/--device auto
            "--model-cache-dir", str(tmp_path / "cache"), "--overwrite"]
    runs = []
    for out in ("first", "second"):
        runs.append(_python(
            "import json, runpy, sys\n"
            f"sys.argv = ['beam_e5', *{[*argv, '--output', str(tmp_path / out)]!r}]\n"
            "try:\n"
            "    runpy.run_module('beam_e5', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print(json.dumps({m: m in sys.modules for m in "
            "('torch', 'transformers', 'scipy.optimize')}))"))
    assert runs[0]["torch"]  # the graph was built from the torch model
    assert runs[1] == {"torch": False, "transformers": False, "scipy.optimize": False}
    assert sorted(p.name for p in (tmp_path / "second").glob("vectors-*.parquet"))


_WORKER_SCRIPT = """
import json, sys
import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from beam_e5.model.config import EncoderConfig
from beam_e5.transforms import with_worker_imports
from beam_e5.transforms.handler import E5ModelHandler


def imported_in_the_worker(_):  # defined in __main__: pickled by value for the worker
    import sys
    return json.dumps(sorted(m for m in ("torch", "scipy.optimize") if m in sys.modules))


model, cache, out, plugin = sys.argv[1:]
args = ["--direct_running_mode=multi_processing", "--direct_num_workers=1"]
config = EncoderConfig(model, backend="onnx", device="cpu", model_cache_dir=cache)
with beam.Pipeline(options=PipelineOptions(with_worker_imports(args) if plugin else args)) as p:
    # Beam's transforms only before RunInference: the worker's first unpickled DoFn is Beam's
    (p | beam.Create([("a", "hello world"), ("b", "more text")])
     | RunInference(E5ModelHandler(config.resolve()))
     | beam.Map(imported_in_the_worker)
     | beam.io.WriteToText(out, shard_name_template=""))
"""


def test_worker_processes_import_the_package_first_when_the_job_names_it(tiny_models,
                                                                         tmp_path):
    """A worker process of the DirectRunner's multi_processing mode (the Fn API worker that
    Dataflow and Flink run) imports ``beam_e5.transforms`` at start-up when ``--beam_plugins``
    names it, so it unpickles RunInference without torch; without it, it imports torch."""
    from beam_e5.model.config import EncoderConfig
    from beam_e5.model.encoder import Encoder
    from beam_e5.transforms import WORKER_PLUGIN, with_worker_imports

    model = tiny_models("bert", "e5-small-v2")
    cache = str(tmp_path / "cache")
    Encoder.load(EncoderConfig(model, backend="onnx", device="cpu",
                               model_cache_dir=cache).resolve())  # the graph, cached
    seen = {}
    for plugin in ("yes", ""):
        out = tmp_path / f"out-{plugin or 'no'}.txt"
        subprocess.run([sys.executable, "-c", _WORKER_SCRIPT, model, cache, str(out), plugin],
                       cwd=ROOT, check=True, timeout=300, capture_output=True)
        seen[plugin] = {line for line in out.read_text().splitlines()}
    assert seen["yes"] == {"[]"}
    assert seen[""] == {json.dumps(["scipy.optimize", "torch"])}  # the control
    assert with_worker_imports(["--runner=DataflowRunner"]) == [
        "--runner=DataflowRunner", f"--beam_plugins={WORKER_PLUGIN}"]
    mine = ["--beam_plugins=my.plugin", f"--beam_plugins={WORKER_PLUGIN}"]
    assert with_worker_imports(mine) == mine


def test_dataflow_finds_the_worker_plugin_among_beams_plugins():
    from apache_beam.utils.plugin import BeamPlugin

    import beam_e5.transforms

    assert "beam_e5.transforms.WorkerImports" in BeamPlugin.get_all_plugin_paths()
    assert beam_e5.transforms.WORKER_PLUGIN == "beam_e5.transforms"
