"""Runnable `beam-e5 dedupe` pipeline: the entry point for Flex Templates and plain `python`.

    python pipelines/dedupe.py --help
    python pipelines/dedupe.py [beam-e5 dedupe options] [Beam pipeline options]

Identical to `beam-e5 dedupe ...`; see README.md and docs/deploy.md.
"""

import sys

from beam_e5.entry import main

if __name__ == "__main__":
    sys.exit(main(["dedupe", *sys.argv[1:]]))
