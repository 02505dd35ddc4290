"""linalg.small against JAX's LAPACK-backed routines: values, derivatives (also against
finite differences), and programs without LAPACK calls."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import solve_triangular

from bayesglmm._precision import precision
from bayesglmm.linalg.small import MAX_UNROLLED, batched_cholesky, batched_solve_lower


def _spd(rng, batch, q):
    m = rng.normal(size=batch + (q, q))
    return m @ np.swapaxes(m, -1, -2) + q * np.eye(q)


@pytest.mark.parametrize("q,batch", [(2, (7,)), (3, (2, 3)), (5, (4,)), (MAX_UNROLLED + 1, (2,))])
def test_values_equal_lapack(q, batch):
    rng = np.random.default_rng(q)
    a = _spd(rng, batch, q)
    b = rng.normal(size=batch + (q, 3))
    with precision(np.float64):
        L = batched_cholesky(jnp.asarray(a))
        np.testing.assert_allclose(L, np.linalg.cholesky(a), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(batched_solve_lower(L, jnp.asarray(b)),
                                   solve_triangular(L, b, lower=True), rtol=1e-11, atol=1e-12)


def _through(chol, solve, a0, b, w):
    """A scalar of a symmetric positive definite a(x) = a0 + sym(x) through factor and solve."""
    def f(x):
        a = a0 + 0.5 * (x + jnp.swapaxes(x, -1, -2))
        L = chol(a)
        return jnp.sum(w * solve(L, b)) + jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)))
    return f


@pytest.mark.slow  # ~5 s a case: both implementations differentiated twice, op by op
@pytest.mark.parametrize("q", [2, 4])
def test_derivatives_equal_lapack_and_finite_differences(q):
    rng = np.random.default_rng(10 + q)
    a0 = _spd(rng, (3,), q)
    b = rng.normal(size=(3, q, 2))
    w = rng.normal(size=(3, q, 2))
    x = 0.1 * rng.normal(size=(3, q, q))
    with precision(np.float64):
        ours = _through(batched_cholesky, batched_solve_lower, a0, b, w)
        ref = _through(jnp.linalg.cholesky, lambda L, r: solve_triangular(L, r, lower=True),
                       a0, b, w)
        g, g_ref = jax.grad(ours)(x), jax.grad(ref)(x)
        np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)
        v = rng.normal(size=x.shape)
        h = jax.jvp(jax.grad(ours), (x,), (v,))[1]
        h_ref = jax.jvp(jax.grad(ref), (x,), (v,))[1]
        np.testing.assert_allclose(h, h_ref, rtol=1e-9, atol=1e-11)
        eps = 1e-6
        fd = (ours(x + eps * v) - ours(x - eps * v)) / (2 * eps)
        np.testing.assert_allclose(jnp.sum(g * v), fd, rtol=1e-7)


def test_second_derivative_program_has_no_lapack_call():
    """The reason for the module: jaxlib's batched LAPACK kernels can deadlock when XLA runs
    two at once (docs/architecture.md); the Hessian of a function of the factor and the solve
    holds none."""
    rng = np.random.default_rng(0)
    a0 = _spd(rng, (40,), 4)
    b = rng.normal(size=(40, 4, 4))
    w = rng.normal(size=(40, 4, 4))
    with precision(np.float64):
        f = _through(batched_cholesky, batched_solve_lower, a0, b, w)
        x = jnp.zeros((40, 4, 4))
        hlo = jax.jit(lambda x: jax.jacfwd(jax.grad(f))(x)).lower(x).as_text()
    assert not re.search(r"lapack_\w+", hlo)
