"""bayesglmm: mixed-effects models on JAX with statsmodels' API."""

from . import datasets
from .exceptions import ConvergenceWarning, SingularFitWarning
from .glmm import BinomialBayesMixedGLM, PoissonBayesMixedGLM
from .lmm import MixedLM, MixedLMResults, mixedlm
from .results import BayesMixedGLMResults

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
