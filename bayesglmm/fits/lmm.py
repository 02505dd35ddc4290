"""Bounded minimisation of the profiled deviance over θ.

L-BFGS-B (scipy) drives the jitted ``value_and_grad``; a few Newton steps with the exact
Hessian (θ is small) then polish the free coordinates, so that estimates agree with lme4's to
well under 1e-4.  Nothing here warns: the caller reads :class:`ThetaFit` and decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.optimize

__all__ = ["ThetaFit", "minimise_theta"]


class ThetaFit(NamedTuple):
    theta: np.ndarray  # (n_theta,) the minimiser
    fun: float  # deviance at theta
    grad_norm: float  # max |∇d| over the free coordinates
    converged: bool
    n_evals: int
    message: str


def minimise_theta(
    value_and_grad: Callable,
    hessian: Callable,
    theta0: np.ndarray,
    lower: np.ndarray,
    maxiter: int = 1000,
    newton_steps: int = 8,
    gtol: float = 1e-5,
    polish: bool = True,
) -> ThetaFit:
    """Minimise ``d(θ)`` subject to ``θ ≥ lower`` (``-inf`` for unbounded coordinates).

    ``hessian(θ)`` is the exact (autodiff) Hessian used by the Newton polish.
    """
    count = [0]

    def fg(x):
        count[0] += 1
        v, g = value_and_grad(x)
        v = float(v)
        g = np.asarray(g, dtype=np.float64)
        if not np.isfinite(v):
            return np.inf, np.zeros_like(x)
        return v, g

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    res = scipy.optimize.minimize(
        fg, np.asarray(theta0, np.float64), jac=True, method="L-BFGS-B", bounds=bounds,
        options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-9, "maxcor": 20},
    )
    theta, fun = np.maximum(res.x, lower), float(res.fun)
    fun, g = fg(theta)
    # Newton polish on the coordinates not held at their bound, when L-BFGS-B left a
    # gradient that matters (each polish step costs 2·len(θ) gradient calls)
    free = ~((theta <= lower + 1e-8) & (g > 0))
    g_free = float(np.max(np.abs(g[free]))) if free.any() else 0.0
    if polish and g_free > 1e-8 * max(1.0, abs(fun)):
        for _ in range(newton_steps):
            free = ~((theta <= lower + 1e-8) & (g > 0))
            if not free.any():
                break
            h = np.asarray(hessian(theta), dtype=np.float64)[np.ix_(free, free)]
            try:
                ev = np.linalg.eigvalsh(h)
                if not np.all(np.isfinite(ev)) or ev.min() <= 0:
                    break
                step = np.linalg.solve(h, g[free])
            except np.linalg.LinAlgError:
                break
            improved = False
            t = 1.0
            for _ls in range(12):
                cand = theta.copy()
                cand[free] = theta[free] - t * step
                cand = np.maximum(cand, lower)
                f_c, g_c = fg(cand)
                if f_c <= fun + 1e-12 * abs(fun):
                    improved = True
                    break
                t /= 2
            if not improved:
                break
            done = np.max(np.abs(cand - theta)) < 1e-10
            theta, fun, g = cand, f_c, g_c
            if done:
                break
    free = ~((theta <= lower + 1e-8) & (g > 0))
    gnorm = float(np.max(np.abs(g[free]))) if free.any() else 0.0
    converged = bool(np.isfinite(fun) and gnorm < gtol * max(1.0, abs(fun)))
    msg = str(res.message) if not converged else "converged"
    return ThetaFit(theta, fun, gnorm, converged, count[0], msg)
