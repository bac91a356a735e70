"""Runnable `beam-e5 embed` pipeline: the entry point for Flex Templates and plain `python`.

    python pipelines/embed.py --help
    python pipelines/embed.py [beam-e5 embed options] [Beam pipeline options]

Identical to `beam-e5 embed ...`; see README.md and docs/deploy.md.
"""

import sys

from beam_e5.entry import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
