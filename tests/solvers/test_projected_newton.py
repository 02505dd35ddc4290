"""The bound-constrained Newton solver against scipy's L-BFGS-B on plain functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from bayesglmm._precision import precision
from bayesglmm.solvers.projected_newton import ProjectedNewtonOptions, projected_newton


def _f(x):
    """Non-convex away from its minimum (a quartic valley), smooth everywhere."""
    return (jnp.sum((x - jnp.array([1.0, -2.0, 0.5])) ** 2) + 0.3 * jnp.sum(x**4)
            - jnp.sin(x[0] * x[1]))


def _solve(f, x0, lb, opts=ProjectedNewtonOptions()):
    def vgh(x, u):
        return f(x), jax.grad(f)(x), jax.hessian(f)(x), u + 1  # u counts evaluations

    def value(x, u):
        return f(x), u

    with precision(np.float64):
        return jax.jit(lambda x0, lb: projected_newton(vgh, value, x0, jnp.zeros(()), lb,
                                                       opts))(jnp.asarray(x0), jnp.asarray(lb))


@pytest.mark.parametrize("lb", [[-np.inf] * 3, [-np.inf, -1.0, 0.8]], ids=["free", "bounded"])
def test_matches_lbfgsb(lb):
    x0 = np.array([3.0, 2.0, 2.0])
    s = _solve(_f, x0, np.array(lb))
    with precision(np.float64):
        fg = jax.jit(jax.value_and_grad(_f))
        ref = optimize.minimize(lambda x: [np.asarray(v) for v in fg(jnp.asarray(x))], x0,
                                jac=True, method="L-BFGS-B",
                                bounds=[(lo, None) for lo in lb],
                                options={"gtol": 1e-12, "ftol": 1e-15})
    assert int(s.status) == 0
    np.testing.assert_allclose(s.x, ref.x, atol=1e-6)
    assert float(s.f) <= ref.fun + 1e-12
    assert np.all(np.asarray(s.x) >= np.array(lb))
    # the state holds f, g at the returned point; the carried u saw every (f, g, H) evaluation
    with precision(np.float64):
        np.testing.assert_allclose(s.f, _f(s.x), rtol=1e-14)
    assert int(s.u) == int(s.it)


def test_reports_maxiter_and_nonfinite():
    s = _solve(_f, np.array([3.0, 2.0, 2.0]), np.full(3, -np.inf),
               ProjectedNewtonOptions(maxiter=1))
    assert int(s.status) == 1 and int(s.it) == 2
    s = _solve(lambda x: jnp.sum(x**2) + jnp.log(x[0]), np.array([-1.0, 1.0]),
               np.full(2, -np.inf))
    assert int(s.status) == 3
