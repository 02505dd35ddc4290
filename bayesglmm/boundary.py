"""After a mixed GLM fit: never silent garbage.

:func:`check_fit` looks at the fixed effects and variance parameters of a fit and issues a
:class:`~bayesglmm.exceptions.BoundaryWarning` naming those that are

* not finite, or whose variance is not finite (excluding parameters reported NaN on purpose:
  a singular variance component, a dropped aliased column); or
* fixed effects with a standard error above ``BOUNDARY_SE · (1 + |estimate|)``: not identified
  by the data, drifting to ±∞ (an all-zero response, complete separation), where lme4 and
  glmmTMB warn too.

The fit's ``optim_retvals`` then has ``success`` False, the message says why and
``boundary`` lists the names, so ``converged`` reflects it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .exceptions import BOUNDARY_SE, BoundaryWarning

__all__ = ["boundary_names", "check_fit"]


def boundary_names(est, var, names: Sequence[str], k_fep: int, skip=()) -> list[str]:
    """Names of the parameters (est, var: (k,) estimates and variances, the first ``k_fep``
    fixed effects) that are non-finite or, for fixed effects, not identified; ``skip``: indices
    reported NaN on purpose.

    >>> boundary_names([-26.0, 0.5, -1.0], [15702.0 ** 2, 0.04, np.nan], ["a", "b", "s"], 2)
    ['a', 's']
    """
    est, var = np.asarray(est, np.float64), np.asarray(var, np.float64)
    ok = np.ones(len(est), bool)
    ok[list(skip)] = False
    se = np.sqrt(np.abs(var))
    bad = ok & (~np.isfinite(est) | ~np.isfinite(var))
    fe = np.arange(len(est)) < k_fep
    with np.errstate(invalid="ignore"):
        bad |= ok & fe & (se > BOUNDARY_SE * (1 + np.abs(est)))
    return [str(names[i]) for i in np.flatnonzero(bad)]


def check_fit(retvals, est, var, names: Sequence[str], k_fep: int, what: str, skip=(),
              stacklevel: int = 3) -> list[str]:
    """Warn (BoundaryWarning) and mark ``retvals`` unsuccessful when :func:`boundary_names`
    finds any; returns them."""
    bad = boundary_names(est, var, names, k_fep, skip)
    if retvals is not None:
        retvals.boundary = bad
    if bad:
        msg = (f"{what}: estimate on the boundary or covariance not finite for "
               f"{', '.join(repr(b) for b in bad[:10])}{' ...' if len(bad) > 10 else ''}: "
               "not identified by the data (an all-zero or constant response, separation, an "
               "all-zero or collinear column, zero weights); do not use these numbers")
        warnings.warn(msg, BoundaryWarning, stacklevel=stacklevel)
        if retvals is not None:
            retvals.success = False
            retvals.message = f"{retvals.get('message', '')}; boundary: {', '.join(bad[:10])}"
    return bad
