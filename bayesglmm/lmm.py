"""Deprecated alias: ``bayesglmm.lmm`` became ``bayesglmm.models.lmm`` (import from ``bayesglmm``)."""

import warnings

from .models.lmm import MixedLM, mixedlm
from .results.lmm import MixedLMResults

__all__ = ["MixedLM", "MixedLMResults", "mixedlm"]

warnings.warn("bayesglmm.lmm is deprecated; import MixedLM, mixedlm and MixedLMResults from "
              "bayesglmm", DeprecationWarning, stacklevel=2)
