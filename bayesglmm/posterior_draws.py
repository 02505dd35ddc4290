"""Draws from a Bayesian mixed GLM fit's posterior approximation, and what follows from them.

Only numpy and scipy.special: no JAX, no ArviZ.  :mod:`bayesglmm.arviz` packs these draws into
an ``InferenceData``.  What is drawn depends on what the fit keeps (``result.method``):

* ``"vb"`` — the mean-field Gaussian itself: every parameter independent,
  N(mean, sd²);
* ``"map"`` — the Laplace approximation at the joint mode: one Gaussian over (fe, vcp, vc) with
  ``cov_params()`` when that is the full matrix; for large models (``cov_params()`` covers
  (fe, vcp) only) the random effects are drawn independently with their posterior SDs;
* ``"laplace"`` (``priors=True``) — Gaussian over (fe, vcp) at the marginal posterior mode with
  its covariance; the random effects independent Gaussians with their total posterior SD
  (conditional + propagated), since the fit keeps no covariance between them and (fe, vcp);
* ``"laplace-integrated"`` — a Gaussian with the moments integrated over the vcp nodes; the fit
  keeps the nodes and their weights but not the per-node moments of fe and vc, so the node
  mixture itself cannot be drawn from.

The linear predictor of draw d is η_d = X·fe_d + offset + Z·vc_d, with Z in the model's
row-wise (ELLPACK) storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from scipy.special import expit, gammaln

__all__ = ["APPROXIMATIONS", "Draws", "check_bayesian", "draw", "linear_predictor",
           "pointwise_loglik", "predictive"]

APPROXIMATIONS = {
    "vb": "mean-field Gaussian of fit_vb: every parameter independent",
    "map": "Gaussian at the joint posterior mode with the inverse Hessian as covariance "
           "(fit_map's Laplace approximation)",
    "map-block": "Gaussian at the joint posterior mode over (fe, vcp) with its covariance; "
                 "random effects independent with their posterior SDs (the model is above "
                 "fits.map.DENSE_COV_MAX, so no full covariance is kept)",
    "laplace": "Gaussian over (fe, vcp) at the marginal posterior mode with the inverse "
               "Hessian as covariance; random effects independent Gaussians with their total "
               "posterior SD (fit_laplace keeps no covariance between them and (fe, vcp))",
    "laplace-integrated": "Gaussian with the posterior moments integrated over the vcp "
                          "Gauss-Hermite nodes (the fit keeps no per-node moments, so the node "
                          "mixture itself is not drawn from); random effects independent",
}


class Draws(NamedTuple):
    """Independent posterior draws (numpy, float64)."""

    fe: np.ndarray  # (D, k_fep) fixed effects
    vcp: np.ndarray  # (D, k_vcp) log SDs, then correlation parameters z = atanh(r), then
    #                  the family's dispersion (negative binomial: log θ)
    vc: np.ndarray  # (D, k_vc) random effects


def check_bayesian(result) -> None:
    """Raise unless ``result`` is a fit with a posterior (fit_map, fit_vb, fit_laplace with
    priors).  ML/REML fits (``fit_laplace(priors=False)``, ``MixedLM``) have none."""
    from .results.glmm import BayesMixedGLMResults
    from .results.lmm import MixedLMResults

    if isinstance(result, MixedLMResults):
        raise ValueError(
            f"a MixedLM fit is a {result.method} point estimate with no posterior to draw "
            "from; fit a Bayesian model (BinomialBayesMixedGLM / PoissonBayesMixedGLM) with "
            "fit_map, fit_vb or fit_laplace(priors=True)")
    if not isinstance(result, BayesMixedGLMResults):
        raise TypeError(f"expected a BayesMixedGLMResults, got {type(result).__name__}")
    if result.method in ("laplace", "laplace-integrated") and not getattr(result, "priors", True):
        raise ValueError(
            "this fit_laplace(priors=False) result is a maximum-likelihood estimate (lme4's "
            "glmer) with no posterior to draw from; refit with fit_laplace(priors=True) (and "
            "integrate=True for the most accurate posterior)")


def approximation(result) -> str:
    """The key of :data:`APPROXIMATIONS` describing what :func:`draw` samples for ``result``."""
    check_bayesian(result)
    if result.method == "map":
        lay = result.layout
        cp = np.asarray(result.cov_params())
        full = cp.ndim == 2 and cp.shape[0] == lay.k_fep + lay.k_vcp + lay.k_vc
        return "map" if full else "map-block"
    return result.method


def _sqrt_cov(cov: np.ndarray, what: str) -> np.ndarray:
    """A square root L with L·Lᵀ = cov (Cholesky, or eigenvalues floored at 0)."""
    cov = 0.5 * (cov + cov.T)
    if not np.all(np.isfinite(cov)):
        raise ValueError(f"the {what} covariance has non-finite entries (a singular fit?): no "
                         "Gaussian draws")
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        lam, V = np.linalg.eigh(cov)
        return V * np.sqrt(np.maximum(lam, 0.0))


def draw(result, n: int, rng: np.random.Generator, chunk: int = 1000) -> Iterator[Draws]:
    """Yield ``n`` independent draws from the fit's approximation, ``chunk`` at a time.

    Parameters
    ----------
    result : BayesMixedGLMResults
        A fit with a posterior (:func:`check_bayesian`).
    n : int
        Number of draws.
    rng : numpy Generator
    chunk : int
        Draws per yielded block (bounds the memory of the (chunk, k_vc) random effects).

    Yields
    ------
    Draws
        Blocks of at most ``chunk`` draws, ``n`` in all.
    """
    kind = approximation(result)
    lay = result.layout
    kf, kp, kv = lay.k_fep, lay.k_vcp, lay.k_vc
    mean = np.asarray(result.params, np.float64)  # (kf + kp + kv,)
    sd = np.concatenate([result.fe_sd, result.vcp_sd, result.vc_sd])
    cp = np.asarray(result.cov_params(), np.float64)
    L = np.zeros((0, 0))  # (vb: independent coordinates)
    if kind == "map":
        L = _sqrt_cov(cp, "posterior")
    elif kind != "vb":
        L = _sqrt_cov(cp[:kf + kp, :kf + kp], "(fe, vcp)")
    if kind != "map" and not np.all(np.isfinite(sd)):
        raise ValueError("some posterior SDs are not finite (a singular fit?): no Gaussian draws")
    done = 0
    while done < n:
        m = min(chunk, n - done)
        z = rng.standard_normal((m, kf + kp + kv))
        if kind == "vb":
            x = mean + z * sd
        elif kind == "map":
            x = mean + z @ L.T
        else:
            x = np.empty_like(z)
            x[:, :kf + kp] = mean[:kf + kp] + z[:, :kf + kp] @ L.T
            x[:, kf + kp:] = mean[kf + kp:] + z[:, kf + kp:] * sd[kf + kp:]
        done += m
        yield Draws(x[:, :kf], x[:, kf:kf + kp], x[:, kf + kp:])


def linear_predictor(model, d: Draws) -> np.ndarray:
    """η (D, n) of each draw on the model's rows: X·fe + offset + Z·vc."""
    eta = d.fe @ model.exog.T + model.offset[None, :]
    if model.k_vc:
        cols, vals = model.re_design  # (n, m) each
        eta += np.einsum("nm,dnm->dn", vals, d.vc[:, cols])
    return eta


