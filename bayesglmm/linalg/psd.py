"""Symmetric linear algebra shared by the fits, all traceable inside ``jax.jit``.

* Absolute-eigenvalue solve and inverse (:func:`abs_solve`, :func:`abs_inv`): a symmetric
  S = QΛQᵀ is replaced by |S| = Q|Λ|Qᵀ, positive definite wherever S is non-singular, so that
  −|S|⁻¹g is a descent direction even where the objective is not convex (saddle-free Newton:
  Dauphin et al. 2014, NeurIPS; Nocedal & Wright, *Numerical Optimization*, §3.4).  With
  ``xp=numpy`` they run on the host (the host-driven Newton loops), compiling nothing.
* Factorisations of the random effects' Hessian H_uu = ΛᵀZᵀWZΛ + I of the marginal Laplace
  fit (:func:`factor`, :func:`solve`, :func:`logdet`, :func:`inv_diag`) in one of the static
  modes of ``design.ellpack.design_mode``: ``"diag"`` (H_uu diagonal, stored as its diagonal),
  ``("block", q)`` (block-diagonal in q × q blocks: a correlated term on one grouping factor;
  linalg.block_diag), ``"dense"`` (Cholesky) and ``("schur", c, k_c)`` (the diagonal block of component c
  eliminated exactly, Cholesky of the Schur complement of the rest; :func:`schur_factor`
  builds it from the blocks, :func:`schur_index` partitions the columns by counting).  Where
  each level of c holds at most one row (an observation-level effect: ``("schur_obs", c,
  k_c, k_1)``), D⁻¹B is kept by rows (:class:`RowsY`): its non-zeros, never the k_c × k_r
  block; the Schur complement's leading k_1 × k_1 block is then diagonal (a grouping factor
  of the rest), and its factor and inverse are formed by blocks (:func:`lead_diag_factor`,
  :func:`spd_inverse` with ``k1``): dense work on the other k_r − k_1 columns only.
  Solves with the Schur complement S and its inverse (:func:`spd_solve`,
  :func:`spd_inverse`) are differentiated in S by −S⁻¹dS·, not through its factorisation.
* Batched block-Jacobi preconditioned conjugate gradients (:func:`pcg`) for H_vv·x = b with
  H_vv available only through products.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import block_diag

__all__ = ["RowsY", "SchurFactor", "abs_inv", "abs_solve", "block_solve", "factor", "inv_diag",
           "is_block", "is_schur_block", "lead_diag", "lead_diag_cholesky",
           "lead_diag_factor", "logdet", "pcg", "rows_inverse", "schur_factor",
           "schur_index", "solve", "spd_inverse", "spd_solve", "unpermute"]


# --------------------------------------------------------------------------- |eig| solves

def abs_solve(S, b, mu=None, xp=jnp):
    """|S̃|⁻¹·b, with S̃'s eigenvalues replaced by max(|λ|, 1e-10·max|λ|).

    With ``mu`` (Levenberg–Marquardt damping, ≥ 0) the matrix |S̃| + μ·diag(|S̃|) is formed and
    solved; without, the eigendecomposition is applied directly: Q·(Qᵀb / |λ|).

    Parameters
    ----------
    S : (k, k) symmetric (its symmetric part is used)
    b : (k,) or (k, p)
    mu : () or None
    xp : ``jax.numpy`` (traceable) or ``numpy`` (host-side callers, nothing to compile)
    """
    w, Q = xp.linalg.eigh(0.5 * (S + S.T))
    floor = 1e-10 * xp.max(xp.abs(w), initial=0.0) + xp.finfo(S.dtype).tiny
    w = xp.maximum(xp.abs(w), floor)
    if mu is None:
        return Q @ ((Q.T @ b) / w)
    Sc = (Q * w) @ Q.T
    Sc = Sc + mu * xp.diag(xp.diag(Sc))
    return xp.linalg.solve(Sc, b)


def abs_inv(H, xp=jnp):
    """|H|⁻¹ = Q·|Λ|⁻¹·Qᵀ for symmetric H (k, k): the inverse where H is positive definite,
    and a positive-definite covariance where rounding left it slightly indefinite (``xp`` as
    for :func:`abs_solve`)."""
    w, Q = xp.linalg.eigh(0.5 * (H + H.T))
    return (Q / xp.abs(w)) @ Q.T


# --------------------------------------------------------------------------- H_uu factors

class RowsY(NamedTuple):
    """Y = D⁻¹B by the rows of Z, where each level of component c holds at most one row:
    row i of Z holds level ``pc[i]`` of c and levels ``pr[i, a]`` of the rest, and
    Y[pc[i], pr[i, a]] = yv[i, a] (zero where entry a is c's, padding, or the row has no c
    level).  n·m numbers against the dense block's k_c·k_r, and k_c ≥ n."""

    yv: jax.Array  # (n, m) Y's non-zeros, by row and ELLPACK slot
    pc: jax.Array  # (n,) int, the row's position in c's block (0 where it has none)
    pr: jax.Array  # (n, m) int, each slot's position in the rest's block (0 for c's slot)


