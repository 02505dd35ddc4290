"""The likelihood families: the negative binomial (NB2) against scipy, its derivatives against
finite differences, its expected log-likelihood against a brute-force quadrature, its Poisson
limit, and float32; the Poisson and binomial numbers unchanged by the dispersion argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import gammaln
from scipy.stats import nbinom

from bayesglmm._precision import precision
from bayesglmm.families import (STIRLING_MIN, Binomial, NegativeBinomial, Poisson,
                                lgamma_ratio)
from bayesglmm.quadrature import gauss_hermite

NB = NegativeBinomial()
Y = np.arange(0.0, 101.0)  # counts 0..100


def _nb_loglik(y, eta, log_theta, dtype=np.float64):
    """Our log p(y) with the constant −log y! added back, numpy float64."""
    with precision(dtype):
        ll = NB.loglik(jnp.asarray(y, dtype), jnp.asarray(eta, dtype), 1.0, 1.0,
                       jnp.asarray([log_theta], dtype))
        return np.asarray(ll, np.float64) - gammaln(y + 1)


@pytest.mark.parametrize("theta", [0.05, 0.7, 3.0, STIRLING_MIN * (1 - 1e-12), STIRLING_MIN,
                                   50.0, 1e3])
@pytest.mark.parametrize("eta", [-4.0, -0.5, 0.0, 1.3, 5.0])
def test_nb_loglik_matches_scipy(theta, eta):
    """log p(y) = scipy's nbinom.logpmf(y, n = θ, p = θ/(θ + μ)) on a grid of counts, on both
    sides of the switch to Stirling's series at θ = STIRLING_MIN."""
    mu = np.exp(eta)
    ref = nbinom.logpmf(Y, theta, theta / (theta + mu))
    got = _nb_loglik(Y, np.full_like(Y, eta), np.log(theta))
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-10)


def test_lgamma_ratio_is_continuous_and_accurate():
    """D(y, θ) = lgamma(y + θ) − lgamma(θ) − y·log θ: Stirling's branch (θ ≥ 10) against
    scipy's gammaln difference where that is accurate (θ ≤ 1e3), continuous at the switch,
    and → y(y − 1)/(2θ) as θ → ∞ (where the gammaln difference has lost every digit)."""
    y = np.arange(0.0, 60.0)
    with precision(np.float64):
        for th in [10.0, 17.5, 123.0, 1e3]:
            ref = gammaln(y + th) - gammaln(th) - y * np.log(th)
            got = np.asarray(lgamma_ratio(jnp.asarray(y), jnp.asarray(th)))
            np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)
        lo = np.asarray(lgamma_ratio(jnp.asarray(y), jnp.asarray(STIRLING_MIN * (1 - 1e-15))))
        hi = np.asarray(lgamma_ratio(jnp.asarray(y), jnp.asarray(STIRLING_MIN)))
        np.testing.assert_allclose(lo, hi, rtol=1e-12, atol=1e-12)
        big = 1e9
        got = np.asarray(lgamma_ratio(jnp.asarray(y), jnp.asarray(big)))
        np.testing.assert_allclose(got, y * (y - 1) / (2 * big), rtol=1e-6, atol=1e-18)


@pytest.mark.parametrize("theta,tol", [(1e8, 2e-5), (1e12, 2e-9)])
def test_nb_tends_to_poisson(theta, tol):
    """As θ → ∞ the NB2 log-likelihood tends to the Poisson's (their difference is
    O((y − μ)²/θ)): no cancellation of terms of size θ·log θ."""
    y = np.arange(0.0, 40.0)
    eta = np.log(np.maximum(y, 0.5)) + 0.3
    with precision(np.float64):
        pois = np.asarray(Poisson().loglik(jnp.asarray(y), jnp.asarray(eta), 1.0, 1.0))
        nb = np.asarray(NB.loglik(jnp.asarray(y), jnp.asarray(eta), 1.0, 1.0,
                                  jnp.asarray([np.log(theta)])))
    np.testing.assert_allclose(nb, pois, rtol=0, atol=tol)


