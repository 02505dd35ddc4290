"""The dense SPD kernels of the profiled deviance: S⁻¹ and the reverse rule of
(log|S|, RᵀS⁻¹R, S⁻¹R), against numpy and central differences."""

import numpy as np
import pytest


@pytest.mark.parametrize("host", [True, False])
def test_logdet_solve_reverse_rule(host, monkeypatch):
    """The hand-written VJP of (log|S|, RᵀS⁻¹R, S⁻¹R), reading S's lower triangle only, on
    both routes to S⁻¹ (LAPACK potri on the host, and the XLA fallback used off CPU)."""
    import jax
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.linalg import cholesky as ch

    monkeypatch.setattr(ch, "_host_lapack", lambda: host)
    rng = np.random.default_rng(3)
    m, k = 37, 3
    a = rng.normal(size=(m, m))
    s0 = a @ a.T / m + np.eye(m)
    r0 = rng.normal(size=(m, k))
    wq, wx = rng.normal(size=(k, k)), rng.normal(size=(m, k))

    def f(s, r):  # a scalar using all three outputs
        ld, q, x = ch.logdet_solve(s, r)  # reads the lower triangle of s only
        return ld + jnp.sum(wq * q) + jnp.sum(wx * x)

    def f_np(s, r):
        s = np.tril(s) + np.tril(s, -1).T
        x = np.linalg.solve(s, r)
        return np.linalg.slogdet(s)[1] + np.sum(wq * (r.T @ x)) + np.sum(wx * x)

    with precision(np.float64):
        gs, gr = jax.jit(jax.grad(f, argnums=(0, 1)))(jnp.asarray(s0), jnp.asarray(r0))
        inv = jax.jit(lambda s: ch.spd_inverse(jnp.linalg.cholesky(s)))(jnp.asarray(s0))
        np.testing.assert_allclose(np.asarray(inv),
                                   np.linalg.inv(s0), rtol=1e-10, atol=1e-12)
    h = 1e-6
    for i, j in [(0, 0), (5, 2), (36, 10), (20, 20)]:  # lower-triangle entries
        e = np.zeros((m, m))
        e[i, j] = h
        fd = (f_np(s0 + e, r0) - f_np(s0 - e, r0)) / (2 * h)
        np.testing.assert_allclose(np.asarray(gs)[i, j], fd, rtol=1e-6, atol=1e-8)
    assert np.all(np.asarray(gs)[np.triu_indices(m, 1)] == 0)  # upper triangle is not read
    e = np.zeros((m, k))
    e[7, 1] = h
    fd = (f_np(s0, r0 + e) - f_np(s0, r0 - e)) / (2 * h)
    np.testing.assert_allclose(np.asarray(gr)[7, 1], fd, rtol=1e-6, atol=1e-8)
