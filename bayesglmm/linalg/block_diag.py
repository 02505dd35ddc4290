"""Block-diagonal symmetric positive-definite matrices of many small blocks, kept as blocks.

A correlated random term ``(1 + x | g)`` gives each level of g a q × q block of the random
effects' Hessian H_uu = ΛᵀZᵀWZΛ + I: where every row of Z touches one level only (a single
grouping factor, the usual ``glmer(y ~ x + (x | g))``), H_uu is block-diagonal.  Forming it as a
dense k × k matrix, as a crossed design needs, costs O(k³) per Newton step (500 groups with
q = 4: a 2,000 × 2,000 Cholesky, differentiated twice for the outer Hessian).  Here it stays
(nb, q, q), factored and inverted block by block by linalg.small (entry by entry, no LAPACK
call), O(nb·q³); derivatives go through the inverse (:func:`inverse_logdet`), as products of
q × q blocks.

A :class:`BlockFactor` maps the k columns to blocks by index: ``cols[b, s]`` is the column in
slot s of block b, or k for an unused slot (blocks of fewer than q columns: an independent
random effect is a block of one); H is the identity in unused slots, so they add nothing to
log det H and their entries of H⁻¹b are dropped.  Checked against dense Cholesky solves
(tests/linalg/test_block_diag.py).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .small import batched_cholesky, batched_solve_lower

__all__ = ["BlockFactor", "RestIndex", "SchurBlockFactor", "factor", "gather", "inv_diag", "inverse_logdet",
           "logdet", "rest_index", "scatter", "schur_factor", "schur_inv_diag", "schur_inverse_blocks",
           "schur_logdet", "schur_solve", "unsplit"]


class BlockFactor(NamedTuple):
    """H = blockdiag(H_1, …, H_nb), each (q, q), with its columns placed by index."""

    Hi: jax.Array  # (nb, q, q) the blocks' inverses (q small: O(nb·q³))
    logdets: jax.Array  # (nb,) the blocks' log-determinants
    cols: jax.Array  # (nb, q) int: the column in each slot, k where the slot is unused
    pos: jax.Array  # (k,) int: each column's position in cols.ravel()


@jax.custom_jvp
def inverse_logdet(H):
    """(H_b⁻¹ (nb, q, q), log det H_b (nb,)) of symmetric positive-definite blocks (only their
    lower triangles are read), from their Cholesky factors (linalg.small, no LAPACK call).

    Differentiated by d(H⁻¹) = −H⁻¹·dH·H⁻¹ and d log det H = tr(H⁻¹dH), never through the
    entry-by-entry factorisation: the fit's Hessian differentiates these twice, and the
    unrolled factorisation's derivatives took 54 s to compile at q = 8 (products: seconds)."""
    L = batched_cholesky(H)
    eye = jnp.broadcast_to(jnp.eye(H.shape[-1], dtype=H.dtype), H.shape)
    Li = batched_solve_lower(L, eye)  # L⁻¹
    logdets = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    return jnp.einsum("bji,bjk->bik", Li, Li), logdets


@inverse_logdet.defjvp
def _inverse_logdet_jvp(primals, tangents):
    (H,), (dH,) = primals, tangents
    Hi, logdets = inverse_logdet(H)
    return (Hi, logdets), (-jnp.einsum("bij,bjk,bkl->bil", Hi, dH, Hi),
                           jnp.einsum("bij,bji->b", Hi, dH))


def factor(H, cols, pos) -> BlockFactor:
    """The :class:`BlockFactor` of the blocks H (nb, q, q), symmetric positive definite."""
    return BlockFactor(*inverse_logdet(H), cols, pos)


def gather(F: BlockFactor, x):
    """x (k,) or (k, p) by blocks, (nb, q) or (nb, q, p); zero in unused slots."""
    pad = jnp.zeros((1,) + x.shape[1:], x.dtype)
    return jnp.concatenate([x, pad], axis=0)[F.cols]


def scatter(F: BlockFactor, xb):
    """The inverse of :func:`gather`: (nb, q[, p]) back to (k[, p]) — a gather by ``pos``,
    so that reverse-mode autodiff transposes it without a non-unique scatter."""
    return xb.reshape((-1,) + xb.shape[2:])[F.pos]


def solve(F: BlockFactor, b):
    """H⁻¹b for b (k,) or (k, p)."""
    return scatter(F, jnp.einsum("bij,bj...->bi...", F.Hi, gather(F, b)))


def logdet(F: BlockFactor):
    """log det H = Σ_b log det H_b."""
    return jnp.sum(F.logdets)


def inv_diag(F: BlockFactor):
    """diag(H⁻¹), (k,)."""
    return scatter(F, jnp.diagonal(F.Hi, axis1=-2, axis2=-1))


