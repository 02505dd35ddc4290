"""Satterthwaite degrees of freedom for t-tests of a linear mixed model's fixed effects —
lmerTest's method (Kuznetsova, Brockhoff & Christensen 2017, J. Stat. Softw. 82(13), §3).

For a contrast ``l`` (a row of ``L``) with variance ``v(φ) = lᵀ C(φ) l``, where
``C(φ) = σ² (XᵀV_θ⁻¹X)⁻¹`` is the covariance of β̂ as a function of the variance parameters
``φ = (θ, σ)``,

    ν = 2 v(φ̂)² / (∇v(φ̂)ᵀ A ∇v(φ̂)),    A = 2 H⁻¹,  H = ∇²d(φ̂)

with d lmerTest's ``devfun_vp`` (the ML deviance, or the REML criterion for REML fits, as a
function of θ and σ with β profiled; :mod:`._lmm`).  ∇v (the Jacobian of C) and H are exact
autodiff (``jax.jacfwd``, ``jax.hessian``) of the LMM kernel — lmerTest uses finite
differences (numDeriv) here; both estimate the same quantities.  ``t = lᵀβ̂ / √v`` and the
p-value is the two-sided tail of Student's t with ν degrees of freedom.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._lmm import factors, lmm_parts

__all__ = ["satterthwaite", "satterthwaite_table"]


def _criteria(parts, reml):
    """``(d(φ), C(φ))`` of φ = (θ, σ): lmerTest's devfun_vp and the covariance of β̂."""
    n, p = parts.n, parts.p

    def dev_vp(phi):
        f, _ = factors(phi[:-1], parts)
        s2 = phi[-1] ** 2
        dev = f.logdet_l + f.pwrss / s2 + n * jnp.log(2 * jnp.pi * s2)
        if reml:
            dev = dev + f.logdet_x - p * jnp.log(2 * jnp.pi * s2)
        return dev

    def cov_beta(phi):
        f, _ = factors(phi[:-1], parts)
        return phi[-1] ** 2 * jnp.linalg.inv(f.txx)

    return dev_vp, cov_beta


def satterthwaite(results, L=None):
    """Estimates, standard errors, Satterthwaite df, t and p of the contrasts ``L β``.

    Parameters
    ----------
    results : MixedLMResults
    L : (k, p) array_like, optional
        One contrast per row (default the identity: each fixed effect).

    Returns
    -------
    dict of (k,) ndarrays
        ``estimate``, ``se``, ``df``, ``t``, ``p``.
    """
    from scipy.special import stdtr

    from .._precision import precision

    p = results.k_fe
    L = np.eye(p) if L is None else np.atleast_2d(np.asarray(L, np.float64))
    if L.shape[1] != p:
        raise ValueError(f"L must have {p} columns (one per fixed effect), got {L.shape[1]}")
    parts = lmm_parts(results.model)
    phi = np.concatenate([results.theta, [np.sqrt(results.scale)]])
    with precision(np.float64):
        dev_vp, cov_beta = _criteria(parts, results.reml)
        x = jnp.asarray(phi)
        cov = np.asarray(cov_beta(x))
        jac = np.asarray(jax.jacfwd(cov_beta)(x))  # (p, p, n_φ) ∂C/∂φ
        hess = np.asarray(jax.hessian(dev_vp)(x))  # (n_φ, n_φ)
    # A = 2 H⁻¹: the asymptotic covariance of φ̂ (pseudo-inverse where a variance is at 0)
    A = 2.0 * np.linalg.pinv(hess)
    est = L @ results._fe_s.to_numpy()
    var = np.einsum("ki,ij,kj->k", L, cov, L)
    grad = np.einsum("ki,ijv,kj->kv", L, jac, L)  # ∇_φ (lᵀ C l)
    den = np.einsum("kv,vw,kw->k", grad, A, grad)
    with np.errstate(divide="ignore"):
        df = np.where(den > 0, 2.0 * var**2 / den, np.inf)
    se = np.sqrt(var)
    t = est / se
    return {"estimate": est, "se": se, "df": df, "t": t, "p": 2.0 * stdtr(df, -np.abs(t))}


def satterthwaite_table(results, L=None):
    """lmerTest's coefficient table: ``Estimate, Std. Error, df, t value, Pr(>|t|)``.

    Parameters
    ----------
    results : MixedLMResults
    L : (k, p) array_like, optional
        Contrasts (rows); default each fixed effect.

    Returns
    -------
    DataFrame

    Examples
    --------
    >>> from bayesglmm import datasets, mixedlm
    >>> r = mixedlm("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy")).fit()
    >>> round(float(r.ttest_satterthwaite().loc["Days", "df"]), 3)
    17.0
    """
    import pandas as pd

    out = satterthwaite(results, L)
    index = (list(results._fe_s.index) if L is None
             else [f"c{i}" for i in range(len(out["t"]))])
    return pd.DataFrame({"Estimate": out["estimate"], "Std. Error": out["se"], "df": out["df"],
                         "t value": out["t"], "Pr(>|t|)": out["p"]}, index=index)
