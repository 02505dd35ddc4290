"""The dense SPD kernels of the profiled deviance: S⁻¹ and the reverse rule of
(log|S|, RᵀS⁻¹R, S⁻¹R), against numpy and central differences."""

import numpy as np
import pytest


@pytest.mark.parametrize("block", [8, 288])
def test_logdet_solve_reverse_rule(block, monkeypatch):
    """The hand-written VJP of (log|S|, RᵀS⁻¹R, S⁻¹R), reading S's lower triangle only, with
    S⁻¹ formed by several block columns and by one."""
    import jax
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.linalg import cholesky as ch

    monkeypatch.setattr(ch, "INVERSE_BLOCK", block)
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


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
@pytest.mark.parametrize("block", [8, 288])
def test_logdet_solve_inverse_rule_matches_autodiff_of_the_plain_reference(block, monkeypatch):
    """The JVP rule of (log|S|, RᵀS⁻¹R, S⁻¹R, S⁻¹): values, gradients (reverse mode, by JAX's
    transposition of the rule) and Hessians (forward over reverse, the rule applied to itself)
    of a scalar of a symmetric S(a) and R(a) equal JAX's autodiff through its own Cholesky
    rules (logdet_solve_plain, and jnp.linalg.inv for S⁻¹), on both routes to S⁻¹."""
    import jax
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.linalg import cholesky as ch

    monkeypatch.setattr(ch, "INVERSE_BLOCK", block)
    rng = np.random.default_rng(5)
    m, k = 23, 2
    b = rng.normal(size=(m, m))
    s0 = b @ b.T / m + np.eye(m)
    s1, s2 = (lambda c: c + c.T)(rng.normal(size=(m, m))), np.diag(rng.uniform(size=m))
    r0, r1 = rng.normal(size=(m, k)), rng.normal(size=(m, k))
    wq, wx, wi = rng.normal(size=(k, k)), rng.normal(size=(m, k)), rng.normal(size=(m, m))

    def parts(a):  # S(a) symmetric, nonlinear in a; R(a)
        s = s0 + a[0] * s1 / m + jnp.sin(a[1]) * s2 + a[0] * a[2] * np.eye(m)
        return s, r0 * jnp.exp(a[2]) + a[1] * r1

    def scalar(solve, inverse):
        def f(a):
            ld, q, x = solve(*parts(a))
            return ld + jnp.sum(wq * q) + jnp.sum(wx * x) + jnp.sum(wi * inverse(parts(a)[0]))
        return f

    new = scalar(lambda s, r: ch.logdet_solve_inverse(s, r)[:3],
                 lambda s: ch.logdet_solve_inverse(s, r0)[3])
    ref = scalar(ch.logdet_solve_plain, jnp.linalg.inv)
    a0 = jnp.array([0.3, -0.2, 0.1])
    with precision(np.float64):
        for fn in (lambda f: f, jax.grad, jax.hessian):
            got, want = jax.jit(fn(new))(a0), jax.jit(fn(ref))(a0)
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-9)
        _, tangent = jax.jvp(lambda a: ch.logdet_solve_inverse(*parts(a)), (a0,), (a0,))
        _, tangent_ref = jax.jvp(lambda a: (*ch.logdet_solve_plain(*parts(a)),
                                            jnp.linalg.inv(parts(a)[0])), (a0,), (a0,))
        for got, want in zip(tangent, tangent_ref):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("m", [0, 1, 7, 8, 9, 30])
def test_spd_inverse_lower_against_numpy(m, monkeypatch):
    """S⁻¹'s lower triangle by block columns (blocks of at most 8 here: one, several, a ragged
    last one) equals numpy's inverse; the factor's upper triangle is not read."""
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.linalg import cholesky as ch

    monkeypatch.setattr(ch, "INVERSE_BLOCK", 8)
    rng = np.random.default_rng(m)
    a = rng.normal(size=(m, m))
    s = a @ a.T / max(m, 1) + np.eye(m)
    chol = np.linalg.cholesky(s) + np.triu(rng.normal(size=(m, m)), 1)  # junk above
    with precision(np.float64):
        low = np.asarray(ch.spd_inverse_lower(jnp.asarray(chol)))
        full = np.asarray(ch.spd_inverse(jnp.asarray(chol)))
    ref = np.linalg.inv(s) if m else np.zeros((0, 0))
    np.testing.assert_allclose(low, np.tril(ref), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(full, ref, rtol=1e-10, atol=1e-12)


def test_spd_inverse_exports():
    """No host callback: a program holding S⁻¹ goes through ``jax.export`` (hence the stored
    programs and the persistent compilation cache of bayesglmm._export / _cache)."""
    import jax
    import jax.numpy as jnp

    from bayesglmm.linalg import cholesky as ch

    chol = jnp.eye(5, dtype=jnp.float32) * 2.0
    exported = jax.export.export(jax.jit(ch.spd_inverse_lower))(chol)
    np.testing.assert_allclose(np.asarray(exported.call(chol)), np.eye(5) / 4.0, rtol=1e-6)
