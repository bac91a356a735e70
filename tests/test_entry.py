"""The ``beam-e5`` process entry (:mod:`beam_e5.entry`): the garbage collector's policy for
a short-lived command, applied by ``python -m beam_e5`` and the script, never by
:func:`beam_e5.cli.main` called in-process. Each check runs in a fresh interpreter, since
frozen objects and the collector's state are process-wide."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a command that imports everything and fails fast with status 2 (no --threshold)
FAILING_DEDUPE = "['dedupe', '--input', 'none-*.parquet', '--output', {out!r}]"


def _python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_entry_imports_neither_beam_nor_torch() -> None:
    found = _python("import json, sys; import beam_e5.entry; "
                    "print(json.dumps([m for m in ('apache_beam', 'torch', 'transformers', "
                    "'beam_e5.cli') if m in sys.modules]))")
    assert found == []


def test_python_m_beam_e5_freezes_what_it_imported_and_leaves_the_collector_on(
        tmp_path) -> None:
    argv = FAILING_DEDUPE.format(out=str(tmp_path / "out"))
    state = _python(
        "import gc, json, runpy, sys\n"
        f"sys.argv = ['beam_e5', *{argv}]\n"
        "try:\n"
        "    runpy.run_module('beam_e5', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print(json.dumps({'code': code, 'enabled': gc.isenabled(), "
        "'frozen': gc.get_freeze_count(), 'beam': 'apache_beam' in sys.modules}))")
    assert state["code"] == 2 and state["beam"]
    assert state["enabled"]
    assert state["frozen"] > 10_000  # Beam's and torch's modules, classes and functions


def test_cli_main_in_process_leaves_the_collector_as_it_was(tmp_path) -> None:
    argv = FAILING_DEDUPE.format(out=str(tmp_path / "out"))
    state = _python(
        "import gc, json\n"
        "from beam_e5.cli import main\n"
        f"code = main({argv})\n"
        "print(json.dumps({'code': code, 'enabled': gc.isenabled(), "
        "'frozen': gc.get_freeze_count()}))")
    assert state == {"code": 2, "enabled": True, "frozen": 0}


def test_the_script_starts_at_the_entry() -> None:
    scripts = (ROOT / "pyproject.toml").read_text(encoding="utf-8").split("[project.scripts]")[1]
    assert scripts.split("[")[0].split() == ["beam-e5", "=", '"beam_e5.entry:main"']
