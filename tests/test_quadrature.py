"""Accuracy of the quadrature rules for the logistic ELBO term E[log(1 + exp(m + s·z))]."""

import numpy as np
import pytest
from scipy.integrate import fixed_quad, quad

from bayesglmm.quadrature import gauss_hermite, get_rule, statsmodels_rule


def _exact(m, s):
    f = lambda z: np.logaddexp(0, m + s * z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    return quad(f, -40, 40, epsabs=1e-14, epsrel=1e-13, limit=200)[0]


def _rule(rule, m, s):
    return sum(w * np.logaddexp(0, m + s * x) for x, w in zip(rule.nodes, rule.weights))


@pytest.mark.parametrize("s,tol", [(0.3, 1e-13), (1.0, 1e-10), (2.0, 5e-6), (3.0, 2e-4)])
def test_gauss_hermite_20_accuracy(s, tol):
    """Documented accuracy of the default rule (docs/index.md)."""
    rule = gauss_hermite(20)
    err = max(abs(_rule(rule, m, s) - _exact(m, s)) for m in np.linspace(-10, 10, 21))
    assert err < tol


# statsmodels/genmod/bayes_mixed_glm.py ``glw``: (weight, node) pairs of 10-point Gauss–Legendre
# on [−1, 1] (positive nodes; the rule is symmetric), used with ``rng = 5``.
SM_GLW = [(0.2955242247147529, 0.1488743389816312), (0.2692667193099963, 0.4333953941292472),
          (0.2190863625159820, 0.6794095682990244), (0.1494513491505806, 0.8650633666889845),
          (0.0666713443086881, 0.9739065285171717)]


def _phi(z):
    return np.exp(-z * z / 2) / np.sqrt(2 * np.pi)


def test_statsmodels_rule_is_statsmodels():
    """statsmodels' E[h(z)] = ∫_{−5}^{5} h(z) φ(z) dz by 10-point Gauss–Legendre: the nodes are
    statsmodels' table scaled by 5, and Σ w_i h(x_i) equals scipy's own Gauss–Legendre
    (``fixed_quad``) of h·φ on [−5, 5] to rounding."""
    r = statsmodels_rule()
    half = 5 * np.array([x for _, x in SM_GLW])
    np.testing.assert_allclose(np.sort(r.nodes), np.sort(np.r_[-half, half]), rtol=1e-15)
    for h in [np.ones_like, np.square, lambda z: z**4, lambda z: np.logaddexp(0, 1 + 2 * z)]:
        ref = fixed_quad(lambda z, h=h: h(z) * _phi(z), -5, 5, n=10)[0]
        assert _rule_h(r, h) == pytest.approx(ref, rel=1e-13)


def test_statsmodels_rule_is_coarse():
    """Against the adaptive integral of h·φ over the whole line, statsmodels' rule is accurate
    only to ~1e-3 (measured: E[1] − 8.7e-4, E[z²] + 9.8e-3, softplus(1 + 2z) + 5.7e-3), which is
    why gauss_hermite(20) is the default."""
    r = statsmodels_rule()
    for h, tol in [(np.ones_like, 1e-3), (np.square, 1.2e-2),
                   (lambda z: np.logaddexp(0, 1 + 2 * z), 7e-3)]:
        exact = quad(lambda z, h=h: h(z) * _phi(z), -np.inf, np.inf, epsabs=1e-14)[0]
        assert 1e-4 < abs(_rule_h(r, h) - exact) < tol


@pytest.mark.parametrize("k", [2, 5, 20])
def test_gauss_hermite_normal_moments(k):
    """A k-node rule integrates polynomials of degree ≤ 2k − 1 exactly: E[z^j] = (j − 1)!! for
    even j, 0 for odd j."""
    r = gauss_hermite(k)
    for j in range(2 * k):
        even = np.prod(np.arange(j - 1 + j % 2, 0, -2.0))  # E[z^j], or E[z^(j+1)] if j odd
        exact = 0.0 if j % 2 else even
        got = _rule_h(r, lambda z, j=j: z**j)
        assert abs(got - exact) <= 1e-12 * even, j  # odd j: cancellation relative to E|z|^j


def _rule_h(rule, h):
    return float(sum(w * h(np.float64(x)) for x, w in zip(rule.nodes, rule.weights)))


def test_rules_integrate_constants():
    assert sum(gauss_hermite(20).weights) == pytest.approx(1.0, abs=1e-14)
    assert get_rule("gh12").name == "gauss-hermite-12"
    with pytest.raises(ValueError, match="unknown quadrature"):
        get_rule("simpson")


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_softplus_moments_are_the_rule_applied_to_the_derivatives(dtype, tol):
    """``softplus_moments`` (one fused pass, σ and softplus from one exponential) against the
    rule applied node by node to softplus and its derivatives, taken by nested autodiff of
    ``jax.nn.softplus``; and its custom JVP against the Stein identities."""
    import jax
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.families import softplus_moments

    rule = gauss_hermite(20)
    m = np.array([-40.0, -8.0, -1.0, 0.0, 0.3, 2.0, 9.0, 35.0])
    v = np.array([0.0, 0.5, 2.0, 1.0, 0.01, 4.0, 0.2, 1.0])
    derivs = [jax.nn.softplus]
    for _ in range(4):
        derivs.append(jax.grad(derivs[-1]))
    ref = np.zeros((5, len(m)))
    with precision(np.float64):
        for x, w in zip(rule.nodes, rule.weights):
            pts = jnp.asarray(m + np.sqrt(v) * x)
            for k, h in enumerate(derivs):
                ref[k] += w * np.asarray(jax.vmap(h)(pts))
    with precision(dtype):
        got = np.asarray(softplus_moments(4, rule, jnp.asarray(m, dtype), jnp.asarray(v, dtype)))
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
        # ∂E[h]/∂m = E[h'], ∂E[h]/∂v = ½E[h'']
        mm, vv = jnp.asarray(m, dtype), jnp.asarray(v, dtype)
        _, dm = jax.jvp(lambda a: softplus_moments(1, rule, a, vv), (mm,), (jnp.ones_like(mm),))
        _, dv = jax.jvp(lambda b: softplus_moments(1, rule, mm, b), (vv,), (jnp.ones_like(vv),))
        np.testing.assert_allclose(np.asarray(dm), ref[1:3], rtol=tol, atol=tol)
        np.testing.assert_allclose(np.asarray(dv), 0.5 * ref[2:4], rtol=tol, atol=tol)