class SchurFactor(NamedTuple):
    """H = [[D, B], [Bᵀ, C]] (rows permuted) with D diagonal: D, D⁻¹B, S = C − BᵀD⁻¹B and
    chol(S).  S is kept for the derivative rules of :func:`spd_solve` and :func:`spd_inverse`
    (differentiated in S, never through its factorisation)."""

    d: jax.Array  # (k_c,) diagonal block D (component c)
    Y: jax.Array | RowsY  # (k_c, k_r) D⁻¹B, or its non-zeros by rows (RowsY)
    L: jax.Array  # (k_r, k_r) Cholesky factor of S = C − BᵀD⁻¹B
    idx_d: jax.Array  # (k_c,) columns of component c
    idx_r: jax.Array  # (k_r,) the other columns
    inv: jax.Array  # (k,) position of each column in (idx_d, idx_r)
    S: jax.Array  # (k_r, k_r) the Schur complement C − BᵀD⁻¹B


def schur_index(ident, c: int, kc: int):
    """(idx_d (k_c,), idx_r (k_r,), inv (k,)): the columns of component c, the others (each in
    order), and each column's position in their concatenation — by counting, not sorting."""
    in_c = ident == c
    inv = jnp.where(in_c, jnp.cumsum(in_c) - 1, kc + jnp.cumsum(~in_c) - 1)
    k = ident.shape[0]
    order = jnp.zeros(k, inv.dtype).at[inv].set(jnp.arange(k, dtype=inv.dtype),
                                                unique_indices=True)
    return order[:kc], order[kc:], inv


def factor(H, mode, ident):
    """Factorisation of the symmetric positive-definite H for the static ``mode``.

    Parameters
    ----------
    H : (k,) its diagonal in ``"diag"`` mode (returned as is), else (k, k)
    mode : ``"diag"``, ``"dense"`` or ``("schur", c, k_c)``
    ident : (k,) int, variance component of each column (``"schur"``: c's are eliminated)
    """
    if mode == "diag":
        return H
    if mode == "dense":
        return jnp.linalg.cholesky(H)
    c, kc = mode[1], mode[2]
    idx_d, idx_r, inv = schur_index(ident, c, kc)
    return schur_factor(jnp.diag(H)[idx_d], H[idx_d][:, idx_r], H[idx_r][:, idx_r],
                        (idx_d, idx_r, inv))


def schur_factor(d, B, C, index) -> SchurFactor:
    """The :class:`SchurFactor` of H = [[diag(d), B], [Bᵀ, C]] (rows ``idx_d``, then
    ``idx_r``), from its blocks d (k_c,), B (k_c, k_r), C (k_r, k_r) and
    ``index = schur_index(ident, c, k_c)``."""
    Y = B / d[:, None]
    S = C - B.T @ Y
    return SchurFactor(d, Y, jnp.linalg.cholesky(S), *index, S)


def _yt_mul(F: SchurFactor, bd):
    """Yᵀ·bd, (k_r,) or (k_r, p), for bd (k_c,) or (k_c, p)."""
    Y = F.Y
    if not isinstance(Y, RowsY):
        return Y.T @ bd
    g = bd[Y.pc]  # (n,) or (n, p): each row's entry of bd
    contrib = Y.yv * g[:, None] if g.ndim == 1 else Y.yv[:, :, None] * g[:, None, :]
    return jax.ops.segment_sum(contrib.reshape((-1,) + g.shape[1:]), Y.pr.ravel(),
                               num_segments=F.L.shape[0])


