"""The package's layers: imports flow one way, from the jobs down to the model, with no cycle.

Every ``import`` in ``beam_e5`` is read from the source with :mod:`ast`, including imports
inside functions (a lazy import that hides a cycle is still a cycle). Each module belongs to
one layer; a module may import its own layer or a lower one, never a higher one, and the
module graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "beam_e5"

# Lowest first. A module may import from its own rank or below.
LAYERS: dict[str, int] = {
    "beam_e5._version": 0,
    "beam_e5.errors": 0,
    "beam_e5.records": 0,
    "beam_e5.model": 1,
    "beam_e5.dedupe": 1,
    "beam_e5.io": 2,
    "beam_e5.transforms": 3,
    "beam_e5.jobs": 4,
    "beam_e5.cli": 5,
    "beam_e5.entry": 6,
    "beam_e5.__main__": 6,
    # Compatibility paths and the package facade re-export from every layer.
    "beam_e5.config": 7,
    "beam_e5.embed": 7,
    "beam_e5": 7,
}


FILESYSTEM_MODULES = {"apache_beam.io.filesystems", "apache_beam.io.filesystem"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def layer_of(module: str) -> int:
    best = None
    for prefix in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in {__file__}")
    return LAYERS[best]


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """beam_e5 modules that ``module`` imports, at any depth of its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                targets = [arg.value]
        for target in targets:
            # the longest known module the target names ("beam_e5.io.sinks.WriteVectors")
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {m: imported_modules(m, p, known) for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_every_module_has_a_layer():
    for module in all_modules():
        layer_of(module)


def test_imports_flow_down_only():
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            # a package's __init__ is the facade of that package, not a layer above it
            if target == "beam_e5" and module != "beam_e5":
                upward.append(f"{module} imports the package facade beam_e5 (import the module)")
            elif layer_of(target) > layer_of(module):
                upward.append(f"{module} (layer {layer_of(module)}) imports {target} "
                              f"(layer {layer_of(target)})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_model_and_dedupe_layers_do_not_import_beam():
    """The model and the dedupe rules build no Beam graph (they run in notebooks and tests).

    Beam's FileSystems is allowed: it is how model files are read from ``gs://``.
    """
    offenders = []
    for module, path in all_modules().items():
        if layer_of(module) > 1:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{module}: {n}" for n in names
                          if n.split(".")[0] == "apache_beam" and n not in FILESYSTEM_MODULES]
    assert not offenders, offenders


def test_cycle_finder_finds_a_hand_built_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("name", ["EmbedTexts", "EncoderConfig", "SemanticDedupe", "ReadCorpus",
                                  "LongTextConfig"])
def test_public_api_names_resolve(name):
    import beam_e5

    assert getattr(beam_e5, name).__name__ == name
    assert name in beam_e5.__all__


def test_compatibility_import_paths():
    from beam_e5.config import EncoderConfig as A
    from beam_e5.embed import EmbedTexts as B
    from beam_e5.model.config import EncoderConfig
    from beam_e5.transforms.embed_texts import EmbedTexts

    assert A is EncoderConfig and B is EmbedTexts


MAX_FUNCTION_LINES = 60
# what would tie a job to one output store (jobs/ speak only to beam_e5.io.targets)
STORE_NAMES = ("pg", "pgvector", "PgRun", "postgres", "psycopg", "parquet_output")


def long_functions(source: str, limit: int) -> list[str]:
    """``name (lines)`` of every function in ``source`` longer than ``limit`` lines."""
    return [f"{node.name} ({node.end_lineno - node.lineno + 1})"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_long_functions_finds_a_hand_built_one():
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    assert long_functions(f"def f():\n{body}\ndef g():\n    pass\n", 60) == ["f (62)"]


def test_no_function_is_over_60_lines():
    found = [f"{module}.{name}" for module, path in all_modules().items()
             for name in long_functions(path.read_text(encoding="utf-8"), MAX_FUNCTION_LINES)]
    assert not found, f"split these (at most {MAX_FUNCTION_LINES} lines each): {found}"


def test_jobs_name_no_output_store():
    """A job speaks to VectorOutput only: a new store touches no file in beam_e5/jobs/."""
    import re

    pattern = re.compile(r"\b(" + "|".join(STORE_NAMES) + r")\b", re.IGNORECASE)
    found = [f"{path.name}:{n}: {line.strip()}"
             for path in sorted((PACKAGE_DIR / "jobs").glob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line)]
    assert not found, found
