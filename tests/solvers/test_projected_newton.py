"""The bound-constrained Newton solver against scipy's L-BFGS-B on plain functions, in both
drivers: inside ``lax.while_loop`` and from the host over jitted evaluations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from bayesglmm._precision import precision
from bayesglmm.solvers.projected_newton import (ProjectedNewtonOptions, projected_newton,
                                                projected_newton_host)


def _f(x):
    """Non-convex away from its minimum (a quartic valley), smooth everywhere."""
    return (jnp.sum((x - jnp.array([1.0, -2.0, 0.5])) ** 2) + 0.3 * jnp.sum(x**4)
            - jnp.sin(x[0] * x[1]))


def _solve(f, x0, lb, opts=ProjectedNewtonOptions(), driver="jit"):
    """The solver's state; its u counts the evaluations of (f, g, H)."""
    with precision(np.float64):
        if driver == "jit":
            def vgh(x, u):
                return f(x), jax.grad(f)(x), jax.hessian(f)(x), u + 1

            def value(x, u):
                return f(x), u

            return jax.jit(lambda x0, lb: projected_newton(vgh, value, x0, jnp.zeros(()), lb,
                                                           opts))(jnp.asarray(x0),
                                                                  jnp.asarray(lb))
        fgh = jax.jit(lambda x: (f(x), jax.grad(f)(x), jax.hessian(f)(x)))
        fj = jax.jit(f)
        count = [0]

        def vgh(x, u):
            count[0] += 1
            return (*fgh(x), "aux")

        def value(x, u, aux, dx):  # aux from vgh at x − dx, None on the first call
            assert (aux is None) == (dx is None) and aux in (None, "aux")
            return fj(x), u

        s, aux = projected_newton_host(vgh, value, np.asarray(x0, np.float64), 0.0,
                                       np.asarray(lb, np.float64), opts)
        assert aux == "aux"
        return s._replace(u=np.asarray(count[0]))


@pytest.mark.parametrize("driver", ["jit", "host"])
@pytest.mark.parametrize("lb", [[-np.inf] * 3, [-np.inf, -1.0, 0.8]], ids=["free", "bounded"])
def test_matches_lbfgsb(lb, driver):
    x0 = np.array([3.0, 2.0, 2.0])
    s = _solve(_f, x0, np.array(lb), driver=driver)
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


def test_drivers_take_the_same_steps():
    x0, lb = np.array([3.0, 2.0, 2.0]), np.array([-np.inf, -1.0, 0.8])
    a, b = _solve(_f, x0, lb), _solve(_f, x0, lb, driver="host")
    assert int(a.it) == int(b.it) and int(a.status) == int(b.status) == 0
    np.testing.assert_allclose(a.x, b.x, rtol=1e-12)


@pytest.mark.parametrize("driver", ["jit", "host"])
def test_reports_maxiter_and_nonfinite(driver):
    s = _solve(_f, np.array([3.0, 2.0, 2.0]), np.full(3, -np.inf),
               ProjectedNewtonOptions(maxiter=1), driver=driver)
    assert int(s.status) == 1 and int(s.it) == 2
    s = _solve(lambda x: jnp.sum(x**2) + jnp.log(x[0]), np.array([-1.0, 1.0]),
               np.full(2, -np.inf), driver=driver)
    assert int(s.status) == 3