def _y_mul(F: SchurFactor, xr):
    """Y·xr, (k_c,) or (k_c, p), for xr (k_r,) or (k_r, p)."""
    Y = F.Y
    if not isinstance(Y, RowsY):
        return Y @ xr
    g = xr[Y.pr]  # (n, m) or (n, m, p)
    t = jnp.sum(Y.yv * g if g.ndim == 2 else Y.yv[:, :, None] * g, axis=1)
    return jax.ops.segment_sum(t, Y.pc, num_segments=F.d.shape[0])


@jax.custom_jvp
def spd_solve(S, L, b):
    """S⁻¹b for the symmetric positive-definite S (k, k) from its Cholesky factor L, b (k,) or
    (k, p), differentiated in S and b only (L = chol(S); its tangent is not used):
    d(S⁻¹b) = S⁻¹(db − dS·S⁻¹b) — two triangular solves per direction, where differentiating
    the factorisation would cost O(k³) (the Cholesky JVP)."""
    return jax.scipy.linalg.cho_solve((L, True), b)


@spd_solve.defjvp
def _spd_solve_jvp(primals, tangents):
    S, L, b = primals
    dS, _, db = tangents
    x = spd_solve(S, L, b)
    return x, spd_solve(S, L, db - dS @ x)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def spd_inverse(S, L, k1: int = 0):
    """S⁻¹ for the symmetric positive-definite S (k, k) from its Cholesky factor L,
    differentiated in S only: d(S⁻¹) = −S⁻¹·dS·S⁻¹ (two products per direction; through the
    factorisation it would be the Cholesky JVP, a triangular solve and two products).

    With a diagonal leading ``k1`` × ``k1`` block (static; L = :func:`lead_diag_cholesky` (S,
    k1)), by blocks: with L⁻¹ = [[L₁₁⁻¹, 0], [N, M]], M = L₂₂⁻¹ and N = −M·L₂₁L₁₁⁻¹,
    S⁻¹ = [[L₁₁⁻² + NᵀN, NᵀM], [MᵀN, MᵀM]] — one triangular inverse of size k₂ and three
    products instead of two k × k triangular solves (grouseticks: 290 → ~40 µs)."""
    if k1 == 0:
        return jax.scipy.linalg.cho_solve((L, True), jnp.eye(L.shape[0], dtype=L.dtype))
    k2 = L.shape[0] - k1
    l1 = jnp.diagonal(L)[:k1]
    M = jax.scipy.linalg.solve_triangular(L[k1:, k1:], jnp.eye(k2, dtype=L.dtype), lower=True)
    N = -M @ (L[k1:, :k1] / l1[None, :])
    S11 = N.T @ N + jnp.diag(1.0 / l1**2)
    S21 = M.T @ N
    return jnp.concatenate([jnp.concatenate([S11, S21.T], axis=1),
                            jnp.concatenate([S21, M.T @ M], axis=1)], axis=0)


@spd_inverse.defjvp
def _spd_inverse_jvp(k1, primals, tangents):
    S, L = primals
    dS, _ = tangents
    Si = spd_inverse(S, L, k1)
    return Si, -(Si @ dS @ Si)


def lead_diag(mode) -> int:
    """k_1 of a ``("schur_obs", c, k_c, k_1)`` mode: the Schur complement's leading diagonal
    block (design.ellpack.design_layout); 0 for any other mode."""
    if isinstance(mode, tuple) and mode[0] == "schur_obs" and len(mode) > 3:
        return int(mode[3])
    return 0


def lead_diag_cholesky(S, k1: int):
    """The lower Cholesky factor of the symmetric positive-definite S (k, k) whose leading
    k1 × k1 block is diagonal (static ``k1``): :func:`lead_diag_factor` of its diagonal's
    first k1 entries and its last k − k1 rows (``jnp.linalg.cholesky`` for k1 = 0)."""
    if k1 == 0:
        return jnp.linalg.cholesky(S)
    return lead_diag_factor(jnp.diagonal(S)[:k1], S[k1:])


