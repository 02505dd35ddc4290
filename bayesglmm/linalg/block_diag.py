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

__all__ = ["BlockFactor", "factor", "gather", "inv_diag", "inverse_logdet", "logdet", "scatter",
           "solve"]


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