# --------------------------------------------------------------------------- with a dense rest

class RestIndex(NamedTuple):
    """Where each of the k columns sits when D's groups (a :class:`BlockFactor`'s ``cols``)
    are eliminated onto the k_r others, the rest R."""

    r_cols: jax.Array  # (k_r,) int: the rest's columns
    r_at: jax.Array  # (k,) int: each column's position in the rest (0 for D's)
    in_d: jax.Array  # (k,) bool: the column is in D
    at: jax.Array  # (k,) int: each column's position in concat(D slots (nb·q), rest (k_r))


def rest_index(cols, pos, kr: int) -> RestIndex:
    """The :class:`RestIndex` of D's groups ``cols`` (nb, q; k in unused slots) and their
    ``pos`` (k,), with k_r = ``kr`` columns outside them — computed once per factor."""
    k = pos.shape[0]
    in_d = jnp.zeros(k + 1, bool).at[cols.ravel()].set(True)[:k]
    r_cols = jnp.nonzero(~in_d, size=kr)[0].astype(cols.dtype)
    r_at = jnp.zeros(k, cols.dtype).at[r_cols].set(jnp.arange(kr, dtype=cols.dtype))
    return RestIndex(r_cols, r_at, in_d, jnp.where(in_d, pos, cols.size + r_at))


class SchurBlockFactor(NamedTuple):
    """H = [[D, B], [Bᵀ, C]] with D block-diagonal (a :class:`BlockFactor` over the columns of
    ``D.cols``) and C dense over the k_r columns ``index.r_cols``: D⁻¹B by blocks and the Schur
    complement S = C − BᵀD⁻¹B with its Cholesky factor.  S is kept for the derivative rules of
    psd.spd_solve / spd_inverse (differentiated in S, never through its factorisation)."""

    D: BlockFactor
    Y: jax.Array  # (nb, q, k_r) D⁻¹B by blocks (zero in unused slots)
    S: jax.Array  # (k_r, k_r) the Schur complement
    L: jax.Array  # (k_r, k_r) its Cholesky factor
    index: RestIndex


def schur_factor(HD, B, C, cols, pos, index: RestIndex) -> SchurBlockFactor:
    """The :class:`SchurBlockFactor` from D's blocks HD (nb, q, q), B by blocks (nb, q, k_r)
    and C (k_r, k_r); ``cols``/``pos`` place D's blocks (:class:`BlockFactor`), ``index``
    the rest (:func:`rest_index`)."""
    D = factor(HD, cols, pos)
    Y = jnp.einsum("bij,bjk->bik", D.Hi, B)
    S = C - jnp.einsum("bji,bjk->ik", B, Y)
    return SchurBlockFactor(D, Y, S, jnp.linalg.cholesky(S), index)


def unsplit(F: SchurBlockFactor, xd, xr):
    """(k[, p]) from D's slots (nb, q[, p]) and the rest's (k_r[, p]) — a gather."""
    return jnp.concatenate([xd.reshape((-1,) + xd.shape[2:]), xr], axis=0)[F.index.at]


def schur_solve(F: SchurBlockFactor, b):
    """H⁻¹b for b (k,) or (k, p): x_r = S⁻¹(b_r − Yᵀb_d), x_d = D⁻¹b_d − Y·x_r."""
    from .psd import spd_solve

    bd, br = gather(F.D, b), b[F.index.r_cols]
    xr = spd_solve(F.S, F.L, br - jnp.einsum("bik,bi...->k...", F.Y, bd))
    xd = jnp.einsum("bij,bj...->bi...", F.D.Hi, bd) - jnp.einsum("bik,k...->bi...", F.Y, xr)
    return unsplit(F, xd, xr)


def schur_logdet(F: SchurBlockFactor):
    """log det H = Σ_b log det D_b + log det S."""
    return logdet(F.D) + 2.0 * jnp.sum(jnp.log(jnp.diag(F.L)))


def schur_inverse_blocks(F: SchurBlockFactor):
    """(H⁻¹'s diagonal blocks over D's groups (nb, q, q), S⁻¹ (k_r, k_r)): D_b⁻¹ + Y_b S⁻¹ Y_bᵀ
    and the rest's block S⁻¹ (psd.spd_inverse)."""
    from .psd import spd_inverse

    Si = spd_inverse(F.S, F.L)
    return F.D.Hi + jnp.einsum("bik,kl,bjl->bij", F.Y, Si, F.Y), Si


def schur_inv_diag(F: SchurBlockFactor):
    """diag(H⁻¹), (k,)."""
    Hd, Si = schur_inverse_blocks(F)
    return unsplit(F, jnp.diagonal(Hd, axis1=-2, axis2=-1), jnp.diag(Si))
