"""bayesglmm: mixed-effects models on JAX with statsmodels' API."""

from . import datasets
from .exceptions import ConvergenceWarning, SingularFitWarning
from .models.glmm import BinomialBayesMixedGLM, PoissonBayesMixedGLM
from .models.lmm import MixedLM, mixedlm
from .results.glmm import BayesMixedGLMResults
from .results.lmm import MixedLMResults

__version__ = "0.1.0"

__all__ = [
    "BayesMixedGLMResults",
    "BinomialBayesMixedGLM",
    "ConvergenceWarning",
    "MixedLM",
    "MixedLMResults",
    "PoissonBayesMixedGLM",
    "SingularFitWarning",
    "datasets",
    "mixedlm",
]
