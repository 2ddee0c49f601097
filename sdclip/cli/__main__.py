"""``python -m sdclip.cli ...``: the same command line as the ``sdclip`` script."""

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
