"""Linear mixed models (REML/ML) on JAX with statsmodels' ``MixedLM`` API.

Random intercepts, correlated random slopes, statsmodels variance components, and native
crossed and nested factors written lme4-style (``"y ~ x + (1 | s) + (1 | d)"``), fitted by
minimising lme4's profiled deviance (Bates et al. 2015) over the relative covariance factor θ.
"""

from .model import MixedLM, mixedlm
from .results import MixedLMResults

__all__ = ["MixedLM", "MixedLMResults", "mixedlm"]
