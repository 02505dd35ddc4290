"""statsmodels' log-likelihood of a linear mixed model over its packed parameters, in JAX.

statsmodels' ``MixedLM.loglike(params, profile_fe)`` takes ``[fe_params, cov_re[tril],
vcomp]`` (covariances relative to the residual variance σ², lower triangle row by row; with
``use_sqrt`` the Cholesky factor of ``cov_re`` and ``sqrt(vcomp)``) and always profiles σ² out.
From the Cholesky pieces of :func:`bayesglmm.kernels.lmm._factor` at θ (``λ = chol(cov_re)``,
``θ_vc = sqrt(vcomp)``): ``log|V| = log|L_θ|²`` (V relative to σ²), ``XᵀV⁻¹X``, ``XᵀV⁻¹y`` and
``r²_θ = min_β (y − Xβ)ᵀV⁻¹(y − Xβ)``.  The quadratic form at any β is then

    qf(β) = r²_θ + (β − β̂)ᵀ XᵀV⁻¹X (β − β̂),      β̂ = (XᵀV⁻¹X)⁻¹ XᵀV⁻¹y,

and with ν = n (ML) or n − p (REML), σ̂² = qf/ν:

    ℓ = −½ log|V| − ν/2 log qf − ν/2 log 2π + ν/2 log ν − ν/2   [− ½ log|XᵀV⁻¹X|  (REML)]

which at β = β̂ is −d(θ)/2 of :mod:`bayesglmm.kernels.lmm`.  ``score`` and ``hessian`` are
``jax.grad`` and ``jax.hessian`` of this function (never hand-written, never finite
differences).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..design.crossprod import CrossProd, Structure
from .lmm import _factor

__all__ = ["Layout", "fe_hat", "loglike", "loglike_hessian", "loglike_score"]


class Layout(NamedTuple):
    """Static layout of the packed vector (hashable: a jit static argument)."""

    k_fe: int  # fixed effects
    k_re: int  # random effects of `groups` (the block ``cov_re`` describes)
    blocks: tuple  # per θ block in θ order: (kind, θ indices (q*q) row-major, q)
    shift: tuple  # (k_fe,) added to β for the response the cross-products hold (centred y)


def _theta(cov_part, vcomp_part, layout: Layout, use_sqrt: bool, n_theta: int, dtype):
    """θ from the covariance part of the packed vector (traceable)."""
    k_re = layout.k_re
    low = jnp.zeros((k_re, k_re), dtype)
    if k_re:
        low = low.at[np.tril_indices(k_re)].set(cov_part)
    # relative cov_re: L Lᵀ (use_sqrt) or the symmetric matrix of its lower triangle
    cov = low @ low.T if use_sqrt else low + jnp.tril(low, -1).T
    theta = jnp.zeros(n_theta, dtype)
    k = 0
    for kind, flat, q in layout.blocks:
        ti = np.asarray(flat).reshape(q, q)
        if kind == "vc":
            v = vcomp_part[k]  # θ_vc² = vcomp (θ enters the deviance only squared)
            theta = theta.at[ti[0, 0]].set(v if use_sqrt else jnp.sqrt(v))
            k += 1
            continue
        if kind == "diag":  # a free pattern with a diagonal cov_re: λ = diag(√cov_ii)
            lam = jnp.diag(jnp.sqrt(jnp.diagonal(cov)[:q]))
        else:  # λ = chol(cov_re); with use_sqrt the factor itself (V depends on λλᵀ only)
            lam = low[:q, :q] if use_sqrt else jnp.linalg.cholesky(cov[:q, :q])
        m = ti >= 0
        theta = theta.at[ti[m]].set(lam[m])
    return theta


def _loglike(packed, cp: CrossProd, struct: Structure, layout: Layout, reml: bool,
             profile_fe: bool, use_sqrt: bool):
    k_fe, k_re = layout.k_fe, layout.k_re
    off = 0 if profile_fe else k_fe
    k_re2 = k_re * (k_re + 1) // 2
    theta = _theta(packed[off : off + k_re2], packed[off + k_re2 :], layout, use_sqrt,
                   struct.n_theta, packed.dtype)
    f = _factor(theta, cp, struct, plain=True)[0]
    n = cp.n.astype(packed.dtype)
    p = k_fe
    if profile_fe:
        qf = f.pwrss
    else:
        beta = packed[:k_fe] - jnp.asarray(layout.shift, packed.dtype)
        bhat = jnp.linalg.solve(f.txx, f.txy)
        d = beta - bhat
        qf = f.pwrss + d @ f.txx @ d
    nu = n - p if reml else n
    ll = -0.5 * f.logdet_l - 0.5 * nu * (jnp.log(qf) + jnp.log(2.0 * jnp.pi) - jnp.log(nu) + 1.0)
    if reml:
        ll = ll - 0.5 * f.logdet_x
    return ll


_STATIC = ("struct", "layout", "reml", "profile_fe", "use_sqrt")


@functools.partial(jax.jit, static_argnames=_STATIC)
def loglike(packed, cp, struct, layout, reml, profile_fe, use_sqrt):
    """statsmodels' profile log-likelihood (σ² profiled; β too when ``profile_fe``)."""
    return _loglike(packed, cp, struct, layout, reml, profile_fe, use_sqrt)


@functools.partial(jax.jit, static_argnames=_STATIC)
def loglike_score(packed, cp, struct, layout, reml, profile_fe, use_sqrt):
    """∇ of :func:`loglike` over the packed vector (``jax.grad``)."""
    return jax.grad(_loglike)(packed, cp, struct, layout, reml, profile_fe, use_sqrt)


@functools.partial(jax.jit, static_argnames=_STATIC)
def loglike_hessian(packed, cp, struct, layout, reml, profile_fe, use_sqrt):
    """∇² of :func:`loglike` over the packed vector (``jax.hessian``)."""
    return jax.hessian(_loglike)(packed, cp, struct, layout, reml, profile_fe, use_sqrt)


@functools.partial(jax.jit, static_argnames=("struct", "layout", "use_sqrt"))
def fe_hat(cov_packed, cp, struct, layout, use_sqrt):
    """``(β̂, XᵀV⁻¹X)`` at the covariances ``cov_packed`` (GLS; statsmodels' ``get_fe_params``)."""
    k_re2 = layout.k_re * (layout.k_re + 1) // 2
    theta = _theta(cov_packed[:k_re2], cov_packed[k_re2:], layout, use_sqrt, struct.n_theta,
                   cov_packed.dtype)
    f = _factor(theta, cp, struct, plain=True)[0]
    return jnp.linalg.solve(f.txx, f.txy) + jnp.asarray(layout.shift, cov_packed.dtype), f.txx
