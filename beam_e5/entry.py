"""The ``beam-e5`` process: :func:`beam_e5.cli.main` with the garbage collector set for a
short-lived command (``python -m beam_e5`` and the ``beam-e5`` script both start here).

Importing Beam, torch and transformers creates some 300,000 objects that live as long as
the process, and CPython's cyclic collector walks all of them on every full collection: five
full collections while they are imported (about 0.5 s on a 400-document job, none of which
finds anything worth freeing), more during the run, and several at interpreter shutdown
(about 1.3 s after the summary was printed). So:

* the collector is off while the command's modules are imported, and what they created is
  then frozen (:func:`gc.freeze`: moved to a generation the collector never walks, as for a
  pre-fork server); it runs as usual for everything the run creates;
* when the command returns, its output is complete (files closed, manifest written and
  published) and the summary printed: everything left is frozen too, so the shutdown frees
  objects by reference count, runs ``atexit`` handlers and flushes streams as always, but
  does not walk the heap for cycles, which would only delay the exit.

:func:`beam_e5.cli.main` itself changes nothing about the collector: a program (or a test)
that calls it in-process keeps its own policy.
"""

from __future__ import annotations

import gc
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    gc.disable()
    try:
        from beam_e5.cli import main as cli_main
    finally:
        gc.freeze()
        gc.enable()
    try:
        return cli_main(argv)
    finally:
        gc.freeze()
