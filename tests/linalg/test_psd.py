"""linalg.psd against dense numpy: |eig| solves, the three H_uu factorisations, block PCG."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesglmm._precision import precision
from bayesglmm.linalg import psd


def _abs(S):
    w, Q = np.linalg.eigh(S)
    return (Q * np.abs(w)) @ Q.T


def test_abs_solve_and_inverse_use_absolute_eigenvalues():
    rs = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rs.normal(size=(5, 5)))
    S = (Q * np.array([3.0, -2.0, 0.5, -0.1, 1.0])) @ Q.T  # indefinite
    b = rs.normal(size=5)
    ref = np.linalg.solve(_abs(S), b)
    with precision(np.float64):
        x = psd.abs_solve(jnp.asarray(S), jnp.asarray(b))
        x0 = psd.abs_solve(jnp.asarray(S), jnp.asarray(b), 0.0)
        xd = psd.abs_solve(jnp.asarray(S), jnp.asarray(b), 0.5)
        Si = psd.abs_inv(jnp.asarray(S))
    np.testing.assert_allclose(x, ref, rtol=1e-12)
    np.testing.assert_allclose(x0, ref, rtol=1e-12)
    A = _abs(S)
    np.testing.assert_allclose(xd, np.linalg.solve(A + 0.5 * np.diag(np.diag(A)), b), rtol=1e-12)
    np.testing.assert_allclose(Si, np.linalg.inv(A), rtol=1e-12)
    # the numpy form (host-side callers) is the same rule
    np.testing.assert_allclose(psd.abs_solve(S, b, xp=np), ref, rtol=1e-12)
    np.testing.assert_allclose(psd.abs_inv(S, xp=np), np.linalg.inv(A), rtol=1e-12)
    # a singular direction is floored at 1e-10·max|λ| instead of dividing by zero
    with precision(np.float64):
        xs = psd.abs_solve(jnp.diag(jnp.array([2.0, 0.0])), jnp.array([1.0, 1.0]))
    np.testing.assert_allclose(xs, [0.5, 1 / 2e-10], rtol=1e-12)


@pytest.fixture
def spd():
    """H = [[D, B], [Bᵀ, C]] with D diagonal (component 1's columns, interleaved with the
    others'), symmetric positive definite."""
    rs = np.random.default_rng(1)
    ident = np.array([0, 1, 1, 0, 1, 2, 1, 2])
    k = len(ident)
    M = rs.normal(size=(k, k))
    H = M @ M.T + k * np.eye(k)
    d = ident == 1
    H[np.ix_(d, d)] = np.diag(np.diag(H)[d])
    assert np.all(np.linalg.eigvalsh(H) > 0)
    return H, ident


@pytest.mark.parametrize("mode", ["dense", ("schur", 1, 4)])
def test_factorisations_match_dense(spd, mode):
    H, ident = spd
    b = np.random.default_rng(2).normal(size=(len(ident), 3))
    with precision(np.float64):
        F = psd.factor(jnp.asarray(H), mode, jnp.asarray(ident))
        x1 = psd.solve(F, jnp.asarray(b[:, 0]), mode)
        x3 = psd.solve(F, jnp.asarray(b), mode)
        ld = psd.logdet(F, mode)
        dinv = psd.inv_diag(F, mode)
        # differentiable (the Schur path by a gather, not a scatter): along a symmetric E
        # that keeps D diagonal, d/dε bᵀ(H + εE)⁻¹b = −yᵀEy with y = H⁻¹b
        E = np.random.default_rng(4).normal(size=H.shape)
        E = E + E.T
        E[np.ix_(ident == 1, ident == 1)] = 0.0
        _, dq = jax.jvp(lambda h: b[:, 0] @ psd.solve(psd.factor(h, mode, jnp.asarray(ident)),
                                                      jnp.asarray(b[:, 0]), mode),
                        (jnp.asarray(H),), (jnp.asarray(E),))
    Hi = np.linalg.inv(H)
    np.testing.assert_allclose(x1, Hi @ b[:, 0], rtol=1e-12)
    np.testing.assert_allclose(x3, Hi @ b, rtol=1e-12)
    np.testing.assert_allclose(ld, np.linalg.slogdet(H)[1], rtol=1e-12)
    np.testing.assert_allclose(dinv, np.diag(Hi), rtol=1e-12)
    y = Hi @ b[:, 0]
    np.testing.assert_allclose(dq, -y @ E @ y, rtol=1e-10)


def test_schur_index_partitions_without_sorting(spd):
    _, ident = spd
    with precision(np.float64):
        idx_d, idx_r, inv = (np.asarray(x) for x in psd.schur_index(jnp.asarray(ident), 1, 4))
    np.testing.assert_array_equal(idx_d, np.flatnonzero(ident == 1))
    np.testing.assert_array_equal(idx_r, np.flatnonzero(ident != 1))
    np.testing.assert_array_equal(np.concatenate([idx_d, idx_r])[inv], np.arange(len(ident)))


def test_diag_mode_is_elementwise():
    h = np.array([1.5, 2.0, 4.0])
    b = np.array([3.0, 1.0, 2.0])
    with precision(np.float64):
        F = psd.factor(jnp.asarray(h), "diag", jnp.zeros(3, jnp.int32))
        out = (psd.solve(F, jnp.asarray(b), "diag"), psd.logdet(F, "diag"),
               psd.inv_diag(F, "diag"))
    np.testing.assert_allclose(out[0], b / h, rtol=1e-15)
    np.testing.assert_allclose(out[1], np.sum(np.log(h)), rtol=1e-15)
    np.testing.assert_allclose(out[2], 1 / h, rtol=1e-15)


def test_block_pcg_solves_several_right_hand_sides():
    rs = np.random.default_rng(3)
    k, r, nb = 12, 2, 3
    M = rs.normal(size=(k * r, k * r))
    A = M @ M.T + k * r * np.eye(k * r)
    blocks = np.stack([A[2 * j:2 * j + 2, 2 * j:2 * j + 2] for j in range(k)])
    b = rs.normal(size=(k, r, nb))
    with precision(np.float64):
        Aj = jnp.asarray(A)
        x, it = psd.pcg(lambda u: (Aj @ u.reshape(-1)).reshape(k, r), jnp.asarray(blocks),
                        jnp.asarray(b), 1e-12, 200, return_iters=True)
    ref = np.linalg.solve(A, b.reshape(k * r, nb)).reshape(k, r, nb)
    np.testing.assert_allclose(x, ref, rtol=1e-9, atol=1e-11)
    assert 1 <= int(it) <= k * r


def test_spd_rules_match_autodiff_through_the_cholesky_factor(spd):
    """spd_solve / spd_inverse differentiate in S by −S⁻¹dS·: the same first and second
    derivatives as autodiff through cho_solve(cholesky(S)), and a central difference."""
    H, _ = spd
    rs = np.random.default_rng(3)
    k = H.shape[0]
    E = rs.normal(size=(k, k))
    E = E + E.T  # a symmetric direction
    b = rs.normal(size=(k, 2))

    def ours(t):
        S = jnp.asarray(H) + t * jnp.asarray(E)
        L = jnp.linalg.cholesky(S)
        return psd.spd_solve(S, L, jnp.asarray(b) * (1 + t)), psd.spd_inverse(S, L)

    def ref(t):
        S = jnp.asarray(H) + t * jnp.asarray(E)
        L = jnp.linalg.cholesky(S)
        eye = jnp.eye(k, dtype=S.dtype)
        return (jax.scipy.linalg.cho_solve((L, True), jnp.asarray(b) * (1 + t)),
                jax.scipy.linalg.cho_solve((L, True), eye))

    def scalar(t):
        x, Si = ours(t)
        return jnp.sum(x) + jnp.sum(Si**2)

    @jax.jit  # one program (op by op, each operation compiles separately)
    def run(t):
        h = 1e-6
        return (ours(t), ref(t), jax.jacfwd(ours)(t), jax.jacfwd(ref)(t),
                jax.jacfwd(jax.jacfwd(ours))(t), jax.jacfwd(jax.jacfwd(ref))(t),
                jax.grad(scalar)(t), (scalar(t + h) - scalar(t - h)) / (2 * h))

    with precision(np.float64):
        v, v_ref, d1, d1_ref, d2, d2_ref, g, fd = run(jnp.asarray(0.1))
    for a, r in zip(v, v_ref):
        np.testing.assert_allclose(a, r, rtol=1e-12)
    for a, r in zip(d1, d1_ref):
        np.testing.assert_allclose(a, r, rtol=1e-9, atol=1e-14)
    for a, r in zip(d2, d2_ref):
        np.testing.assert_allclose(a, r, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(g, fd, rtol=1e-6)  # reverse mode transposes the linear rule


@pytest.mark.parametrize("k1", [0, 3, 5, 8])
def test_lead_diag_factor_and_inverse_match_the_dense_ones(k1):
    """A Schur complement whose leading k1 × k1 block is diagonal (the ``"schur_obs"`` mode's,
    a grouping factor of the rest): its factor by blocks is LAPACK's Cholesky factor, its
    inverse by blocks S⁻¹, and the inverse's derivative (−S⁻¹dS·S⁻¹) that of autodiff through
    the dense factor, to second order — k1 = 0 (no block) and k1 = k (all diagonal) too."""
    rs = np.random.default_rng(4)
    k = 8
    M = rs.normal(size=(k, k))
    S0 = M @ M.T + k * np.eye(k)
    E = rs.normal(size=(k, k))
    E = E + E.T
    S0[:k1, :k1] = np.diag(np.diag(S0)[:k1])  # the structure, kept along the direction E
    E[:k1, :k1] = np.diag(np.diag(E)[:k1])

    def ours(t):
        S = jnp.asarray(S0) + t * jnp.asarray(E)
        L = psd.lead_diag_cholesky(S, k1)
        return L, psd.spd_inverse(S, L, k1)

    def ref(t):
        S = jnp.asarray(S0) + t * jnp.asarray(E)
        L = jnp.linalg.cholesky(S)
        return L, jax.scipy.linalg.cho_solve((L, True), jnp.eye(k, dtype=S.dtype))

    @jax.jit  # one program (op by op, each operation compiles separately)
    def run(t):
        return (ours(t), ref(t), jax.jacfwd(lambda s: ours(s)[1])(t),
                jax.jacfwd(lambda s: ref(s)[1])(t),
                jax.jacfwd(jax.jacfwd(lambda s: ours(s)[1]))(t),
                jax.jacfwd(jax.jacfwd(lambda s: ref(s)[1]))(t))

    with precision(np.float64):
        (L, Si), (L_ref, Si_ref), d1, d1_ref, d2, d2_ref = run(0.1)
    np.testing.assert_allclose(L, L_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(Si, np.linalg.inv(S0 + 0.1 * E), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(Si, Si_ref, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(d1, d1_ref, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(d2, d2_ref, rtol=1e-9, atol=1e-12)
    assert psd.lead_diag(("schur_obs", 1, 10, k1)) == k1
    assert psd.lead_diag(("schur_obs", 1, 10)) == 0 and psd.lead_diag(("schur", 1, 10)) == 0
