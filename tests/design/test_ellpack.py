"""The ELLPACK random-effects design against dense matrices."""

import jax.numpy as jnp
import numpy as np
from scipy import sparse as sp

from bayesglmm.design import ellpack as sparse
from bayesglmm._precision import precision


def _random_csr(n=50, k=12, seed=0):
    rs = np.random.default_rng(seed)
    dense = (rs.uniform(size=(n, k)) < 0.15) * rs.normal(size=(n, k))
    return sp.csr_array(dense), dense


def test_from_scipy_roundtrip_and_products():
    mat, dense = _random_csr()
    cols, vals, k = sparse.from_scipy(mat)
    np.testing.assert_allclose(sparse.to_dense(cols, vals, k), dense)
    rs = np.random.default_rng(1)
    v, r = rs.normal(size=k), rs.normal(size=dense.shape[0])
    with precision(np.float64):
        Z = sparse.REDesign(jnp.asarray(cols), jnp.asarray(vals))
        np.testing.assert_allclose(sparse.matvec(Z, jnp.asarray(v)), dense @ v, rtol=1e-12)
        np.testing.assert_allclose(sparse.rmatvec(Z, jnp.asarray(r), k), dense.T @ r, rtol=1e-12,
                                   atol=1e-12)
        R = rs.normal(size=(dense.shape[0], 3))
        np.testing.assert_allclose(sparse.rmatvec(Z, jnp.asarray(R), k), dense.T @ R, atol=1e-12)


def test_from_codes_has_one_entry_per_term():
    g1, g2 = np.array([0, 1, 2, 0]), np.array([1, 0, 1, 1])
    x = np.array([0.5, 1.0, 2.0, -1.0])
    cols, vals = sparse.from_codes([g1, g2], [None, x], [0, 3])
    dense = sparse.to_dense(cols, vals, 5)
    expect = np.zeros((4, 5))
    expect[np.arange(4), g1] = 1
    expect[np.arange(4), 3 + g2] = x
    np.testing.assert_array_equal(dense, expect)


def test_colors_separate_columns_sharing_a_row():
    # crossed: 2 factors -> ident is a valid colouring
    n = 30
    a, b = np.arange(n) % 5, np.arange(n) % 3
    cols, vals = sparse.from_codes([a, b], [None, None], [0, 5])
    color, nc = sparse.colors(cols, vals, np.r_[np.zeros(5, int), np.ones(3, int)], 8)
    assert nc == 2 and set(color[:5]) == {0} and set(color[5:]) == {1}
    # one ident for both factors is not a valid colouring -> greedy
    color, nc = sparse.colors(cols, vals, np.zeros(8, int), 8)
    assert nc >= 2
    for row in range(n):
        c = color[cols[row]]
        assert len(set(c)) == len(c)
    # one non-zero per row -> one colour
    color, nc = sparse.colors(cols[:, :1], vals[:, :1], np.zeros(8, int), 8)
    assert nc == 1
