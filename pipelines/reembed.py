"""Runnable `beam-e5 reembed` pipeline: the entry point for Flex Templates and plain `python`.

    python pipelines/reembed.py --help
    python pipelines/reembed.py [beam-e5 reembed options] [Beam pipeline options]

Identical to `beam-e5 reembed ...`; see README.md and docs/deploy.md.
"""

import sys

from beam_e5.entry import main

if __name__ == "__main__":
    sys.exit(main(["reembed", *sys.argv[1:]]))
