"""The backtracking line search: jitted and host forms agree with a plain loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesglmm._precision import precision
from bayesglmm.solvers.linesearch import armijo, backtrack, backtrack_host


def _plain(f, x, d, f0, slope, max_evals):
    """The textbook loop, written out."""
    t = 1.0
    for n in range(1, max_evals + 1):
        ft = f(x + t * d)
        if ft <= f0 + 1e-4 * t * slope:
            return t, ft, n, True
        if n < max_evals:
            t /= 2
    return t, ft, max_evals, False


def _f(x):
    return jnp.sum((x - 0.3) ** 2) + jnp.sum(x**4)


@pytest.mark.parametrize("x0", [[2.0, -1.0], [0.1, 0.2], [5.0, 3.0]])
@pytest.mark.parametrize("max_evals", [1, 3, 40])
def test_jit_and_host_match_plain_loop(x0, max_evals):
    with precision(np.float64):
        _check_against_plain(jnp.asarray(x0), max_evals)


def _check_against_plain(x, max_evals):
    g = jax.grad(_f)(x)
    d = -g
    f0, slope = _f(x), g @ d
    ref = _plain(lambda y: float(_f(y)), np.asarray(x), np.asarray(d), float(f0), float(slope),
                 max_evals)

    @jax.jit
    def run(x, d):
        return backtrack(lambda t: (_f(x + t * d), x + t * d), armijo(f0, slope), max_evals)

    t, ft, xt, n, ok = run(x, d)
    th, fh, xh, nh, okh = backtrack_host(lambda t: (_f(x + t * d), x + t * d),
                                         armijo(f0, slope), max_evals)
    for got in ((float(t), float(ft), int(n), bool(ok)), (th, float(fh), nh, okh)):
        assert got[0] == ref[0] and got[2] == ref[2] and got[3] == ref[3]
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-14)
    np.testing.assert_allclose(xt, x + t * d, rtol=1e-14)
    np.testing.assert_allclose(xh, x + th * d, rtol=1e-14)


def test_nan_is_never_accepted_and_one_evaluation_is_made():
    calls = []

    def phi(t):
        calls.append(t)
        return jnp.nan, None

    t, ft, _, n, ok = backtrack_host(phi, armijo(0.0, -1.0), max_evals=4)
    assert (n, ok, t) == (4, False, 0.125) and np.isnan(ft)
    _, _, _, n, ok = jax.jit(lambda m: backtrack(lambda t: (jnp.nan * t, ()),
                                                 armijo(0.0, -1.0), m))(0)
    assert int(n) == 1 and not bool(ok)


def test_float32_and_single_trace():
    traces = []

    def phi(t):
        traces.append(1)
        return jnp.sum(t * jnp.ones(3, jnp.float32)), ()

    t, ft, _, _, _ = jax.jit(lambda: backtrack(phi, lambda t, f, _: f < 0.5, 10))()
    assert t.dtype == jnp.float32 and ft.dtype == jnp.float32
    assert float(t) == 0.125
    # one abstract evaluation for the carry's shapes, one trace inside the loop
    assert len(traces) == 2
