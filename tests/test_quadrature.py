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
