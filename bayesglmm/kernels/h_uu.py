"""The random effects' Hessian H_uu = ΛᵀZᵀWZΛ + I of the penalised deviance h(u; θ)
(kernels.marginal): its factorisation, its log-determinant with the derivative written out,
and the conditional variances of the random effects.

W = diag(w) holds the rows' −∂²loglik/∂η², Λ = Λ(vcp) (covariance.lam_u; diag(e) with
e = exp(vcp[ident]) for independent terms).  H_uu is factored (linalg.psd) in the static
``mode`` of ``design.ellpack.design_mode``: ``"diag"`` (one grouping factor: H_uu diagonal),
``("block", q)`` (Z's columns in groups of at most q that no row of Z and no level of a
correlated term crosses — the terms of one grouping factor: H_uu block-diagonal, factored
block by block, linalg.block_diag),
``("schur", c, k_c)`` (component c, at most one non-zero per row, eliminated exactly; for
independent terms the blocks are assembled directly, never the dense k × k matrix),
``("schur_obs", c, k_c)`` (the same where each level of c holds at most one row, as an
observation-level effect: the blocks are kept by rows, never the k_c × k_r block) or
``"dense"``.  Levels without data (all-zero columns of Z) have H_uu = 1 there.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..covariance import lam_blocks, lam_t, lam_u
from ..design.ellpack import rmatvec
from ..linalg import block_diag, psd
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
    B = Z_cᵀWZ_r, C = Z_rᵀWZ_r and ``index = psd.schur_index(ident, c, k_c)``.

    Each row's products w_i·z_ia·z_ib of its pairs (a, b) of non-zeros go in one
    ``segment_sum`` into [d | B | C | a bin for the pairs no block keeps (r × c, and c × c off
    the diagonal: ELLPACK padding can point into c)]: XLA's CPU scatter is a serial loop, and
    three of them (one per block) took 2.3–2.9× as long (four crossed factors, 2,000 rows:
    500 → 170 µs an evaluation, most of an inner Newton step)."""
    c, kc = mode[1], mode[2]
    ident = data.ident
    kr = ident.shape[0] - kc
    index = psd.schur_index(ident, c, kc)
    inv = index[2]
    cols, vals = data.Z.cols, data.Z.vals
    # each non-zero's block, and its column's position within that block
    in_c = (ident == c)[cols]  # (n, m)
    p = jnp.where(in_c, inv[cols], inv[cols] - kc)
    prod = (w[:, None] * vals)[:, :, None] * vals[:, None, :]  # (n, m, m)
    a_c, b_c = in_c[:, :, None], in_c[:, None, :]
    pair = p[:, :, None] * kr + p[:, None, :]  # flat index into a (·, k_r) block
    nb, nc = kc * kr, kr * kr
    unused = kc + nb + nc
    diag = jnp.eye(cols.shape[1], dtype=bool)[None]
    target = jnp.where(a_c & b_c, jnp.where(diag, p[:, :, None], unused),
                       jnp.where(a_c, kc + pair, jnp.where(b_c, unused, kc + nb + pair)))
    out = jax.ops.segment_sum(prod.ravel(), target.ravel(), num_segments=unused + 1)
    return (out[:kc], out[kc:kc + nb].reshape(kc, kr), out[kc + nb:unused].reshape(kr, kr),
            index)


def _rows_split(vcp, mode, data: Data, inv):
    """Each row of ZΛ split at component c, for ``mode = ("schur_obs" | "schur", c, k_c)``
    and ``inv = psd.schur_index(...)[2]``: ``(zc (n,), pc (n,), zr (n, m), pr (n, m))`` — the
    row's c entry ẑ_ic (zero if none) and its position in c's block, and the rest's entries
    ẑ_ir (zero in c's slot) and their positions in the rest's block (0 in c's slot)."""
    c, kc = mode[1], mode[2]
    cols, vals = data.Z.cols, data.Z.vals
    zhat = vals * jnp.exp(vcp[data.ident])[cols]  # (n, m) rows of ZΛ
    in_c = (data.ident == c)[cols] & (vals != 0)  # (n, m); ELLPACK padding may point into c
    zc = jnp.sum(jnp.where(in_c, zhat, 0.0), axis=1)
    pc = jnp.sum(jnp.where(in_c, inv[cols], 0), axis=1)
    return zc, pc, jnp.where(in_c, 0.0, zhat), jnp.where(in_c, 0, inv[cols] - kc)


