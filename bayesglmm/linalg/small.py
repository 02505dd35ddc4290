"""Cholesky factors and triangular solves of batches of small matrices, without LAPACK.

A random term with q covariates gives every level its own q × q block (the LMM's
``λ₁ᵀ D_l λ₁ + I``, kernels.lmm).  JAX factors a batch of them with jaxlib's batched LAPACK
kernels, which split the batch onto XLA's intra-op thread pool and wait for the pieces
(docs/architecture.md): where XLA runs two such calls at once — the Hessian program, whose
forward derivatives of the factor and of the solve with it are independent batched
``trsm`` calls, or a vmapped refit — the process can hang on a 2-core machine (an
``(x1 + x2 + x3 | g)`` LMM with 500 groups, or six slopes with 40, never returned).

Here the factorisation and the solve are written out entry by entry for q ≤ ``MAX_UNROLLED``
(q(q+1)/2 and q²·k elementwise operations over the batch), so their programs, and JAX's
derivatives of them to any order, hold no LAPACK call at all; for a q-vector of covariates
this is also what a LAPACK kernel costs.  Larger blocks use JAX's own routines.  Checked
against ``jnp.linalg.cholesky`` / ``solve_triangular`` and their derivatives
(tests/linalg/test_small.py).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

__all__ = ["MAX_UNROLLED", "batched_cholesky", "batched_solve_lower"]

# blocks up to this size are factored and solved entry by entry (compile time grows as q³)
MAX_UNROLLED = 16


def batched_cholesky(a):
    """Lower Cholesky factors of ``a`` (..., q, q), symmetric positive definite; only the
    lower triangle is read."""
    q = a.shape[-1]
    if q > MAX_UNROLLED:
        return jnp.linalg.cholesky(a)
    cols: list[list] = [[None] * q for _ in range(q)]  # cols[i][j]: L_ij, j ≤ i
    for j in range(q):
        d = a[..., j, j]
        for k in range(j):
            d = d - cols[j][k] ** 2
        d = jnp.sqrt(d)
        cols[j][j] = d
        for i in range(j + 1, q):
            s = a[..., i, j]
            for k in range(j):
                s = s - cols[i][k] * cols[j][k]
            cols[i][j] = s / d
    zero = jnp.zeros_like(a[..., 0, 0])
    return jnp.stack([jnp.stack([cols[i][j] if j <= i else zero for j in range(q)], axis=-1)
                      for i in range(q)], axis=-2)


def batched_solve_lower(chol, b):
    """``chol⁻¹ b`` for lower-triangular ``chol`` (..., q, q) and ``b`` (..., q, k), by forward
    substitution."""
    q = chol.shape[-1]
    if q > MAX_UNROLLED:
        return solve_triangular(chol, b, lower=True)
    rows: list = []
    for i in range(q):
        r = b[..., i, :]
        for k in range(i):
            r = r - chol[..., i, k, None] * rows[k]
        rows.append(r / chol[..., i, i, None])
    return jnp.stack(rows, axis=-2)
