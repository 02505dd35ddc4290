"""Shape buckets: the sizes a mixed GLM's arrays are padded to before a fit.

A compiled program serves one set of array shapes.  Rows and random-effect levels are padded to
a small set of sizes, so that new data of another size with the same model structure (the same
fixed-effect columns, variance components and colouring) usually finds its programs compiled —
in this process, or in the persistent cache (``bayesglmm._cache``).

The rule (:func:`bucket`): a count n up to the floor (``ROW_FLOOR`` = 1024 rows,
``LEVEL_FLOOR`` = 16 levels) becomes the floor; above it, n is rounded up to a number with
``COARSE_BITS`` = 3 significant bits (1280, 1536, 1792, 2048, 2560, ...: steps of at most 25%)
up to ``FINE_ABOVE`` = 65,536, and with ``FINE_BITS`` = 5 significant bits above that (steps
of at most 6.25%).  Those coarse buckets are for small problems, whose fits cost more to
compile than to run (Newton with the dense Hessian, fits.map.use_dense); larger problems,
whose Newton iterations (and conjugate-gradient products) can cost more than a compilation,
round every count to 5 significant bits, without a floor (``fine``: at most 6.25% of padding;
grouseticks' 403 rows and 584 levels run as 416 and 608).  So memory stays O(non-zeros):
padding adds at most 25%, or up to the floor.

Padding is inert (models.base builds the padded arrays; kernels.glmm and kernels.marginal
treat them exactly):

* padded rows have weight 0, y = 0, an X row of 0, Z values 0 (column 0), n_trials 1 and
  offset 0, so they add exactly 0 to every log-likelihood and its derivatives;
* padded levels are Z columns with no non-zeros and a level weight 0 (``Data.level_w``), which
  removes their prior terms; their random effects stay at 0 (and log-SD 0 in variational Bayes)
  and the fits slice them off before results see them.

Set ``ENABLED = False`` (tests do) to fit on the unpadded arrays.

Examples
--------
>>> bucket(842, ROW_FLOOR), bucket(1100, ROW_FLOOR), bucket(100_000, ROW_FLOOR)
(1024, 1280, 102400)
>>> bucket(1100, ROW_FLOOR, fine=True), bucket(403, ROW_FLOOR, fine=True)
(1152, 416)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["COARSE_BITS", "ENABLED", "FINE_ABOVE", "FINE_BITS", "LEVEL_FLOOR", "ROW_FLOOR",
           "Buckets", "bucket", "buckets", "pad"]

ENABLED = True
ROW_FLOOR = 1024
LEVEL_FLOOR = 16
COARSE_BITS = 3
FINE_BITS = 5
FINE_ABOVE = 1 << 16


def bucket(n: int, floor: int, fine: bool = False) -> int:
    """The padded size of a count ``n`` (n itself when buckets are disabled, or n = 0); with
    ``fine``, n to 5 significant bits (else the floor, or 3 bits up to ``FINE_ABOVE``)."""
    n = int(n)
    if not ENABLED or n == 0:
        return n
    if n <= floor and not fine:
        return floor
    bits = FINE_BITS if fine or n > FINE_ABOVE else COARSE_BITS
    q = 1 << max(n.bit_length() - bits, 0)
    return -(-n // q) * q


class Buckets(NamedTuple):
    """Real and padded sizes of one model's arrays."""

    n: int  # rows
    n_pad: int
    k: int  # random-effect levels (columns of Z)
    k_pad: int


def buckets(n: int, k: int, fine: bool = False) -> Buckets:
    """The padded sizes for n rows and k random-effect levels (``fine``: see :func:`bucket`)."""
    return Buckets(n, bucket(n, ROW_FLOOR, fine), k, bucket(k, LEVEL_FLOOR, fine))


def pad(x: np.ndarray, size: int, value=0) -> np.ndarray:
    """``x`` extended along axis 0 to ``size`` entries filled with ``value``."""
    x = np.asarray(x)
    extra = size - x.shape[0]
    if extra == 0:
        return x
    fill = np.full((extra,) + x.shape[1:], value, dtype=x.dtype)
    return np.concatenate([x, fill])