def _rows_factor(vcp, w, mode, data: Data):
    """The :class:`psd.SchurFactor` of H_uu with D⁻¹B by rows (:class:`psd.RowsY`), for
    ``mode = ("schur_obs", c, k_c)``: each level of c holds at most one row of Z.

    Row i's entries of ZΛ are its c entry ẑ_ic (zero if none) and the rest's ẑ_ir.  Its level
    j of c is touched by row i alone, so d_j = 1 + w_i ẑ_ic², B_j = w_i ẑ_ic ẑ_irᵀ, and the
    Schur complement C − BᵀD⁻¹B is the rest's block with each row's weight w_i replaced by
    w_i − (w_i ẑ_ic)²/d_j = w_i / (1 + w_i ẑ_ic²):  S = I + Σ_i w̃_i ẑ_ir ẑ_irᵀ.
    Cost and memory O(n·m² + k_r²), never O(k_c·k_r).  Where the rest's leading k_1 columns
    are one grouping factor (``mode[3]``: no row touches two of them), S's leading block is
    diagonal: its diagonal and S's other k_r − k_1 rows are summed (a third of the dense
    sum on grouseticks) and factored by blocks (psd.lead_diag_factor); the dense S is only
    assembled where a derivative needs its tangent."""
    c, kc = mode[1], mode[2]
    kr = data.ident.shape[0] - kc
    index = psd.schur_index(data.ident, c, kc)
    zc, pc, zr, pr = _rows_split(vcp, mode, data, index[2])
    wz = w * zc**2
    d = 1.0 + jax.ops.segment_sum(wz, pc, num_segments=kc)
    wt = w / (1.0 + wz)  # the Schur complement's row weights w̃
    prod = wt[:, None, None] * zr[:, :, None] * zr[:, None, :]  # (n, m, m)
    yv = (w * zc / (1.0 + wz))[:, None] * zr  # Y = D⁻¹B's non-zeros
    k1 = psd.lead_diag(mode)
    if k1:  # S's leading k1 × k1 block is diagonal: it and the other k_r − k1 rows, by blocks
        k2 = kr - k1
        lead = pr < k1  # (n, m): a row's entry in the leading component (or a zero slot)
        s1 = 1.0 + jax.ops.segment_sum(jnp.where(lead, wt[:, None] * zr**2, 0.0).ravel(),
                                       jnp.where(lead, pr, 0).ravel(), num_segments=k1)
        target = jnp.where(lead[:, :, None], k2 * kr,
                           (pr[:, :, None] - k1) * kr + pr[:, None, :])
        R = jax.ops.segment_sum(prod.ravel(), target.ravel(),
                                num_segments=k2 * kr + 1)[:-1].reshape(k2, kr)
        R = R + jnp.eye(k2, kr, k1, dtype=R.dtype)
        S = jnp.concatenate([jnp.concatenate([jnp.diag(s1), R[:, :k1].T], axis=1), R], axis=0)
        L = psd.lead_diag_factor(s1, R)
    else:
        pair = (pr[:, :, None] * kr + pr[:, None, :]).ravel()
        S = jax.ops.segment_sum(prod.ravel(), pair, num_segments=kr * kr).reshape(kr, kr)
        S = S + jnp.eye(kr, dtype=S.dtype)
        L = jnp.linalg.cholesky(S)
    return psd.SchurFactor(d, psd.RowsY(yv, pc, pr), L, *index, S)


def _block_index(data: Data):
    """(cols (nb, q), pos (k,)): H_uu's blocks' columns (``data.re_blocks``, k in unused
    slots) and each column's position in ``cols.ravel()``."""
    cols = data.re_blocks
    k = data.ident.shape[0]
    pos = jnp.zeros(k + 1, cols.dtype).at[cols.ravel()].set(
        jnp.arange(cols.size, dtype=cols.dtype))
    return cols, pos[:k]


