"""Starting values of the marginal Laplace fit (fits.laplace): lme4's GLM start.

glmer starts from the GLM without random effects, argmax Σ loglik(X·fe + offset), with SDs of 1
(vcp = 0).  For a family with a dispersion parameter (the negative binomial's log θ) the start
of fe is the Poisson GLM's (same log link), log θ the moment estimate there, then fe the
family's GLM at that θ.  Each GLM is fitted by Newton from the host over one small jitted
program (kernels.marginal.glm_terms).  Re-exported by fits.laplace, where fits.many finds them.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from .._precision import precision
from ..families import Family, Poisson
from ..kernels.glmm import Data
from ..kernels.marginal import glm_terms
from ..solvers.linesearch import armijo, backtrack_host

__all__ = ["LOG_DISP_START", "START_TOL", "disp_start", "glm_fit", "glm_start", "start_theta"]

START_TOL = 1e-6  # the GLM start stops at a Newton decrement ≤ START_TOL·(1 + |ll|)
LOG_DISP_START = (-5.0, 9.0)  # the moment start of log θ is clipped to this range


@functools.cache
def _glm_terms(family: Family):
    return jax.jit(glm_terms(family))


def glm_start(family: Family, data: Data, maxiter: int = 25) -> np.ndarray:
    """lme4's starting fe: the GLM fit without random effects, argmax Σ loglik(X·fe + offset)
    (glmer starts from it with SDs of 1, i.e. vcp = 0).  Newton on the concave
    log-likelihood from fe = 0, driven from the host over one small jitted program
    (kernels.marginal.glm_terms), with Armijo backtracking; stops when the decrement
    ½gᵀH⁻¹g is below ``START_TOL``·(1 + |ll|) (a start needs no more: the outer Newton
    steps in fe too), after ``maxiter`` steps or when the line search fails.  NaN where XᵀWX
    is singular.  Families with a dispersion parameter: the fe of :func:`glm_fit`."""
    if family.n_disp:
        return glm_fit(family, data, maxiter)[0]
    return _glm_newton(family, data, maxiter)


def glm_fit(family: Family, data: Data, maxiter: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """``(fe (k_fep,), disp (n_disp,))``: the start of a family with dispersion parameters
    (the negative binomial, same log link as the Poisson): the Poisson GLM's fe, the moment
    estimate of log θ there (:func:`disp_start`), then the family's GLM fe at that θ.  For
    families without, :func:`glm_start`'s fe and an empty disp."""
    if not family.n_disp:
        return glm_start(family, data, maxiter), np.zeros(0)
    fe = _glm_newton(Poisson(), data, maxiter)
    if not np.all(np.isfinite(fe)):
        return fe, np.zeros(family.n_disp)
    disp = disp_start(family, data, fe)
    return _glm_newton(family, data, maxiter, fe, disp), disp


def disp_start(family: Family, data: Data, fe) -> np.ndarray:
    """(n_disp,) the moment estimate of the negative binomial's log θ at fe (numpy, real
    rows by their weights): Var(y) = μ + μ²/θ gives 1/θ = Σw((y − μ)² − μ) / Σwμ²,
    μ = exp(X·fe + offset); log θ clipped to ``LOG_DISP_START`` (no overdispersion: the
    upper end, nearly Poisson)."""
    y, X, w, off = (np.asarray(a, np.float64) for a in (data.y, data.X, data.weights,
                                                        data.offset))
    mu = np.exp(np.minimum(X @ np.asarray(fe, np.float64) + off, 50.0))
    inv = np.sum(w * ((y - mu) ** 2 - mu)) / max(np.sum(w * mu**2), 1e-300)
    lo, hi = LOG_DISP_START
    log_theta = hi if not inv > np.exp(-hi) else float(np.clip(-np.log(inv), lo, hi))
    return np.full(family.n_disp, log_theta)


def _glm_newton(family: Family, data: Data, maxiter: int, fe=None, disp=None) -> np.ndarray:
    """:func:`glm_start`'s Newton iteration from ``fe`` (default 0) at the dispersion
    parameters ``disp`` (families with them)."""
    terms = _glm_terms(family)
    dtype = np.dtype(data.y.dtype)
    fe = np.zeros(data.X.shape[1], dtype) if fe is None else np.asarray(fe, dtype)
    extra = () if disp is None else (np.asarray(disp, dtype),)
    ll, g, H = (np.asarray(x) for x in terms(fe, data, *extra))
    for _ in range(maxiter):
        try:
            d = np.linalg.solve(H, g)  # Newton step on −ll
        except np.linalg.LinAlgError:
            return np.full_like(fe, np.nan)
        slope = -float(g @ d)
        if -0.5 * slope <= START_TOL * (1 + abs(float(ll))):
            break

        def phi(t, fe=fe, d=d):  # −ll along the step, with (fe, terms) there
            fe_t = (fe + t * d).astype(fe.dtype)
            out = [np.asarray(x) for x in terms(fe_t, data, *extra)]
            return -float(out[0]), (fe_t, out)

        _, _, (fe_t, out), _, ok = backtrack_host(phi, armijo(-float(ll), slope), 40)
        if not ok:
            break
        fe, (ll, g, H) = fe_t, out
    return fe


def start_theta(family: Family, data: Data, k_fep: int, k_vcp: int) -> np.ndarray:
    """(k_fep + k_vcp,) lme4's default start (float64): the GLM's fe (:func:`glm_fit`; zeros
    where it fails), vcp = 0 (SDs of 1, zero correlation parameters) and the dispersion
    parameters' moment start (:func:`disp_start`)."""
    dtype = np.dtype(data.y.dtype)
    with precision(dtype):
        fe0, disp0 = glm_fit(family, data)
    theta0 = np.zeros(k_fep + k_vcp)
    if np.all(np.isfinite(fe0)):
        theta0[:k_fep] = fe0
    if family.n_disp:
        theta0[k_fep + k_vcp - family.n_disp:] = disp0
    return theta0
