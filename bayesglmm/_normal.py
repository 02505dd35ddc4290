"""The standard normal CDF and quantile on the host, from the standard library.

p-values and Wald intervals in every ``summary()`` need only these two functions; taking them
from ``math`` rather than scipy.special (or scipy.stats, half a second) keeps a short
script's start-up small.  ``ndtr`` is Φ(x) = erfc(−x/√2)/2, accurate in both tails (as
scipy's); ``ndtri`` is Wichura's AS 241 (``statistics.NormalDist.inv_cdf``), accurate to
about 1e-16 relative.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["ndtr", "ndtri"]

_SQRT_HALF = math.sqrt(0.5)
_STD = NormalDist()


def _elementwise(fn, x):
    arr = np.asarray(x, dtype=np.float64)
    out = np.array([fn(float(v)) for v in arr.ravel()], dtype=np.float64).reshape(arr.shape)
    return out if arr.ndim else float(out)


def _cdf(x: float) -> float:
    return math.nan if math.isnan(x) else 0.5 * math.erfc(-x * _SQRT_HALF)


def _ppf(p: float) -> float:
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        return math.nan
    if p in (0.0, 1.0):
        return math.copysign(math.inf, p - 0.5)
    return _STD.inv_cdf(p)


def ndtr(x):
    """Φ(x), elementwise (as ``scipy.special.ndtr``); a float for a scalar."""
    return _elementwise(_cdf, x)


def ndtri(p):
    """Φ⁻¹(p), elementwise (as ``scipy.special.ndtri``): ±inf at 1 and 0, NaN outside."""
    return _elementwise(_ppf, p)