def _block_factor(vcp, w, mode, data: Data) -> block_diag.BlockFactor:
    """The :class:`linalg.block_diag.BlockFactor` of H_uu for ``mode = ("block", q)``: no
    row of Z and no level of a correlated term crosses the column groups ``data.re_blocks``,
    so ZᵀWZ and Λ are block-diagonal over them.  Each row's products w_i·z_ia·z_ib of its
    pairs of non-zeros go in one ``segment_sum`` into (nb, q, q) — O(n·m² + nb·q³), never
    k × k."""
    q = mode[1]
    cols, pos = _block_index(data)
    nb = cols.shape[0]
    zc, zv = data.Z.cols, data.Z.vals
    p = pos[zc]  # (n, m): group and slot of each non-zero (ELLPACK padding has value 0)
    blk, slot = p // q, p % q
    target = (blk[:, :, None] * q + slot[:, :, None]) * q + slot[:, None, :]
    prod = (w[:, None] * zv)[:, :, None] * zv[:, None, :]
    M = jax.ops.segment_sum(prod.ravel(), target.ravel(), num_segments=nb * q * q)
    lam = lam_blocks(vcp, data.ident, data.corr, cols)
    H = jnp.einsum("bji,bjk,bkl->bil", lam, M.reshape(nb, q, q), lam)
    return block_diag.factor(H + jnp.eye(q, dtype=H.dtype), cols, pos)


def _rest_layout(data: Data, index: block_diag.RestIndex, mode):
    """(ident, corr) of Λ restricted to the rest's columns ``index.r_cols`` (closed under Λ:
    the correlated terms ``mode[3]`` lie inside, the others outside), with the terms' columns
    renumbered by ``index.r_at`` — for covariance.lam_t / lam_u on (k_r, ·) arrays, so that
    Λ_R is applied as the structured operator it is, O(k_r·p), never a dense k_r × k_r
    product."""
    corr = tuple(data.corr[i]._replace(cols=index.r_at[data.corr[i].cols]) for i in mode[3])
    return data.ident[index.r_cols], corr


def _schur_block_factor(vcp, w, mode, data: Data) -> block_diag.SchurBlockFactor:
    """The :class:`linalg.block_diag.SchurBlockFactor` of H_uu for ``mode = ("schur_block",
    q, k_r, r_terms)``: ``data.re_blocks`` holds the groups of D (no row and no correlated level
    crosses two of them), the other k_r columns are the rest R (closed under the correlated
    terms, so Λ has no D–R entries).  Each row's pairs w_i·z_ia·z_ib go in one
    ``segment_sum`` into [D's blocks (nb, q, q) | D–R (nb·q, k_r) | R–R (k_r, k_r) | a bin
    for pairs no block keeps]; then H_DD = Λ_bᵀM_bΛ_b + I, B = Λ_bᵀM_DRΛ_R,
    C = Λ_RᵀM_RRΛ_R + I.  O(n·m² + nb·q·(q² + q·k_r) + k_r³), never k × k."""
    _, q, kr, _ = mode
    cols, pos = _block_index(data)
    nb = cols.shape[0]
    index = block_diag.rest_index(cols, pos, kr)
    zc, zv = data.Z.cols, data.Z.vals
    d_a = index.in_d[zc]  # (n, m): entry in D
    p = pos[zc]
    blk, slot, rp = p // q, p % q, index.r_at[zc]
    nbb, ndr, nrr = nb * q * q, nb * q * kr, kr * kr
    a_d, b_d = d_a[:, :, None], d_a[:, None, :]
    target = jnp.where(
        a_d & b_d, (blk[:, :, None] * q + slot[:, :, None]) * q + slot[:, None, :],
        jnp.where(a_d, nbb + p[:, :, None] * kr + rp[:, None, :],
                  jnp.where(b_d, nbb + ndr + nrr, nbb + ndr + rp[:, :, None] * kr + rp[:, None, :])))
    prod = (w[:, None] * zv)[:, :, None] * zv[:, None, :]
    M = jax.ops.segment_sum(prod.ravel(), target.ravel(), num_segments=nbb + ndr + nrr + 1)
    lam = lam_blocks(vcp, data.ident, data.corr, cols)
    ident_r, corr_r = _rest_layout(data, index, mode)
    HD = jnp.einsum("bji,bjk,bkl->bil", lam, M[:nbb].reshape(nb, q, q), lam)
    BL = jnp.einsum("bji,bjk->bik", lam, M[nbb:nbb + ndr].reshape(nb, q, kr))  # Λ_bᵀM_DR
    B = lam_t(vcp, BL.reshape(nb * q, kr).T, ident_r, corr_r).T.reshape(nb, q, kr)  # ·Λ_R
    LtM = lam_t(vcp, M[nbb + ndr:nbb + ndr + nrr].reshape(kr, kr), ident_r, corr_r)
    C = lam_t(vcp, LtM.T, ident_r, corr_r).T  # Λ_RᵀM_RRΛ_R
    return block_diag.schur_factor(HD + jnp.eye(q, dtype=HD.dtype), B,
                                   C + jnp.eye(kr, dtype=C.dtype), cols, pos, index)


