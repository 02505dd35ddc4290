"""Penalised fixed effects of a linear mixed model: statsmodels' ``MixedLM.fit_regularized``.

The covariances come from the unpenalised fit; with them fixed, the log-likelihood in β is
the quadratic ``−½ (β − β̂)ᵀ A (β − β̂)`` with ``A = XᵀV̂⁻¹X / σ̂²`` (the inverse of lme4's
``vcov``), and the penalised estimate minimises

    ½ (β − β̂)ᵀ A (β − β̂) + Σ_j α_j |β_j|            (method="l1", the lasso)

by coordinate descent with soft thresholding (Friedman, Hastie & Tibshirani 2010, eqn 5), or
``½ (β − β̂)ᵀ A (β − β̂) + α · pen.func(β)`` for a statsmodels penalty object ``pen`` (its
``func``/``deriv``), by L-BFGS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..results.lmm import MixedLMResults
    from .lmm import MixedLM
    from .lmm_params import MixedLMParams

__all__ = ["Penalty", "fit_regularized"]


class Penalty(Protocol):
    """A statsmodels penalty object (``statsmodels.base._penalties``): the penalty and its
    gradient at the fixed effects."""

    def func(self, params: np.ndarray) -> ArrayLike: ...

    def deriv(self, params: np.ndarray) -> ArrayLike: ...


def _lasso(A, bhat, alpha, ptol, maxit):
    beta = bhat.copy()
    c = A @ bhat
    for _ in range(maxit):
        old = beta.copy()
        for j in range(len(beta)):
            # minimise over β_j: ½A_jj β_j² − β_j (c_j − Σ_{k≠j} A_jk β_k) + α_j|β_j|
            r = c[j] - A[j] @ beta + A[j, j] * beta[j]
            beta[j] = np.sign(r) * max(abs(r) - alpha[j], 0.0) / A[j, j]
        if np.max(np.abs(beta - old)) < ptol:
            break
    return beta


def fit_regularized(model: MixedLM, start_params: ArrayLike | MixedLMParams | None = None,
                    method: str | Penalty = "l1", alpha: float | ArrayLike = 0,
                    ceps: float = 1e-4, ptol: float = 1e-6, maxit: int = 200,
                    **fit_kwargs: Any) -> MixedLMResults:
    """Fit, then penalise the fixed effects (see the module docstring).

    Parameters
    ----------
    method : "l1" or a penalty object with ``func(params)`` and ``deriv(params)``
    alpha : float or (k_fe,) array_like
        Penalty weights (per fixed effect).
    ceps : float
        Estimates smaller than this in absolute value are set to zero (l1).
    ptol, maxit : convergence tolerance and iteration limit of the coordinate descent.

    Returns
    -------
    MixedLMResults
        With the penalised fixed effects; covariances and standard errors of the
        unpenalised fit.
    """
    from ..results.lmm import MixedLMResults

    if start_params is not None:
        fit_kwargs["start_params"] = start_params
    res = model.fit(**fit_kwargs)
    k = model.k_fe
    alpha = np.broadcast_to(np.asarray(alpha, np.float64), (k,)).copy()
    A = np.linalg.inv(res._cov_fe)
    bhat = np.asarray(res._fe, np.float64)
    if isinstance(method, str):
        if method.lower() != "l1":
            raise ValueError(f"method must be 'l1' or a penalty object, got {method!r}")
        beta = _lasso(A, bhat, alpha, ptol, maxit)
        beta[np.abs(beta) < ceps] = 0.0
    else:
        import scipy.optimize

        a = float(np.mean(alpha))

        def obj(b):
            d = b - bhat
            return (0.5 * d @ A @ d + a * float(np.sum(method.func(b))),
                    A @ d + a * np.asarray(method.deriv(b), np.float64))

        beta = scipy.optimize.minimize(obj, bhat, jac=True, method="L-BFGS-B").x
    return MixedLMResults(
        model=model, theta=res.theta, fe=beta, cov_fe=res._cov_fe, scale=res.scale,
        deviance=res.deviance, reml=res.reml, blups=res._blups, fit=res.optim,
        is_singular=res.is_singular, cov_psi=res._cov_psi)