def lead_diag_factor(s1, R):
    """The lower Cholesky factor of S = [[diag(s1), R₁ᵀ], [R₁, R₂]] (R = [R₁ R₂], (k₂, k)), by
    blocks: L₁₁ = diag(√s1), L₂₁ = R₁L₁₁⁻¹, L₂₂ = chol(R₂ − L₂₁L₂₁ᵀ).  The same factor as
    ``jnp.linalg.cholesky(S)`` (Cholesky factors are unique) for O(k₂²k₁ + k₂³) work instead of
    O(k³): grouseticks' 181 columns, 118 of them BROOD's diagonal block, factor as 63."""
    k1 = s1.shape[0]
    l1 = jnp.sqrt(s1)
    L21 = R[:, :k1] / l1[None, :]
    L22 = jnp.linalg.cholesky(R[:, k1:] - L21 @ L21.T)
    top = jnp.concatenate([jnp.diag(l1), jnp.zeros((k1, R.shape[0]), R.dtype)], axis=1)
    return jnp.concatenate([top, jnp.concatenate([L21, L22], axis=1)], axis=0)


def is_block(mode) -> bool:
    """Whether ``mode`` is ``("block", q)``: H block-diagonal in q × q blocks, factored as a
    linalg.block_diag.BlockFactor (kernels.h_uu builds it from the blocks)."""
    return isinstance(mode, tuple) and mode[0] == "block"


def is_schur_block(mode) -> bool:
    """Whether ``mode`` is ``("schur_block", q, k_r, r_terms)``: block-diagonal q × q blocks eliminated
    onto a dense rest of k_r columns (linalg.block_diag.SchurBlockFactor)."""
    return isinstance(mode, tuple) and mode[0] == "schur_block"


def solve(F, b, mode):
    """H⁻¹b for b of shape (k,) or (k, p), from ``F = factor(H, mode, ident)``."""
    if is_block(mode):
        return block_diag.solve(F, b)
    if is_schur_block(mode):
        return block_diag.schur_solve(F, b)
    if mode == "diag":
        return b / (F if b.ndim == 1 else F[:, None])
    if mode == "dense":
        return jax.scipy.linalg.cho_solve((F, True), b)
    bd, br = b[F.idx_d], b[F.idx_r]
    dd = F.d if b.ndim == 1 else F.d[:, None]
    xr = spd_solve(F.S, F.L, br - _yt_mul(F, bd))
    xd = bd / dd - _y_mul(F, xr)
    return unpermute(F, xd, xr)


def unpermute(F: SchurFactor, xd, xr):
    """The vector (or rows) with ``xd`` at ``idx_d`` and ``xr`` at ``idx_r`` — a gather, so
    that reverse-mode autodiff transposes it without a non-unique scatter."""
    return jnp.concatenate([xd, xr], axis=0)[F.inv]


def logdet(F, mode):
    """log det H: Σ log D + log det S in ``"schur"`` mode."""
    if is_block(mode):
        return block_diag.logdet(F)
    if is_schur_block(mode):
        return block_diag.schur_logdet(F)
    if mode == "diag":
        return jnp.sum(jnp.log(F))
    if mode == "dense":
        return 2.0 * jnp.sum(jnp.log(jnp.diag(F)))
    return jnp.sum(jnp.log(F.d)) + 2.0 * jnp.sum(jnp.log(jnp.diag(F.L)))


def inv_diag(F, mode):
    """diag(H⁻¹), (k,)."""
    if is_block(mode):
        return block_diag.inv_diag(F)
    if is_schur_block(mode):
        return block_diag.schur_inv_diag(F)
    if mode == "diag":
        return 1.0 / F
    tri = jax.scipy.linalg.solve_triangular
    if mode == "dense":
        Li = tri(F, jnp.eye(F.shape[0], dtype=F.dtype), lower=True)
        return jnp.sum(Li**2, axis=0)
    if isinstance(F.Y, RowsY):
        dd, _, _, S_inv = rows_inverse(F, lead_diag(mode))
        return unpermute(F, dd, jnp.diag(S_inv))
    Li = tri(F.L, jnp.eye(F.L.shape[0], dtype=F.L.dtype), lower=True)
    # (H⁻¹)_rr = S⁻¹;  (H⁻¹)_dd = D⁻¹ + Y S⁻¹ Yᵀ
    W = tri(F.L, F.Y.T, lower=True)
    return unpermute(F, 1.0 / F.d + jnp.sum(W**2, axis=0), jnp.sum(Li**2, axis=0))