def factor_h_uu(vcp, w, mode, data: Data):
    """Factorisation of H_uu = Λᵀ·ZᵀWZ·Λ + I (psd.factor): its diagonal (k,) in ``"diag"``
    mode, a :class:`linalg.block_diag.BlockFactor` in ``("block", q)`` mode, a Cholesky
    factor or a :class:`psd.SchurFactor` otherwise.  With independent terms
    (Λ = diag(e), e = exp(vcp[ident])) the Schur factor is built from the blocks of
    :func:`_ztwz_blocks`, scaled by e; correlated terms form the dense matrix."""
    ident = data.ident
    k = ident.shape[0]
    if psd.is_block(mode):
        return _block_factor(vcp, w, mode, data)
    if psd.is_schur_block(mode):
        return _schur_block_factor(vcp, w, mode, data)
    if mode == "diag":
        return psd.factor(jnp.exp(2 * vcp[ident]) * _ztwz(data, w, k, mode) + 1.0, mode, ident)
    if mode != "dense" and not data.corr:
        if mode[0] == "schur_obs":
            return _rows_factor(vcp, w, mode, data)
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
    share a row, from the factor F — never H_uu⁻¹ in full in ``"diag"``, the block and the
    Schur modes (Schur-block: a row's columns in D lie in one of its blocks).  Schur:
    H⁻¹ = [[D⁻¹ + YS⁻¹Yᵀ, −YS⁻¹], [−S⁻¹Yᵀ, S⁻¹]] (S⁻¹ by psd.spd_inverse: differentiated as
    −S⁻¹dSS⁻¹, never through the factorisation)."""
    cols, vals = data.Z.cols, data.Z.vals
    zhat = vals * jnp.exp(vcp[data.ident])[cols]  # (n, m)
    k = data.ident.shape[0]
    if mode == "diag":
        hd = 1.0 / F
        return jnp.sum(zhat**2 * hd[cols], axis=1), hd
    if psd.is_block(mode):  # row i's pairs lie in one block: (H_b⁻¹)[slot_a, slot_b]
        p = F.pos[cols]
        blk, slot = p // mode[1], p % mode[1]
        pairs = F.Hi[blk[:, :, None], slot[:, :, None], slot[:, None, :]]  # (n, m, m)
        return jnp.einsum("na,nb,nab->n", zhat, zhat, pairs), block_diag.inv_diag(F)
    if psd.is_schur_block(mode):  # D's pairs in one block, D–R from −YS⁻¹, R–R from S⁻¹
        q = mode[1]
        Hd, Si = block_diag.schur_inverse_blocks(F)
        YSi = jnp.einsum("bik,kl->bil", F.Y, Si)  # (nb, q, k_r): −(H⁻¹)_DR
        in_d = F.index.in_d[cols]  # (n, m)
        p = jnp.where(in_d, F.D.pos[cols], 0)
        blk, slot, r = p // q, p % q, F.index.r_at[cols]
        a_d, b_d = in_d[:, :, None], in_d[:, None, :]
        pairs = jnp.where(
            a_d & b_d, Hd[blk[:, :, None], slot[:, :, None], slot[:, None, :]],
            jnp.where(a_d, -YSi[blk[:, :, None], slot[:, :, None], r[:, None, :]],
                      jnp.where(b_d, -YSi[blk[:, None, :], slot[:, None, :], r[:, :, None]],
                                Si[r[:, :, None], r[:, None, :]])))
        hd = block_diag.unsplit(F, jnp.diagonal(Hd, axis1=-2, axis2=-1), jnp.diag(Si))
        return jnp.einsum("na,nb,nab->n", zhat, zhat, pairs), hd
    if mode == "dense":
        Hi = jax.scipy.linalg.cho_solve((F, True), jnp.eye(k, dtype=F.dtype))
        pairs = Hi[cols[:, :, None], cols[:, None, :]]  # (n, m, m)
        return jnp.einsum("na,nb,nab->n", zhat, zhat, pairs), jnp.diag(Hi)
    if isinstance(F.Y, psd.RowsY):
        # row i: q_i = ẑ_ic² dd_j + 2 ẑ_ic Σ_b hdr_ib ẑ_ib + Σ_ab ẑ_ia G_iab ẑ_ib (rest's slots)
        dd, hdr, G, S_inv = psd.rows_inverse(F, psd.lead_diag(mode))
        zc, _, zr, _ = _rows_split(vcp, mode, data, F.inv)
        q = (zc**2 * dd[F.Y.pc] + 2.0 * zc * jnp.sum(hdr * zr, axis=1)
             + jnp.einsum("na,nb,nab->n", zr, zr, G))
        return q, psd.unpermute(F, dd, jnp.diag(S_inv))
    kc = F.d.shape[0]
    Hrr = psd.spd_inverse(F.S, F.L)  # (k_r, k_r) S⁻¹
    Hdr = -F.Y @ Hrr  # (k_c, k_r)
    dd = 1.0 / F.d - jnp.sum(Hdr * F.Y, axis=1)  # diag of the (d, d) block: D⁻¹ + YS⁻¹Yᵀ
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


def var_vc(vcp, F, mode, data: Data, hd=None):
    """diag(Λ H_uu⁻¹ Λᵀ), (k_vc,): the conditional variances of vc, from F = H_uu's factor.
    Independent terms only need diag(H_uu⁻¹) (``hd`` where the caller has it, as
    :func:`inverse_entries` returns it); correlated terms mix each level's q effects, so
    the dense inverse is formed (k_vc is bounded in the modes that allow correlated terms)."""
    if not data.corr:
        return jnp.exp(2 * vcp[data.ident]) * (psd.inv_diag(F, mode) if hd is None else hd)
    if psd.is_block(mode):  # block by block: diag(Λ_b H_b⁻¹ Λ_bᵀ)
        lam = lam_blocks(vcp, data.ident, data.corr, F.cols)
        return block_diag.scatter(F, jnp.einsum("bij,bjk,bik->bi", lam, F.Hi, lam))
    if psd.is_schur_block(mode):  # D's blocks of H⁻¹ and the rest's, each with its Λ
        Hd, Si = block_diag.schur_inverse_blocks(F)
        lam = lam_blocks(vcp, data.ident, data.corr, F.D.cols)
        ident_r, corr_r = _rest_layout(data, F.index, mode)
        A = lam_u(vcp, Si, ident_r, corr_r)  # Λ_R S⁻¹
        return block_diag.unsplit(F, jnp.einsum("bij,bjk,bik->bi", lam, Hd, lam),
                                   jnp.diag(lam_u(vcp, A.T, ident_r, corr_r)))
    k = data.ident.shape[0]
    A = psd.solve(F, jnp.eye(k, dtype=vcp.dtype), mode)  # H_uu⁻¹
    B = lam_u(vcp, A, data.ident, data.corr)  # Λ H⁻¹
    return jnp.diag(lam_u(vcp, B.T, data.ident, data.corr))