def _central(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_nb_derivatives_match_finite_differences():
    """∂/∂η, ∂²/∂η², ∂/∂log θ and ∂²/∂η∂log θ of loglik (autodiff, as the kernels take them)
    against central differences of the log-likelihood and of its autodiff slope."""
    with precision(np.float64):
        y = jnp.asarray([0.0, 1.0, 4.0, 17.0, 60.0])

        def f(eta, lt):
            return NB.loglik(y, eta, 1.0, 1.0, jnp.stack([lt]))

        def slope(eta, lt):  # ∂loglik_i/∂η_i
            return jax.jvp(lambda e: f(e, lt), (eta,), (jnp.ones_like(eta),))[1]

        @jax.jit
        def derivs(eta, lt):
            ones = jnp.ones_like(eta)
            return (slope(eta, lt), jax.jvp(lambda e: slope(e, lt), (eta,), (ones,))[1],
                    jax.jacfwd(lambda t: f(eta, t))(lt),
                    jax.jacfwd(lambda t: slope(eta, t))(lt))

        @jax.jit
        def diffs(eta, lt, h):
            return (_central(lambda e: f(e, lt), eta, h),
                    _central(lambda e: slope(e, lt), eta, h),
                    _central(lambda t: f(eta, t), lt, h),
                    _central(lambda t: slope(eta, t), lt, h))

        for eta0, lt0 in [(-1.0, -2.0), (0.4, 1.2), (3.0, 2.302585), (2.0, 5.0)]:
            eta, lt = jnp.full(y.shape, eta0), jnp.asarray(lt0)
            for got, ref in zip(derivs(eta, lt), diffs(eta, lt, 1e-5)):
                np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def _brute_expected(y, tm, tv, m_lt, v_lt, k=60):
    """E[loglik] by a k × k product Gauss–Hermite rule in numpy, from scipy's logpmf."""
    z, w = np.polynomial.hermite_e.hermegauss(k)
    w = w / np.sqrt(2 * np.pi)
    th = np.exp(m_lt + np.sqrt(v_lt) * z)[:, None, None]  # (k, 1, 1) over log θ
    mu = np.exp(tm + np.sqrt(tv) * z[:, None])[None]  # (1, k, n) over η
    ll = nbinom.logpmf(y, th, th / (th + mu)) + gammaln(y + 1)
    return np.einsum("a,b,abn->n", w, w, ll)


@pytest.mark.parametrize("m_lt,v_lt", [(1.2, 0.03), (-0.5, 0.3), (3.0, 1e-12)])
def test_nb_expected_loglik_matches_brute_force(m_lt, v_lt):
    """The ELBO's E[loglik] (10 Gauss–Hermite nodes over log θ, 20 over η) against a 60 × 60
    product rule; with no variance it is the log-likelihood at the means."""
    y = np.array([0.0, 0.0, 2.0, 5.0, 11.0, 30.0])
    tm = np.array([-1.0, 0.5, 0.8, 1.5, 2.0, 3.2])
    tv = np.array([0.05, 0.4, 0.1, 0.8, 0.2, 0.3])
    rule = gauss_hermite(20)
    with precision(np.float64):
        expected = jax.jit(lambda *a: NB.expected_loglik(a[0], a[1], a[2], 1.0, 1.0, rule,
                                                         a[3], a[4]))
        got = np.asarray(expected(jnp.asarray(y), jnp.asarray(tm), jnp.asarray(tv),
                                  jnp.asarray([m_lt]), jnp.asarray([v_lt])))
        at_mean = np.asarray(expected(jnp.asarray(y), jnp.asarray(tm), jnp.zeros(6),
                                      jnp.asarray([m_lt]), jnp.asarray([0.0])))
        ll = np.asarray(NB.loglik(jnp.asarray(y), jnp.asarray(tm), 1.0, 1.0,
                                  jnp.asarray([m_lt])))
    np.testing.assert_allclose(got, _brute_expected(y, tm, tv, m_lt, v_lt), rtol=1e-7,
                               atol=1e-7)
    np.testing.assert_allclose(at_mean, ll, rtol=1e-12, atol=1e-12)


def test_nb_expected_loglik_gradient_matches_finite_differences():
    """Gradients of Σ E[loglik] in (tm, tv, mean and variance of log θ) by autodiff against
    central differences."""
    rule = gauss_hermite(20)
    with precision(np.float64):
        y = jnp.asarray([0.0, 3.0, 9.0])

        @jax.jit
        def f(x):
            tm, tv, d = x[:3], x[3:6], x[6:]
            return jnp.sum(NB.expected_loglik(y, tm, tv, 1.0, 1.0, rule, d[:1], d[1:]))

        x0 = jnp.asarray([0.2, 1.0, 2.1, 0.3, 0.1, 0.5, 0.9, 0.2])
        g = np.asarray(jax.grad(f)(x0))
        fd = np.array([_central(lambda t, i=i: f(x0.at[i].add(t)), 0.0, 1e-6)
                       for i in range(8)])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


def test_nb_float32():
    """In float32 the log-likelihood agrees with float64 to single-precision rounding, at
    small and large θ."""
    eta = np.linspace(-2, 4, Y.size)
    for lt in [-1.0, 1.19, 8.0, 20.0]:
        np.testing.assert_allclose(_nb_loglik(Y, eta, lt, np.float32), _nb_loglik(Y, eta, lt),
                                   rtol=2e-6, atol=2e-4)


def test_nb_constant_check_and_mean():
    y = np.array([0.0, 2.0, 7.0])
    w = np.array([1.0, 2.0, 0.5])
    assert NB.constant(y, 1.0, w) == pytest.approx(-np.sum(w * gammaln(y + 1)), rel=1e-15)
    with pytest.raises(ValueError, match="endog"):
        NB.check_endog(np.array([0.0, -1.0]), None)
    with pytest.raises(ValueError, match="endog"):
        NB.check_endog(np.array([0.5, 1.0]), None)
    with precision(np.float64):
        assert float(NB.mean(jnp.asarray(0.7))) == pytest.approx(np.exp(0.7))
        assert float(NB.variance(jnp.asarray(2.0), jnp.asarray([np.log(4.0)]))) == 3.0
    assert (NB.n_disp, Poisson.n_disp, Binomial.n_disp) == (1, 0, 0)
    with pytest.raises(ValueError, match="needs its dispersion"):
        NB.loglik(y, y, 1.0, 1.0)


def test_dispersion_argument_leaves_other_families_alone():
    """Binomial and Poisson accept and ignore ``disp``: the same numbers."""
    y, eta = jnp.asarray([0.0, 1.0, 3.0]), jnp.asarray([-0.3, 0.2, 1.1])
    with precision(np.float64):
        for fam in (Binomial(), Poisson()):
            a = fam.loglik(jnp.minimum(y, 1.0), eta, 1.0, 1.0)
            b = fam.loglik(jnp.minimum(y, 1.0), eta, 1.0, 1.0, None)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_host_lgamma_matches_scipy():
    """The log-likelihood constants' log Γ: a math.lgamma table for integers, else scipy."""
    from scipy.special import gammaln

    from bayesglmm.families import _lgamma

    for x in [np.arange(1.0, 500.0), np.array([3.0, 1.0, 7.0, 1.0]), np.array([0.5, 2.0]),
              np.array(4.0), np.arange(1.0, 70_000.0, 7.0), np.zeros(0)]:
        got = _lgamma(x)
        assert got.shape == x.shape
        np.testing.assert_allclose(got, gammaln(x), rtol=1e-14, atol=1e-14)


def test_links_as_statsmodels():
    """``family.link`` with statsmodels' methods, against statsmodels' own links."""
    links = pytest.importorskip("statsmodels.genmod.families.links")
    from bayesglmm.families import Binomial, NegativeBinomial, Poisson

    eta = np.linspace(-30, 30, 13)
    mu = np.linspace(0.01, 0.99, 7)
    for ours, ref in ((Binomial().link, links.Logit()), (Poisson().link, links.Log()),
                      (NegativeBinomial().link, links.Log())):
        np.testing.assert_allclose(ours.inverse(eta), ref.inverse(eta), rtol=1e-12)
        np.testing.assert_allclose(ours(mu), ref(mu), rtol=1e-12)
        np.testing.assert_allclose(ours.deriv(mu), ref.deriv(mu), rtol=1e-12)
        np.testing.assert_allclose(ours.inverse_deriv(eta), ref.inverse_deriv(eta), rtol=1e-10,
                                   atol=1e-300)
