"""bayesglmm: mixed-effects models on JAX with statsmodels' API.

The names below are imported on first use (PEP 562), so ``import bayesglmm`` does not load JAX,
scipy.stats, formulaic or pandas; ``from bayesglmm import X`` and ``bayesglmm.X`` work as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_LAZY = {
    "BayesMixedGLMResults": ".results.glmm",
    "BinomialBayesMixedGLM": ".models.glmm",
    "ConvergenceWarning": ".exceptions",
    "MixedLM": ".models.lmm",
    "ManyResults": ".results.many",
    "MixedLMResults": ".results.lmm",
    "NegativeBinomialBayesMixedGLM": ".models.negbin",
    "PoissonBayesMixedGLM": ".models.glmm",
    "SingularFitWarning": ".exceptions",
    "anova": ".inference.lrt",
    "clear_cache": "._cache",
    "compare_lr_test": ".inference.lrt",
    "fit_many": ".fits.many",
    "mixedlm": ".models.lmm",
}
_SUBMODULES = {"datasets"}

__all__ = [
    "BayesMixedGLMResults",
    "BinomialBayesMixedGLM",
    "ConvergenceWarning",
    "ManyResults",
    "MixedLM",
    "MixedLMResults",
    "NegativeBinomialBayesMixedGLM",
    "PoissonBayesMixedGLM",
    "SingularFitWarning",
    "anova",
    "clear_cache",
    "compare_lr_test",
    "datasets",
    "fit_many",
    "mixedlm",
]

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from . import datasets
    from ._cache import clear_cache
    from .exceptions import ConvergenceWarning, SingularFitWarning
    from .fits.many import fit_many
    from .inference.lrt import anova, compare_lr_test
    from .models.glmm import BinomialBayesMixedGLM, PoissonBayesMixedGLM
    from .models.lmm import MixedLM, mixedlm
    from .models.negbin import NegativeBinomialBayesMixedGLM
    from .results.glmm import BayesMixedGLMResults
    from .results.lmm import MixedLMResults
    from .results.many import ManyResults


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        importlib.import_module("._exit", __name__).install()
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