def _trials(model) -> np.ndarray:
    return np.ones(model.nobs) if model.n_trials is None else np.asarray(model.n_trials, float)


def _nb_theta(vcp) -> np.ndarray:
    """(D, 1) the negative binomial's θ of each draw: exp of the last vcp (log θ)."""
    return np.exp(np.asarray(vcp, float)[:, -1:])


def pointwise_loglik(model, eta: np.ndarray, vcp: np.ndarray | None = None) -> np.ndarray:
    """log p(y_i | η_i) (D, n), constants included, times the row's frequency weight;
    ``vcp`` (D, k_vcp) the draws' variance parameters (for the negative binomial's θ)."""
    y, w = np.asarray(model.endog, float), np.asarray(model.freq_weights, float)
    if model.family.n_disp:  # NB2: lgamma(y+θ) − lgamma(θ) − log y! + θ log θ + yη − (y+θ)log(θ+e^η)
        th = _nb_theta(vcp)
        ll = (gammaln(y + th) - gammaln(th) - gammaln(y + 1) + th * np.log(th) + y * eta
              - (y + th) * np.logaddexp(np.log(th), eta))
    elif model.family.name == "Binomial":
        n = _trials(model)
        # y·η − n·log(1 + e^η) + log C(n, y); log(1 + e^η) = logaddexp(0, η)
        ll = y * eta - n * np.logaddexp(0.0, eta) + (gammaln(n + 1) - gammaln(y + 1)
                                                       - gammaln(n - y + 1))
    else:
        ll = y * eta - np.exp(eta) - gammaln(y + 1)  # Poisson: y·η − e^η − log y!
    return w * ll


def predictive(model, eta: np.ndarray, rng: np.random.Generator,
               vcp: np.ndarray | None = None) -> np.ndarray:
    """Replicated responses (D, n) drawn from the likelihood at each draw's η (and θ, from
    ``vcp``, for the negative binomial)."""
    if model.family.n_disp:  # NB(θ, p = θ/(θ + μ)): mean μ, variance μ + μ²/θ
        th = _nb_theta(vcp)
        mu = np.exp(np.minimum(eta, 40.0))
        return rng.negative_binomial(th, th / (th + mu))
    if model.family.name == "Binomial":
        return rng.binomial(_trials(model).astype(np.int64), expit(eta))
    return rng.poisson(np.exp(np.minimum(eta, 40.0)))  # e^40 ≈ 2e17: below numpy's cap
