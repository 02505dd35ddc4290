"""Dense BFGS driven from the host over one compiled value-and-gradient program.

For small problems the compiled Newton loop (solvers.newton) costs more to trace and compile
than the fit costs to run: cbpp's ``fit_vb`` (40 parameters) spends ~0.35 s tracing and
~0.5 s compiling a loop that holds the Hessian, and ~5 ms running it.  Here the only compiled
program is ``value_and_grad`` of the objective (a third of that to trace and compile); the
iteration is numpy on the host: the inverse-Hessian BFGS update (Nocedal & Wright,
*Numerical Optimization*, 2nd ed., eq. 6.17; H₀ scaled by sᵀy/yᵀy after the first step,
eq. 6.20), a backtracking Armijo line search (solvers.linesearch.backtrack_host) and the
update skipped when the curvature sᵀy is not positive, which keeps H positive definite.
This is statsmodels' own optimiser for ``fit_vb`` (scipy's BFGS), run to our tolerances.

A step is accepted by Armijo's rule or, near the optimum where f's decrease falls below
its rounding, by Hager & Zhang's approximate Wolfe conditions (f within ``ftol``·(1 + |f|)
of f(x) and the directional derivative reduced in magnitude), so the iteration reaches a
gradient tolerance that f's differences alone cannot resolve.  Stops when ‖g‖_∞ ≤ ``gtol``
(converged), or after ``maxiter`` iterations, a failed line search — counted as converged
when the quasi-Newton decrement ½gᵀHg is at most ``ftol``·(1 + |f|): the float32 fits, whose
gradients carry rounding above a tight ``gtol`` — or a non-finite value.

Examples
--------
>>> import numpy as np
>>> A = np.array([[3.0, 1.0], [1.0, 2.0]])
>>> def fg(x):
...     return 0.5 * x @ A @ x - x.sum(), A @ x - 1.0
>>> r = bfgs_host(fg, np.zeros(2), gtol=1e-10)
>>> np.round(r.x, 6), r.status
(array([0.2, 0.4]), 0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .. import progress as _progress
from .linesearch import armijo, backtrack_host

__all__ = ["BFGSResult", "bfgs_host"]


class BFGSResult(NamedTuple):
    x: np.ndarray  # the optimum (float64)
    f: float  # objective there
    g: np.ndarray  # gradient there
    n_iter: int  # iterations (accepted steps)
    n_fev: int  # value-and-gradient evaluations, the start's included
    status: int  # solvers.solution.STATUS_MESSAGES: 0 converged, 1 maxiter, 2 line search, 3 NaN


def bfgs_host(fg: Callable, x0: np.ndarray, *, gtol: float = 1e-8, ftol: float = 1e-13,
              maxiter: int = 1000, max_ls: int = 40, f0=None) -> BFGSResult:
    """Minimise f from ``x0`` given ``fg(x) -> (f, ∇f)`` (numpy in, anything float-like out);
    ``f0`` = fg(x0) when the caller already has it (module docstring)."""
    x = np.asarray(x0, np.float64)
    f, g = fg(x) if f0 is None else f0
    f, g = float(f), np.asarray(g, np.float64)
    n_fev = 1 if f0 is None else 0
    if not (np.isfinite(f) and np.all(np.isfinite(g))):
        return BFGSResult(x, f, g, 0, n_fev, 3)
    n = x.shape[0]
    H = np.eye(n)
    status, it = 1, 0
    while it < maxiter:
        ginf = float(np.max(np.abs(g), initial=0.0))
        if ginf <= gtol:
            status = 0
            break
        d = -H @ g
        slope = float(g @ d)
        if not slope < 0:  # H lost definiteness to rounding: restart from steepest descent
            H = np.eye(n)
            d, slope = -g, -float(g @ g)
        # the first step (H = I) is limited to a unit move in the largest coordinate
        t0 = min(1.0, 1.0 / ginf) if it == 0 else 1.0
        t, f_t, (x_t, g_t), n_ls, ok = _line_search(fg, x, f, d, slope, t0, ftol, max_ls)
        n_fev += n_ls
        if not ok:  # converged to rounding where the decrement ½gᵀHg is negligible
            status = 0 if -0.5 * slope <= ftol * (1.0 + abs(f)) else 2
            break
        g_t = np.asarray(g_t, np.float64)
        if not np.all(np.isfinite(g_t)):
            status = 3
            break
        s, y = x_t - x, g_t - g
        sy = float(s @ y)
        if sy > 1e-12 * float(np.linalg.norm(s) * np.linalg.norm(y)):
            if it == 0:
                H = (sy / float(y @ y)) * np.eye(n)
            rho = 1.0 / sy
            Hy = H @ y
            H = H + ((sy + y @ Hy) * rho * rho) * np.outer(s, s) - rho * (
                np.outer(Hy, s) + np.outer(s, Hy))
        x, f, g = x_t, f_t, g_t
        it += 1
        _progress.report(it, f, float(np.max(np.abs(g), initial=0.0)))
    return BFGSResult(x, f, g, it, n_fev, status)


def _line_search(fg, x, f: float, d, slope: float, t0: float, ftol: float, max_ls: int):
    """Backtracking along d from x: ``(t, f_t, (x_t, g_t), evaluations, accepted)``.

    A step is accepted by Armijo's rule with a strict decrease (an equal f passes Armijo's
    test by rounding alone), or by Hager & Zhang's approximate Wolfe conditions (SIAM J.
    Optim. 16, 2005, eq. 4.1), which still make progress where f's decrease is below its
    rounding: f(x_t) ≤ f + ε (ε = ``ftol``·(1 + |f|)) and 0.9·gᵀd ≤ g_tᵀd ≤ −0.8·gᵀd."""
    sufficient = armijo(f, slope)
    eps = ftol * (1.0 + abs(f))

    def phi(t):
        x_t = x + t * d
        f_t, g_t = fg(x_t)
        f_t = float(f_t)
        return (f_t if np.isfinite(f_t) else np.inf), (x_t, g_t)

    def accept(t, f_t, aux):
        if f_t < f and sufficient(t, f_t, aux):
            return True
        s_t = float(np.asarray(aux[1], np.float64) @ d)
        return bool(f_t <= f + eps and 0.9 * slope <= s_t <= -0.8 * slope)

    return backtrack_host(phi, accept, max_ls + 1, t0)
