"""``python -m sdclip ...``: the same command line as the ``sdclip`` script."""

import sys

from .cli import main

sys.exit(main())
