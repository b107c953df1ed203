import os
import sys

import trident

# `python -m trident.tools` started in a checkout puts its root first on sys.path, where trident's
# package folders (kernels/, tools/, models/, ...) shadow installed top-level packages of the same
# names: transformers imports Hugging Face's `kernels`. The root moves last (trident is imported
# already, and finds its folders through its own __path__).
_CHECKOUT_ROOTS = {os.path.abspath(p) for p in trident.__path__[1:]}
sys.path[:] = ([p for p in sys.path if os.path.abspath(p or os.curdir) not in _CHECKOUT_ROOTS]
               + sorted(_CHECKOUT_ROOTS))

from trident.tools.cli import main  # noqa: E402

sys.exit(main())
