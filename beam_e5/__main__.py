"""``python -m beam_e5`` is the ``beam-e5`` command."""

import sys

from beam_e5.entry import main

sys.exit(main())
