"""The linear mixed model's criteria as JAX functions of lme4's variance parameters, for the
inference methods (Satterthwaite, profiles, bootstrap).

From the Cholesky pieces at θ (:func:`bayesglmm.kernels.lmm._factor`, JAX's own Cholesky rules
so that derivatives of any order are exact autodiff): with ``t = [X y]ᵀV⁻¹[X y]`` (V relative
to σ²), ``r²(θ, β) = [−β; 1]ᵀ t [−β; 1]`` and (Bates et al. 2015, eqns 32–34, 41)

    ML:   d(θ, σ, β) = log|L_θ|² + r²(θ, β)/σ² + n log(2πσ²)
    REML: d_R(θ, σ)  = log|L_θ|² + log|R_X|² + r²_θ/σ² + (n − p) log(2πσ²)

with r²_θ = min_β r²(θ, β) — lmerTest's ``devfun_vp``.  Also lme4's profile parameters
(standard deviations, correlations, σ — ``Cv_to_Sv``) and their map back to θ.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["LMMParts", "lmm_parts", "sd_scale_names", "sv_to_theta", "theta_to_sv"]


class LMMParts(NamedTuple):
    """What the inference functions need of a fitted MixedLM (float64)."""

    cp: object  # design.crossprod.CrossProd of the model (y centred when X has a constant)
    struct: object  # design.crossprod.Structure (static)
    n: int  # rows
    p: int  # fixed effects
    blocks: tuple  # per distinct θ block: (θ positions (q, q) ints or -1, kind "re"/"diag"/"vc")
    yshift: float  # the mean subtracted from y in cp (added back to the intercept)
    icol: int  # column of the constant in X, or -1


def lmm_parts(model) -> LMMParts:
    """Cross-products, structure and θ blocks of ``model`` (a :class:`~bayesglmm.MixedLM`)."""
    cp, st = model._crossprod(np.float64)
    blocks, seen = [], set()
    for t, ti in zip(model.design.terms, model._theta_index):
        if t.tkey in seen:
            continue
        seen.add(t.tkey)
        blocks.append((np.asarray(ti), t.kind))
    X = model.design.X
    const = np.flatnonzero(np.all(X == 1.0, axis=0))
    return LMMParts(cp, st, model.nobs, X.shape[1], tuple(blocks), float(model._yshift),
                    int(const[0]) if len(const) else -1)


def factors(theta, parts: LMMParts):
    """``(Factors, t)`` at θ, differentiable to any order."""
    from ..kernels.lmm import _factor

    f, t, _, _ = _factor(theta, parts.cp, parts.struct, plain=True)
    return f, t


def sd_scale_names(model) -> list:
    """Names of lme4's profile parameters, ``oldNames=FALSE`` style with our column names:
    ``sd_Intercept|Subject``, ``cor_Days.Intercept|Subject``, ..., ``sigma``."""
    names, seen = [], set()
    for t, ti in zip(model.design.terms, model._theta_index):
        if t.tkey in seen:
            continue
        seen.add(t.tkey)
        grp = t.tkey[3:] if t.kind == "vc" else t.group
        q = ti.shape[0]
        for j in range(q):  # θ order: lower triangle by columns (diagonal = sd, below = cor)
            for i in range(j, q):
                if ti[i, j] < 0:
                    continue
                names.append((int(ti[i, j]), f"sd_{t.cols[i]}|{grp}" if i == j
                              else f"cor_{t.cols[i]}.{t.cols[j]}|{grp}"))
    return [nm for _, nm in sorted(names)] + ["sigma"]


def _block_lambda(theta, ti):
    idx = np.asarray(ti)
    return jnp.where(jnp.asarray(idx >= 0), theta[np.maximum(idx, 0)], 0.0)


def theta_to_sv(theta, sigma, parts: LMMParts):
    """θ, σ → lme4's ``Cv_to_Sv``: per block SDs (at diagonal θ positions) and correlations
    (below), then σ.  ``Σ_t = σ² λ_t λ_tᵀ``."""
    sv = jnp.zeros(parts.struct.n_theta + 1, theta.dtype)
    for ti, _ in parts.blocks:
        lam = _block_lambda(theta, ti)
        cov = lam @ lam.T
        sd = jnp.sqrt(jnp.diagonal(cov))
        den = jnp.where(sd[:, None] * sd[None, :] > 0, sd[:, None] * sd[None, :], 1.0)
        val = jnp.where(np.eye(ti.shape[0], dtype=bool), sigma * sd[:, None], cov / den)
        mask = ti >= 0
        sv = sv.at[ti[mask]].set(val[mask])
    return sv.at[-1].set(sigma)


def sv_to_theta(sv, parts: LMMParts):
    """Inverse of :func:`theta_to_sv` (lme4's ``Sv_to_Cv``): ``(θ, σ)``; λ_t = chol(Σ_t)/σ."""
    sigma = sv[-1]
    theta = jnp.zeros(parts.struct.n_theta, sv.dtype)
    for ti, _ in parts.blocks:
        q = ti.shape[0]
        mask = ti >= 0
        vals = _block_lambda(sv[:-1], ti)  # sd on the diagonal, correlations below
        sd = jnp.diagonal(vals)
        if q == 1 or not np.any(mask & ~np.eye(q, dtype=bool)):
            lam = jnp.diag(sd / sigma)
        else:
            cor = jnp.tril(vals, -1)
            cor = cor + cor.T + jnp.eye(q, dtype=sv.dtype)
            # Cholesky of the correlation matrix written out (stays defined at |ρ| = 1 for q = 2)
            lam = _chol_corr(cor) * (sd / sigma)[:, None]
        theta = theta.at[ti[mask]].set(lam[mask])
    return theta, sigma


def _chol_corr(cor):
    """Lower Cholesky factor of a correlation matrix (q = 2 in closed form)."""
    if cor.shape[0] == 2:
        r = cor[1, 0]
        return jnp.array([[1.0, 0.0], [r, jnp.sqrt(jnp.maximum(1.0 - r * r, 0.0))]])
    return jnp.linalg.cholesky(cor)
