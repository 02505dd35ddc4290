"""The host BFGS: minima of known functions, its stopping rules, and its status codes."""

import numpy as np
import pytest

from bayesglmm.solvers.bfgs_host import bfgs_host


def _rosenbrock(x):
    a, b = x
    f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    g = np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])
    return f, g


def _counted(fg):
    calls = [0]

    def wrapped(x):
        calls[0] += 1
        return fg(x)

    return wrapped, calls


def test_rosenbrock_to_gtol():
    fg, calls = _counted(_rosenbrock)
    r = bfgs_host(fg, np.array([-1.2, 1.0]), gtol=1e-9, ftol=0.0)
    assert r.status == 0
    np.testing.assert_allclose(r.x, [1.0, 1.0], atol=1e-7)
    assert np.max(np.abs(r.g)) <= 1e-9
    assert r.n_fev == calls[0]  # every evaluation counted, the start's included
    assert 10 < r.n_iter < 200


def test_ill_conditioned_quadratic_matches_solve():
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    A = (Q * np.logspace(-3, 3, 30)) @ Q.T
    b = rng.normal(size=30)
    # gtol 1e-7, two orders above the gradient's rounding (|A||x| eps ~ 8e-11 here): at 1e-10
    # another BLAS's rounding (numpy 2.5 on an H100 host) stalled the line search at ~1e-8
    r = bfgs_host(lambda x: (0.5 * x @ A @ x - b @ x, A @ x - b), np.zeros(30), gtol=1e-7,
                  ftol=0.0, maxiter=2000)
    assert r.status == 0 and np.max(np.abs(r.g)) <= 1e-7
    x = np.linalg.solve(A, b)
    assert np.linalg.norm(r.x - x) <= 1e-5 * np.linalg.norm(x)  # |A^-1 g| <= 1e3 |g|


def test_line_search_failure_at_rounding_counts_as_converged():
    """In float32 the gradient's rounding stops the line search before a tight gtol: converged
    when the quasi-Newton decrement is within ftol, a failure otherwise."""
    A = np.array([[3.0, 1.0], [1.0, 2.0]], np.float32)

    def fg(x):
        x = x.astype(np.float32)
        return (float(np.float32(0.5) * x @ A @ x - x.sum() + np.float32(100)),
                A @ x - 1 + np.float32(1e-4))  # a gradient slightly off f's

    r = bfgs_host(fg, np.zeros(2), gtol=1e-30, ftol=1e-7)
    assert r.status == 0
    np.testing.assert_allclose(r.x, [0.2, 0.4], atol=1e-3)
    assert r.n_iter < 50
    assert bfgs_host(fg, np.zeros(2), gtol=1e-30, ftol=0.0).status == 2


def test_given_start_value_is_used():
    x0 = np.array([-1.2, 1.0])
    fg, calls = _counted(_rosenbrock)
    r = bfgs_host(fg, x0, f0=_rosenbrock(x0), gtol=1e-8)
    assert r.status == 0 and r.n_fev == calls[0]


@pytest.mark.parametrize("maxiter", [0, 1, 3])
def test_maxiter(maxiter):
    r = bfgs_host(_rosenbrock, np.array([-1.2, 1.0]), gtol=1e-12, ftol=0.0, maxiter=maxiter)
    assert r.status == 1 and r.n_iter == maxiter


def test_non_finite_start_and_gradient():
    r = bfgs_host(lambda x: (np.nan, np.zeros(2)), np.ones(2))
    assert r.status == 3 and r.n_iter == 0

    def blows_up(x):  # finite value, gradient NaN away from the start
        return float(x @ x), (2 * x if np.all(x == 1.0) else np.full(2, np.nan))

    assert bfgs_host(blows_up, np.ones(2)).status == 3


def test_line_search_failure():
    """A gradient that points the wrong way: no step decreases f."""
    r = bfgs_host(lambda x: (float(x @ x), -2 * x), np.ones(2), max_ls=5)
    assert r.status == 2
    np.testing.assert_array_equal(r.x, np.ones(2))
