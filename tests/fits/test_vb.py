"""fit_vb's two routes: the host BFGS (``"auto"`` on small problems) reaches the Newton optimum."""

import numpy as np
import pytest

import bayesglmm as bg
from bayesglmm import datasets
from bayesglmm.fits import map as fits_map
from tests.helpers import assert_reproduced


def _cbpp(dtype=np.float64):
    df = datasets.load("cbpp")
    return bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, n_trials="size", dtype=dtype)


def _large_scale_poisson(seed=0, n_groups=12, per=5):
    """A covariate on a large scale: statsmodels' start overflows, the shifted start is taken."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    x = rng.normal(scale=30.0, size=g.size)
    eta = 0.5 - 0.02 * x + rng.normal(scale=0.5, size=n_groups)[g]
    y = rng.poisson(np.exp(eta)).astype(float)
    X = np.column_stack([np.ones_like(x), x])
    Z = (g[:, None] == np.arange(n_groups)).astype(float)
    return bg.PoissonBayesMixedGLM(y, X, Z, np.zeros(n_groups, int))


@pytest.mark.parametrize("make", [_cbpp, _large_scale_poisson])
def test_host_bfgs_reaches_the_newton_optimum(make):
    model = make()
    p = model.k_fep + model.k_vcp + model.k_vc
    assert fits_map.use_dense(2 * p, model.exog.shape[0])  # "auto" takes the host route
    a = model.fit_vb(rng=0)
    b = model.fit_vb(rng=0, fit_method="newton")
    assert a.optim_retvals.success and b.optim_retvals.success
    assert a.optim_retvals.method == "auto"
    np.testing.assert_allclose(a.params, b.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.sqrt(a.cov_params()), np.sqrt(b.cov_params()), rtol=1e-6)
    assert abs(a.optim_retvals.fun - b.optim_retvals.fun) <= 1e-9 * abs(b.optim_retvals.fun)


def test_float32_keeps_newton():
    """float32's gradient rounding keeps a quasi-Newton ~1e-3 from the optimum: "auto" is
    Newton there (same fit as asking for it)."""
    a = _cbpp(np.float32).fit_vb(rng=0)
    b = _cbpp(np.float32).fit_vb(rng=0, fit_method="newton")
    ref = _cbpp().fit_vb(rng=0)
    assert a.optim_retvals.success
    assert_reproduced(a.params, b.params, np.float32)
    np.testing.assert_allclose(a.params, ref.params, atol=1e-4)


def test_maxiter_caps_the_host_iterations():
    model = _cbpp()
    with pytest.warns(bg.ConvergenceWarning, match="maximum number of iterations"):
        r = model.fit_vb(rng=0, minim_opts={"maxiter": 3})
    assert r.optim_retvals.nit == 3
