"""A plain ``pip install beam-e5`` (no extras) gets the fast CPU path: ONNX Runtime.

The package metadata is built from this checkout exactly as ``pip install .`` builds it
(setuptools' PEP 517 ``prepare_metadata_for_build_wheel``, in a scratch copy), its
``Requires-Dist`` lines without extras are followed through the installed distributions'
own requirements, and every third-party module that the ONNX backend imports must come from a
distribution in that closure. ``torch.onnx``'s exporter needs onnxscript without declaring it,
so that one is checked by name.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from beam_e5.model.backends import choose, onnxruntime_backend, openvino_backend
from beam_e5.model.onnx_graph import cache, export, quantize

ROOT = Path(__file__).resolve().parents[1]


def core_requirements(tmp_path: Path) -> list[Requirement]:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "beam_e5", tmp_path / "beam_e5",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "meta").mkdir()
    out = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta as b; "
         "print(b.prepare_metadata_for_build_wheel('meta'))"],
        cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()[-1]
    meta = (tmp_path / "meta" / out / "METADATA").read_text()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in meta.splitlines()
            if line.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def closure(reqs: list[Requirement]) -> set[str]:
    """Distributions a plain install brings, following installed metadata (no extras)."""
    seen: set[str] = set()
    todo = list(reqs)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra})
                                         for extra in (req.extras or {""})):
                todo.append(sub)
    return seen


def third_party_imports(module_file: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("beam_e5",
                                                                                "__future__")}


def test_plain_install_brings_everything_the_onnx_backend_imports(tmp_path):
    reqs = core_requirements(tmp_path)
    core = {canonicalize_name(r.name) for r in reqs}
    assert {"onnxruntime", "onnxscript", "onnx", "onnx-ir", "torch"} <= core
    installed = closure(reqs)
    providers = metadata.packages_distributions()
    imports = set().union(*(third_party_imports(Path(m.__file__))
                            for m in (onnxruntime_backend, cache, export, quantize)))
    assert {"onnxruntime", "onnx", "onnx_ir", "onnxscript", "torch"} <= imports
    missing = {mod for mod in imports
               if not {canonicalize_name(d) for d in providers.get(mod, [])} & installed}
    assert missing == set(), f"imported by the ONNX backend but not in a plain install: {missing}"


def test_the_onnx_extra_adds_nothing(tmp_path):
    """``beam-e5[onnx]`` still resolves (old install lines) but brings no extra package."""
    (tmp_path / "x").mkdir()
    reqs = core_requirements(tmp_path / "x")
    meta_dir = next((tmp_path / "x" / "meta").iterdir())
    meta = (meta_dir / "METADATA").read_text()
    assert "Provides-Extra: onnx" in meta and 'extra == "onnx"' not in meta
    assert all(r.marker is None for r in reqs)


def test_openvino_is_an_extra_and_a_plain_install_still_imports_its_module(tmp_path):
    """``--backend openvino`` needs ``pip install 'beam-e5[openvino]'``; without it the
    backend module (imported by the chooser) still imports, and ``auto`` keeps ONNX Runtime."""
    reqs = core_requirements(tmp_path)
    assert "openvino" not in {canonicalize_name(r.name) for r in reqs}
    meta = (next((tmp_path / "meta").iterdir()) / "METADATA").read_text()
    assert "Provides-Extra: openvino" in meta
    assert any(line.startswith("Requires-Dist: openvino") and 'extra == "openvino"' in line
               for line in meta.splitlines())
    installed = closure(reqs)
    providers = metadata.packages_distributions()
    imports = third_party_imports(Path(openvino_backend.__file__))
    assert "openvino" in imports  # inside the functions that run it, not at module level
    missing = {mod for mod in imports - {"openvino"}
               if not {canonicalize_name(d) for d in providers.get(mod, [])} & installed}
    assert missing == set()


def test_auto_resolves_to_onnx_on_cpu_in_this_install():
    assert onnxruntime_backend.onnx_available()
    assert choose.pick_backend("auto", "cpu", "bert") == "onnx"
    assert choose.pick_backend("auto", "cpu", "xlm-roberta") == "onnx"
    assert choose.pick_backend("auto", "cuda", "bert") == "torch"
