"""The random effects' Hessian H_uu = ΛᵀZᵀWZΛ + I of the penalised deviance h(u; θ)
(kernels.marginal): its factorisation, its log-determinant with the derivative written out,
and the conditional variances of the random effects.

W = diag(w) holds the rows' −∂²loglik/∂η², Λ = Λ(vcp) (covariance.lam_u; diag(e) with
e = exp(vcp[ident]) for independent terms).  H_uu is factored (linalg.psd) in the static
``mode`` of ``design.ellpack.design_mode``: ``"diag"`` (one grouping factor: H_uu diagonal),
``("schur", c, k_c)`` (component c, at most one non-zero per row, eliminated exactly; for
independent terms the blocks are assembled directly, never the dense k × k matrix) or
``"dense"``.  Levels without data (all-zero columns of Z) have H_uu = 1 there.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..covariance import lam_t, lam_u
from ..design.ellpack import rmatvec
from ..linalg import psd
from .glmm import Data

__all__ = ["factor_h_uu", "inverse_entries", "logdet_h_uu", "var_vc"]


def _ztwz(data: Data, w, k: int, mode):
    """ZᵀWZ: its diagonal (k,) in ``"diag"`` mode, the dense (k, k) matrix otherwise."""
    cols, vals = data.Z.cols, data.Z.vals
    if mode == "diag":
        return rmatvec(data.Z._replace(vals=vals**2), w, k)
    n, m = cols.shape
    ci = jnp.broadcast_to(cols[:, :, None], (n, m, m)).ravel()
    cj = jnp.broadcast_to(cols[:, None, :], (n, m, m)).ravel()
    contrib = (w[:, None, None] * vals[:, :, None] * vals[:, None, :]).ravel()
    return jnp.zeros((k, k), vals.dtype).at[ci, cj].add(contrib)


def _ztwz_blocks(data: Data, w, mode):
    """ZᵀWZ in the Schur partition of ``mode = ("schur", c, k_c)``, never the dense k × k
    matrix: (d (k_c,), B (k_c, k_r), C (k_r, k_r), index) with d = diag(Z_cᵀWZ_c)
    (component c has at most one non-zero per row, so that block is diagonal),
    B = Z_cᵀWZ_r, C = Z_rᵀWZ_r and ``index = psd.schur_index(ident, c, k_c)``."""
    _, c, kc = mode
    ident = data.ident
    kr = ident.shape[0] - kc
    index = psd.schur_index(ident, c, kc)
    inv = index[2]
    cols, vals = data.Z.cols, data.Z.vals
    # each non-zero's block, and its column's position within that block
    in_c = (ident == c)[cols]  # (n, m)
    p = jnp.where(in_c, inv[cols], inv[cols] - kc)
    wv = w[:, None] * vals
    d = jax.ops.segment_sum(jnp.where(in_c, wv * vals, 0.0).ravel(),
                            jnp.where(in_c, p, 0).ravel(), num_segments=kc)
    # pairs (a, b) of non-zeros of a row: c × rest → B, rest × rest → C
    pair = p[:, :, None] * kr + p[:, None, :]  # (n, m, m) flat index into a (·, k_r) block
    prod = wv[:, :, None] * vals[:, None, :]
    in_r = ~in_c
    to_b = in_c[:, :, None] & in_r[:, None, :]
    to_c = in_r[:, :, None] & in_r[:, None, :]
    B = jax.ops.segment_sum(jnp.where(to_b, prod, 0.0).ravel(),
                            jnp.where(to_b, pair, 0).ravel(), num_segments=kc * kr)
    C = jax.ops.segment_sum(jnp.where(to_c, prod, 0.0).ravel(),
                            jnp.where(to_c, pair, 0).ravel(), num_segments=kr * kr)
    return d, B.reshape(kc, kr), C.reshape(kr, kr), index


def factor_h_uu(vcp, w, mode, data: Data):
    """Factorisation of H_uu = Λᵀ·ZᵀWZ·Λ + I (psd.factor): its diagonal (k,) in ``"diag"``
    mode, a Cholesky factor or a :class:`psd.SchurFactor` otherwise.  With independent terms
    (Λ = diag(e), e = exp(vcp[ident])) the Schur factor is built from the blocks of
    :func:`_ztwz_blocks`, scaled by e; correlated terms form the dense matrix."""
    ident = data.ident
    k = ident.shape[0]
    if mode == "diag":
        return psd.factor(jnp.exp(2 * vcp[ident]) * _ztwz(data, w, k, mode) + 1.0, mode, ident)
    if mode != "dense" and not data.corr:
        d, B, C, index = _ztwz_blocks(data, w, mode)
        e = jnp.exp(vcp[ident])
        ed, er = e[index[0]], e[index[1]]
        return psd.schur_factor(ed**2 * d + 1.0, ed[:, None] * B * er[None, :],
                                er[:, None] * C * er[None, :] + jnp.eye(k - mode[2], dtype=e.dtype),
                                index)
    LtM = lam_t(vcp, _ztwz(data, w, k, mode), ident, data.corr)  # Λᵀ M
    H = lam_t(vcp, LtM.T, ident, data.corr).T + jnp.eye(k, dtype=vcp.dtype)
    return psd.factor(H, mode, ident)


def inverse_entries(vcp, F, mode, data: Data):
    """(q (n,), diag(H_uu⁻¹) (k,)) for independent terms, with q_i = ẑ_iᵀH_uu⁻¹ẑ_i the
    leverage of row i (ẑ_i its row of ZΛ): H_uu⁻¹'s entries at the pairs of columns that
    share a row, from the factor F — never H_uu⁻¹ in full in ``"diag"`` and ``"schur"``
    modes.  Schur: H⁻¹ = [[D⁻¹ + YS⁻¹Yᵀ, −YS⁻¹], [−S⁻¹Yᵀ, S⁻¹]] with S⁻¹ = QᵀQ, Q = L⁻¹."""
    cols, vals = data.Z.cols, data.Z.vals
    zhat = vals * jnp.exp(vcp[data.ident])[cols]  # (n, m)
    k = data.ident.shape[0]
    if mode == "diag":
        hd = 1.0 / F
        return jnp.sum(zhat**2 * hd[cols], axis=1), hd
    if mode == "dense":
        Hi = jax.scipy.linalg.cho_solve((F, True), jnp.eye(k, dtype=F.dtype))
        pairs = Hi[cols[:, :, None], cols[:, None, :]]  # (n, m, m)
        return jnp.einsum("na,nb,nab->n", zhat, zhat, pairs), jnp.diag(Hi)
    kc = F.d.shape[0]
    Q = jax.scipy.linalg.solve_triangular(F.L, jnp.eye(k - kc, dtype=F.L.dtype), lower=True)
    P = Q @ F.Y.T  # (k_r, k_c) L⁻¹Yᵀ
    dd = 1.0 / F.d + jnp.sum(P**2, axis=0)  # diag of the (d, d) block
    Hdr = -P.T @ Q  # (k_c, k_r)
    Hrr = Q.T @ Q  # (k_r, k_r)
    pos = F.inv[cols]  # (n, m) position in (idx_d, idx_r)
    in_c = pos < kc
    pr = jnp.where(in_c, 0, pos - kc)
    pc = jnp.where(in_c, pos, 0)
    a_c, b_c = in_c[:, :, None], in_c[:, None, :]
    # pairs in the same row: (c, c) only on the diagonal (one c non-zero per row), (c, r),
    # (r, c), (r, r); entries of ELLPACK padding have ẑ = 0
    pairs = jnp.where(
        a_c & b_c, dd[pc][:, :, None],
        jnp.where(a_c, Hdr[pc[:, :, None], pr[:, None, :]],
                  jnp.where(b_c, Hdr[pc[:, None, :], pr[:, :, None]],
                            Hrr[pr[:, :, None], pr[:, None, :]])))
    q = jnp.einsum("na,nb,nab->n", zhat, zhat, pairs)
    return q, psd.unpermute(F, dd, jnp.diag(Hrr))


@functools.cache
def logdet_h_uu(mode):
    """``logdet(vcp, w, data)``: log det H_uu(vcp, w), H_uu = ΛZᵀdiag(w)ZΛ + I with
    independent terms (Λ = diag(e), e = exp(vcp[ident])), with its derivative written out
    (``jax.custom_jvp``):

        d log det H_uu = tr(H_uu⁻¹ dH_uu) = Σ_i q_i dw_i + 2 Σ_j (1 − (H_uu⁻¹)_jj) dvcp[ident_j]

    (q_i the leverages of :func:`inverse_entries`; ΛZᵀWZΛ = H_uu − I and dΛ = Λ·diag(dvcp)).
    The tangent is linear in (dvcp, dw) with coefficients from the factor, so reverse mode
    transposes a product, not the factorisation, and the Hessian of ℓ needs only the
    forward derivatives of the coefficients.  ``data`` is not differentiated through."""

    @jax.custom_jvp
    def logdet(vcp, w, data):
        return psd.logdet(factor_h_uu(vcp, w, mode, data), mode)

    @logdet.defjvp
    def logdet_jvp(primals, tangents):
        vcp, w, data = primals
        vcp_dot, w_dot, _ = tangents
        F = factor_h_uu(vcp, w, mode, data)
        q, hd = inverse_entries(vcp, F, mode, data)
        dot = jnp.sum(q * w_dot) + 2.0 * jnp.sum((1.0 - hd) * vcp_dot[data.ident])
        return psd.logdet(F, mode), dot

    return logdet


def var_vc(vcp, F, mode, data: Data):
    """diag(Λ H_uu⁻¹ Λᵀ), (k_vc,): the conditional variances of vc, from F = H_uu's factor.
    Independent terms only need diag(H_uu⁻¹); correlated terms mix each level's q effects, so
    the dense inverse is formed (k_vc is bounded in the modes that allow correlated terms)."""
    if not data.corr:
        return jnp.exp(2 * vcp[data.ident]) * psd.inv_diag(F, mode)
    k = data.ident.shape[0]
    A = psd.solve(F, jnp.eye(k, dtype=vcp.dtype), mode)  # H_uu⁻¹
    B = lam_u(vcp, A, data.ident, data.corr)  # Λ H⁻¹
    return jnp.diag(lam_u(vcp, B.T, data.ident, data.corr))
