"""Accuracy of the quadrature rules for the logistic ELBO term E[log(1 + exp(m + s·z))]."""

import numpy as np
import pytest
from scipy.integrate import quad

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


def test_statsmodels_rule_is_statsmodels():
    glw = [0.2955242247147529, 0.2692667193099963, 0.2190863625159820, 0.1494513491505806,
           0.0666713443086881]
    r = statsmodels_rule()
    x, w = np.polynomial.legendre.leggauss(10)
    np.testing.assert_allclose(np.sort(w)[::2][::-1], glw, rtol=1e-12)
    np.testing.assert_allclose(r.nodes, 5 * x)


def test_rules_integrate_constants():
    assert sum(gauss_hermite(20).weights) == pytest.approx(1.0, abs=1e-14)
    assert get_rule("gh12").name == "gauss-hermite-12"
    with pytest.raises(ValueError, match="unknown quadrature"):
        get_rule("simpson")


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
