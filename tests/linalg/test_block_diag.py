"""linalg.block_diag against a dense Cholesky of the assembled matrix: blocks of different
sizes padded to q with unused slots, columns placed in a scrambled order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesglmm._precision import precision
from bayesglmm.linalg import block_diag


def _case(seed=0, q=3):
    """Blocks of sizes 3, 2, 1, 3, 1 (q = 3) over k = 10 columns in a random order."""
    rs = np.random.default_rng(seed)
    sizes = [3, 2, 1, 3, 1]
    k = sum(sizes)
    perm = rs.permutation(k)
    cols = np.full((len(sizes), q), k)
    H = np.tile(np.eye(q), (len(sizes), 1, 1))
    dense = np.zeros((k, k))
    start = 0
    for b, s in enumerate(sizes):
        A = rs.normal(size=(s, s))
        blk = A @ A.T + s * np.eye(s)
        H[b, :s, :s] = blk
        c = perm[start:start + s]
        cols[b, :s] = c
        dense[np.ix_(c, c)] = blk
        start += s
    pos = np.zeros(k + 1, int)
    pos[cols.ravel()] = np.arange(cols.size)
    return H, cols, pos[:k], dense


def test_solve_logdet_inverse_diagonal_match_dense():
    H, cols, pos, dense = _case()
    rs = np.random.default_rng(1)
    with precision(np.float64):
        F = jax.jit(block_diag.factor)(jnp.asarray(H), jnp.asarray(cols), jnp.asarray(pos))
        b = rs.normal(size=dense.shape[0])
        B = rs.normal(size=(dense.shape[0], 4))
        np.testing.assert_allclose(block_diag.solve(F, jnp.asarray(b)), np.linalg.solve(dense, b),
                                   rtol=1e-12)
        np.testing.assert_allclose(block_diag.solve(F, jnp.asarray(B)), np.linalg.solve(dense, B),
                                   rtol=1e-12)
        assert float(block_diag.logdet(F)) == pytest.approx(np.linalg.slogdet(dense)[1],
                                                            rel=1e-13)
        np.testing.assert_allclose(block_diag.inv_diag(F), np.diag(np.linalg.inv(dense)),
                                   rtol=1e-12)
        # gather and scatter are inverse on the used slots
        x = jnp.asarray(b)
        np.testing.assert_array_equal(block_diag.scatter(F, block_diag.gather(F, x)), x)


def test_derivatives_match_dense_autodiff():
    """d log det and d(H⁻¹b) in the blocks' entries, as JAX differentiates the dense
    Cholesky (second order too: the outer Hessian of the Laplace fit needs it)."""
    H, cols, pos, dense = _case(seed=2)
    b = np.random.default_rng(3).normal(size=dense.shape[0])
    with precision(np.float64):
        c, p = jnp.asarray(cols), jnp.asarray(pos)

        def to_dense(Hb):
            k = dense.shape[0]
            out = jnp.zeros((k + 1, k + 1)).at[c[:, :, None], c[:, None, :]].add(Hb)
            return out[:k, :k]

        used = (cols < dense.shape[0]).astype(float)
        mask = jnp.asarray(used[:, :, None] * used[:, None, :])

        def blocks(t):  # symmetric in every t; the identity in unused slots
            return jnp.asarray(H) + t * mask * jnp.asarray(H) ** 2

        def f_block(t):
            F = block_diag.factor(blocks(t), c, p)
            return block_diag.logdet(F) + jnp.sum(block_diag.solve(F, jnp.asarray(b)) ** 2)

        def f_dense(t):
            D = to_dense(blocks(t))
            L = jnp.linalg.cholesky(D)
            x = jax.scipy.linalg.cho_solve((L, True), jnp.asarray(b))
            return 2 * jnp.sum(jnp.log(jnp.diag(L))) + jnp.sum(x**2)

        for f in (jax.grad, lambda g: jax.grad(jax.grad(g))):
            got, want = jax.jit(f(f_block))(0.1), jax.jit(f(f_dense))(0.1)
            assert float(got) == pytest.approx(float(want), rel=1e-10)


def test_schur_factor_matches_dense():
    """SchurBlockFactor: D's blocks (as :func:`_case`) eliminated onto a dense rest of 3
    columns: solves, log det and diag(H⁻¹) against the assembled matrix."""
    H, cols, pos, dense_d = _case(seed=4)
    rs = np.random.default_rng(5)
    kd, kr = dense_d.shape[0], 3
    k = kd + kr
    B = rs.normal(size=(kd, kr)) * 0.3
    A = rs.normal(size=(kr, kr))
    C = A @ A.T + kr * np.eye(kr) + B.T @ np.linalg.solve(dense_d, B)
    dense = np.block([[dense_d, B], [B.T, C]])
    # columns: D's as in _case (0..kd−1), the rest kd..k−1; D's slots hold k when unused
    cols_k = np.where(cols == kd, k, cols)
    pos_k = np.zeros(k, int)
    pos_k[:kd] = pos
    Bb = np.where((cols < kd)[:, :, None], np.concatenate([B, np.zeros((1, kr))])[cols], 0.0)
    b = rs.normal(size=(k, 2))
    with precision(np.float64):
        c, p = jnp.asarray(cols_k), jnp.asarray(pos_k)
        index = block_diag.rest_index(c, p, kr)
        np.testing.assert_array_equal(index.r_cols, np.arange(kd, k))
        F = jax.jit(block_diag.schur_factor)(jnp.asarray(H), jnp.asarray(Bb), jnp.asarray(C),
                                             c, p, index)
        np.testing.assert_allclose(block_diag.schur_solve(F, jnp.asarray(b)),
                                   np.linalg.solve(dense, b), rtol=1e-11)
        assert float(block_diag.schur_logdet(F)) == pytest.approx(np.linalg.slogdet(dense)[1],
                                                                  rel=1e-13)
        np.testing.assert_allclose(block_diag.schur_inv_diag(F),
                                   np.diag(np.linalg.inv(dense)), rtol=1e-11)
