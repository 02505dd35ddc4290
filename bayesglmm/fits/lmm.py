"""Fitting a linear mixed model: bounded minimisation of the profiled deviance over θ, then the
estimates at θ̂ and the covariance of statsmodels' ψ.

L-BFGS-B (scipy) drives the jitted ``(d, ∇d)`` of :func:`bayesglmm.kernels.lmm.evaluate`; a few
Newton steps with the exact (autodiff) Hessian then polish the free coordinates when L-BFGS-B
leaves a gradient that matters, so that estimates agree with lme4's to well under 1e-4.  At θ̂
the same compiled evaluation gives ``t = [X y]ᵀV⁻¹[X y]`` (hence β̂, (XᵀV⁻¹X)⁻¹ and σ̂²) and the
BLUP maps.  Nothing here warns: the caller reads :class:`ThetaFit` and decides.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
import scipy.linalg
import scipy.optimize

from .._precision import precision
from ..design.crossprod import CrossProd, Structure
from ..kernels.lmm import deviance_hessian, evaluate, psi_blocks, psi_hessian, theta_to_psi
from ..linalg._blas import single_threaded_blas
from ..solvers.linesearch import backtrack_host

__all__ = ["EAGER_COV_MAX_M", "LMMFit", "ThetaFit", "fit_lmm", "minimise_theta", "psi_cov"]

# The covariance of ψ is computed during the fit when the dense block of the random terms
# other than the largest has at most this many rows; above it the exact Hessian (n_θ tangents
# through an m × m Cholesky and its reverse rule) costs more than the fit itself, and it is
# computed on first request instead (``bse``, ``summary()``).
EAGER_COV_MAX_M = 200


class ThetaFit(NamedTuple):
    """Outcome of :func:`minimise_theta`."""

    theta: np.ndarray  # (n_theta,) the minimiser
    fun: float  # deviance at theta
    grad_norm: float  # max |∇d| over the free coordinates
    converged: bool
    n_evals: int
    message: str


class LMMFit(NamedTuple):
    """Estimates at θ̂ (for the response as given to the cross-products)."""

    theta: np.ndarray  # (n_theta,) θ̂, diagonal entries below 1e-10 set to zero
    deviance: float  # d(θ̂) (ML) or d_R(θ̂) (REML)
    beta: np.ndarray  # (p,) β̂
    txx_inv: np.ndarray  # (p, p) (XᵀV⁻¹X)⁻¹, V relative to σ²
    sigma2: float  # σ̂²: r²_θ / (n − p) (REML) or r²_θ / n (ML)
    b1: np.ndarray  # (L₁, q₁) BLUPs of the largest term
    b2: np.ndarray  # (m,) BLUPs of the other terms, in cross-product order
    cov_psi: np.ndarray | None | Callable  # (n_ψ, n_ψ) inverse information of ψ, None where
    # it cannot be formed (a variance on the boundary), or a function computing it on demand
    optim: ThetaFit


class _EvalCache:
    """``θ → (d, ∇d)`` for the optimiser through :func:`~bayesglmm.kernels.lmm.evaluate`,
    remembering the last few points (the optimiser re-evaluates its final θ, and the fit needs
    the auxiliary outputs there)."""

    def __init__(self, cp, struct, reml, dtype, size=4):
        self.cp, self.struct, self.reml, self.dtype, self.size = cp, struct, reml, dtype, size
        self.memo = {}

    def full(self, theta):
        x = np.asarray(theta, np.float64)
        key = x.tobytes()
        if key not in self.memo:
            out = evaluate(x.astype(self.dtype), self.cp, self.struct, self.reml)
            if len(self.memo) >= self.size:
                self.memo.pop(next(iter(self.memo)))
            self.memo[key] = out
        return self.memo[key]

    def __call__(self, theta):
        dev, grad, _ = self.full(theta)
        return dev, grad


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
    # gradient that matters (each polish step costs one Hessian and 1-12 evaluations)
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

            def phi(t, theta=theta, free=free, step=step):  # d at the projected Newton step
                cand = theta.copy()
                cand[free] = theta[free] - t * step
                cand = np.maximum(cand, lower)
                f_c, g_c = fg(cand)
                return f_c, (cand, g_c)

            def accept(t, f_c, aux, f_max=fun + 1e-12 * abs(fun)):  # no increase beyond roundoff
                return f_c <= f_max

            # t = 1, 1/2, …: at most 12 evaluations
            _, f_c, (cand, g_c), _, ok = backtrack_host(phi, accept, 12)
            if not ok:
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


def psi_cov(theta, cp: CrossProd, struct: Structure, reml: bool, dtype):
    """Inverse Hessian of the profiled log-likelihood over ψ (statsmodels' ``cov_re / scale``
    per block, lower triangle), from :func:`~bayesglmm.kernels.lmm.psi_hessian`.

    ``cp`` holds host or device arrays.  Returns ``None`` where it cannot be formed or
    inverted, e.g. with a variance on the boundary.
    """
    psi0 = theta_to_psi(theta, struct, np.dtype(dtype).type)
    is_var = np.array([i == j for _, pos in psi_blocks(struct) for i, j in pos])
    if not np.all(np.isfinite(psi0)) or np.any(psi0[is_var] <= 0):
        return None
    with precision(dtype), single_threaded_blas():
        if not isinstance(cp.n, jax.Array):  # host arrays (a deferred call)
            cp = jax.device_put(cp)
        h = np.asarray(psi_hessian(psi0, cp, struct, reml), np.float64)
    h = 0.5 * (h + h.T)
    if not np.all(np.isfinite(h)):
        return None
    try:
        return np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return None


def fit_lmm(cp: CrossProd, struct: Structure, theta0, lower, diag, reml: bool, dtype,
            maxiter: int = 1000, polish: bool = True) -> LMMFit:
    """Fit θ by :func:`minimise_theta` and form the estimates at θ̂.

    Parameters
    ----------
    cp, struct : the cross-products (host arrays) and their static structure
    theta0 : (n_theta,) start
    lower : (n_theta,) bounds (0 for diagonal entries of λ, ``-inf`` otherwise)
    diag : int array, the θ indices of diagonal entries of λ
    reml : bool
    dtype : float32 or float64

    Returns
    -------
    LMMFit
        With the covariance of ψ computed when ``struct.m <= EAGER_COV_MAX_M``, else deferred.
    """
    with precision(dtype), single_threaded_blas():
        # on the device once (device_put: jnp.asarray would compile a program per shape)
        cpj = jax.device_put(cp)
        vg = _EvalCache(cpj, struct, reml, dtype)

        def hessian(th):
            th = np.asarray(th, np.float64).astype(dtype)
            return np.asarray(deviance_hessian(th, cpj, struct, reml), np.float64)

        optim = minimise_theta(vg, hessian, theta0, lower, maxiter=maxiter, polish=polish,
                               gtol=1e-5 if dtype == np.float64 else 1e-2)
        theta = optim.theta.copy()
        theta[diag] = np.where(theta[diag] < 1e-10, 0.0, theta[diag])
        dev, _, (t, b1k, b2k) = vg.full(theta)
    # β̂, (XᵀV⁻¹X)⁻¹, σ̂² from t = [X y]ᵀV⁻¹[X y] = [[R_X, 0], [c_βᵀ, r_θ]] [[R_X, 0], [c_βᵀ, r_θ]]ᵀ
    p = t.shape[0] - 1
    t = np.asarray(t, np.float64)
    r = np.linalg.cholesky(t)
    rx_inv = scipy.linalg.solve_triangular(r[:p, :p], np.eye(p), lower=True)
    txx_inv = rx_inv.T @ rx_inv
    beta = rx_inv.T @ r[p, :p]
    n = int(cp.n)  # rows
    sigma2 = float(r[p, p] ** 2) / (n - p if reml else n)  # r²_θ / ν
    coef = np.concatenate([-beta, [1.0]])  # b = B [−β̂; 1]
    b1 = np.asarray(b1k, np.float64) @ coef
    b2 = np.asarray(b2k, np.float64) @ coef
    if struct.m <= EAGER_COV_MAX_M:
        cov = psi_cov(theta, cpj, struct, reml, dtype)
    else:  # deferred: a picklable callable holding the host arrays
        cov = functools.partial(psi_cov, theta, cp, struct, reml, dtype)
    return LMMFit(theta, float(dev), beta, txx_inv, sigma2, b1, b2, cov, optim)
