"""What the text encoder makes of a prompt: tokens, per-token statistics, comparisons, similarities.

The functions live in ``api`` and their result types in ``results``; both are re-exported here, so
``from sdclip import inspection`` then ``inspection.tokens(...)`` is the way to use them.
"""

from .api import *  # noqa: F403  (the API, re-exported as it names itself)
from .api import __all__  # noqa: F401
