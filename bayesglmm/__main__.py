"""``python -m bayesglmm``: the command line of :mod:`bayesglmm.cli` (``fit``, ``datasets``,
``warmup``, ``cache info|clear``, ``bench``)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