def rows_inverse(F: SchurFactor, k1: int = 0):
    """H⁻¹'s entries that a row of Z touches, for a factor with :class:`RowsY`:
    ``(dd (k_c,), hdr (n, m), G (n, m, m), S⁻¹ (k_r, k_r))``.

    H⁻¹ = [[D⁻¹ + YS⁻¹Yᵀ, −YS⁻¹], [−S⁻¹Yᵀ, S⁻¹]]: with G_iab = (S⁻¹)[pr_ia, pr_ib] (the rest's
    pairs in row i) and y_i row i's non-zeros of Y, the diagonal of the (c, c) block is
    dd_j = 1/d_j + y_iᵀG_iy_i at j = pc_i (one row per level), and the (c, rest) entry at row
    i's level and slot b is hdr_ib = −(y_iᵀG_i)_b.  S⁻¹ is formed (k_r × k_r, from the
    factor: :func:`spd_inverse`, by blocks where its leading ``k1`` × ``k1`` block is
    diagonal), never the (c, ·) blocks."""
    Y = F.Y
    S_inv = spd_inverse(F.S, F.L, k1)
    G = S_inv[Y.pr[:, :, None], Y.pr[:, None, :]]  # (n, m, m)
    yG = jnp.einsum("na,nab->nb", Y.yv, G)
    dd = 1.0 / F.d + jax.ops.segment_sum(jnp.sum(yG * Y.yv, axis=1), Y.pc,
                                          num_segments=F.d.shape[0])
    return dd, -yG, G, S_inv


# --------------------------------------------------------------------------- block CG

def block_solve(blocks, x):
    """Solve the block-diagonal system: blocks (k, r, r), x (k, r, b)."""
    if blocks.shape[1] == 1:
        return x / blocks[:, :, :1]
    return jnp.linalg.solve(blocks, x)


def pcg(hvp, blocks, b, tol, maxiter, return_iters=False, x0=None):
    """Batched preconditioned CG for A·x = b with A symmetric positive definite.

    Parameters
    ----------
    hvp : callable, ``hvp(u)`` = A·u for u of shape (k, r)
    blocks : (k, r, r) diagonal blocks of A (the block-Jacobi preconditioner)
    b : (k, r, B) B right-hand sides, solved together
    tol : relative residual ‖b − Ax‖/‖b‖ at which a column stops
    maxiter : int, most iterations (each one batched product)
    return_iters : bool, also return the number of iterations
    x0 : (k, r, B), optional start (default the block-Jacobi solution)
    """
    A = jax.vmap(hvp, in_axes=-1, out_axes=-1)
    M = lambda x: block_solve(blocks, x)  # noqa: E731
    x = M(b) if x0 is None else x0
    res = b - A(x)
    z = M(res)
    p = z
    rz = jnp.sum(res * z, axis=(0, 1))
    bnorm = jnp.sqrt(jnp.sum(b * b, axis=(0, 1))) + jnp.finfo(b.dtype).tiny

    def cond(s):
        x, res, p, rz, it = s
        rel = jnp.sqrt(jnp.sum(res * res, axis=(0, 1))) / bnorm
        return (it < maxiter) & jnp.any(rel > tol)

    def body(s):
        x, res, p, rz, it = s
        Ap = A(p)
        pAp = jnp.sum(p * Ap, axis=(0, 1))
        alpha = rz / jnp.where(pAp == 0, 1, pAp)
        x = x + alpha * p
        res = res - alpha * Ap
        z = M(res)
        rz_new = jnp.sum(res * z, axis=(0, 1))
        p = z + (rz_new / jnp.where(rz == 0, 1, rz)) * p
        return x, res, p, rz_new, it + 1

    x, _, _, _, it = lax.while_loop(cond, body, (x, res, p, rz, 0))
    return (x, it) if return_iters else x
