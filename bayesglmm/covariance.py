"""Correlated random effects: an unstructured q × q covariance per level of a grouping factor.

A correlated term ``(1 + x | g)`` has q random effects per level l of g, b_l ~ N(0, Σ) with
Σ = D·R·D, D = diag(exp(vcp[sd_idx])) (log SDs, as for independent components) and R = L·Lᵀ a
correlation matrix whose Cholesky factor L is built from q(q−1)/2 unconstrained parameters
z = vcp[z_idx] through canonical partial correlations w = tanh(z) (Lewandowski, Kurowicka and
Joe 2009; Stan's ``cholesky_corr``):

    L₀₀ = 1,  L_i0 = w_i0,  L_ij = w_ij·sqrt(1 − Σ_{k<j} L_ik²) (0 < j < i),
    L_ii = sqrt(1 − Σ_{k<i} L_ik²).

For q = 2 the single parameter is atanh of the correlation.  The prior of z is that of the log
SDs, N(0, vcp_p²).  In spherical coordinates b_l = D·L·u_l with u_l ~ N(0, I): the linear map
vc = Λ(vcp)·u is block-diagonal, with the q × q block D·L for each level.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CorrBlock", "corr_cholesky", "corr_matrix", "lam_blocks", "lam_u", "lam_t",
           "log_prior_blocks"]


class CorrBlock(NamedTuple):
    cols: jax.Array  # (G, q) int32: the q random-effect columns of each level
    sd_idx: jax.Array  # (q,) int32: entries of vcp holding the q log SDs
    z_idx: jax.Array  # (q(q−1)/2,) int32: entries of vcp holding the correlation parameters


def corr_cholesky(z, q: int):
    """Cholesky factor L (q, q) of a correlation matrix from unconstrained z (q(q−1)/2,)."""
    w = jnp.tanh(z)
    rows = []
    k = 0
    for i in range(q):
        row = []
        acc = jnp.zeros((), z.dtype)
        for j in range(i):
            lij = w[k] * jnp.sqrt(jnp.maximum(1.0 - acc, 0.0)) if j > 0 else w[k]
            row.append(lij)
            acc = acc + lij**2
            k += 1
        row.append(jnp.sqrt(jnp.maximum(1.0 - acc, 0.0)) if i > 0 else jnp.ones((), z.dtype))
        row += [jnp.zeros((), z.dtype)] * (q - i - 1)
        rows.append(jnp.stack(row))
    return jnp.stack(rows)


def corr_matrix(z, q: int) -> np.ndarray:
    """The correlation matrix R = L·Lᵀ (numpy, float64)."""
    from ._precision import precision

    with precision(np.float64):
        L = np.asarray(corr_cholesky(jnp.asarray(z, dtype=jnp.float64), q))
    return L @ L.T


def _block(vcp, b: CorrBlock):
    q = b.cols.shape[1]
    return jnp.exp(vcp[b.sd_idx]), corr_cholesky(vcp[b.z_idx], q)


def lam_u(vcp, u, ident, corr=()):
    """vc = Λ(vcp)·u for u of shape (k,) or (k, p)."""
    e = jnp.exp(vcp[ident])
    vc = (e if u.ndim == 1 else e[:, None]) * u
    for b in corr:
        s, L = _block(vcp, b)
        U = u[b.cols]  # (G, q[, p])
        V = jnp.einsum("jk,gk...->gj...", L, U)
        V = V * (s[:, None] if u.ndim > 1 else s)
        vc = vc.at[b.cols].set(V)
    return vc


def lam_t(vcp, x, ident, corr=()):
    """Λ(vcp)ᵀ·x for x of shape (k,) or (k, p)."""
    e = jnp.exp(vcp[ident])
    out = (e if x.ndim == 1 else e[:, None]) * x
    for b in corr:
        s, L = _block(vcp, b)
        Xb = x[b.cols] * (s[:, None] if x.ndim > 1 else s)  # D x_l
        out = out.at[b.cols].set(jnp.einsum("jk,gj...->gk...", L, Xb))  # Lᵀ D x_l
    return out


def lam_blocks(vcp, ident, corr, cols):
    """Λ(vcp)'s diagonal blocks over the column groups ``cols`` (nb, q) (each group closed
    under Λ: a correlated term's level lies in one group; k in unused slots): (nb, q, q) with
    entry [b, s, t] = Λ[cols[b, s], cols[b, t]], zero in unused slots.  One product
    Λ·U with U (k, q) holding, in column t, the indicator of each group's slot-t column."""
    k = ident.shape[0]
    slot = jnp.broadcast_to(jnp.arange(cols.shape[1]), cols.shape)
    U = jnp.zeros((k + 1, cols.shape[1]), vcp.dtype).at[cols.ravel(), slot.ravel()].set(1.0)
    V = lam_u(vcp, U[:k], ident, corr)  # V[r, t] = Λ[r, cols[group(r), t]]
    return jnp.concatenate([V, jnp.zeros_like(V[:1])], axis=0)[cols]


def log_prior_blocks(vcp, vc, corr=()):
    """Σ over correlated terms and levels of log N(b_l; 0, D R D), without −½ log 2π terms
    (as statsmodels' independent terms): −½ b_lᵀ Σ⁻¹ b_l − Σ log s − Σ log L_ii."""
    out = jnp.zeros((), vc.dtype)
    for b in corr:
        s, L = _block(vcp, b)
        W = vc[b.cols] / s  # (G, q)
        Y = jax.scipy.linalg.solve_triangular(L, W.T, lower=True)
        G = b.cols.shape[0]
        out = out - 0.5 * jnp.sum(Y**2) - G * jnp.sum(jnp.log(s)) - G * jnp.sum(jnp.log(jnp.diag(L)))
    return out
