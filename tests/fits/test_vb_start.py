"""fit_vb's start under statsmodels' quadrature rule (the default).

statsmodels' start (fe sd = e^−0.5) with a large-scale covariate makes Var_q(η) ∝ x² huge.
Under the 20-node Gauss–Hermite rule E_q[exp(η)] then overflows and the fit falls back to
fixed-effect SDs scaled by the column's RMS; under the 10-node statsmodels rule (nodes in
[−5, 5]) it stays finite but absurd (−ELBO ≈ 1e87 on grouseticks), so the fallback was
skipped, the mean-field SD start put log-SDs near −100 and the fit stopped there at fe = 0 —
reported as converged for some seeds.  The solver now takes the shifted start wherever it is
lower (solvers.newton, ``_INIT``) and never counts a non-descent direction as convergence.
"""

import warnings

import numpy as np
import pytest
from scipy import sparse

import bayesglmm as bg
from bayesglmm import datasets


def _large_scale_poisson(seed=0, n_groups=100, per=5):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    x = rng.normal(scale=30.0, size=g.size)  # RMS ≈ 30, like grouseticks' cHEIGHT
    eta = 0.5 - 0.02 * x + rng.normal(scale=0.5, size=n_groups)[g]
    y = rng.poisson(np.exp(eta)).astype(float)
    X = np.column_stack([np.ones_like(x), x])
    Z = sparse.csr_array((g[:, None] == np.arange(n_groups)).astype(float))
    return y, X, Z, np.zeros(n_groups, int)


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
def test_large_scale_covariate_statsmodels_rule_converges():
    """500 rows, 100 levels (the structured Newton path): before the fix fe stayed at 0 with
    SDs of 1e−70 — "converged" from seed 0, a line-search failure from seeds 1 and 2."""
    y, X, Z, ident = _large_scale_poisson()
    sm = bg.PoissonBayesMixedGLM(y, X, Z, ident)  # vb_rule="statsmodels"
    gh = bg.PoissonBayesMixedGLM(y, X, Z, ident, vb_rule="gh20")
    with warnings.catch_warnings():
        warnings.simplefilter("error", bg.ConvergenceWarning)
        r_gh = gh.fit_vb(rng=0)
        for seed in (0, 1, 2):
            r = sm.fit_vb(rng=seed)
            assert r.optim_retvals.success
            assert np.all(np.abs(r.fe_mean) > 1e-3)  # it moved from fe = 0
            assert np.all(r.fe_sd > 1e-4)  # and no SD collapsed to e^−100
            # the two rules' optima differ by quadrature error only
            np.testing.assert_allclose(r.fe_mean, r_gh.fe_mean, atol=0.02)
            np.testing.assert_allclose(r.vcp_mean, r_gh.vcp_mean, atol=0.05)


def test_a_fit_stuck_at_a_degenerate_start_is_not_converged():
    """A user's sd start (no fallback shift then) where the statsmodels rule's ELBO is finite
    but absurd: the fit either reaches the optimum or warns — never "success" at fe = 0."""
    y, X, Z, ident = _large_scale_poisson()
    model = bg.PoissonBayesMixedGLM(y, X, Z, ident)
    p = model.k_fep + model.k_vcp + model.k_vc
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", bg.ConvergenceWarning)
        r = model.fit_vb(sd=np.full(p, np.exp(-0.5)))
    stuck = np.all(r.fe_mean == 0) or np.any(r.fe_sd < 1e-10)
    if r.optim_retvals.success:
        assert not stuck
        assert not any(issubclass(x.category, bg.ConvergenceWarning) for x in w)
    else:
        assert any(issubclass(x.category, bg.ConvergenceWarning) for x in w)


@pytest.mark.slow
def test_grouseticks_statsmodels_rule_from_the_default_start():
    """grouseticks (403 rows, three random intercepts, cHEIGHT's RMS 36): every seed reaches
    the statsmodels-rule optimum (ELBO 4326.60), near the gh20 one."""
    df = datasets.load("grouseticks")
    vcf = {"BROOD": "0 + C(BROOD)", "INDEX": "0 + C(INDEX)", "LOCATION": "0 + C(LOCATION)"}
    model = bg.PoissonBayesMixedGLM.from_formula("TICKS ~ YEAR + cHEIGHT", vcf, df)
    fits = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", bg.ConvergenceWarning)
        for seed in (0, 1, 2):
            r = model.fit_vb(rng=seed)
            assert r.optim_retvals.success
            assert -r.optim_retvals.fun == pytest.approx(4326.6037, abs=1e-3)
            fits.append(r)
    for r in fits[1:]:
        np.testing.assert_allclose(r.params, fits[0].params, atol=1e-6)
    np.testing.assert_allclose(fits[0].fe_mean, [0.4434, 1.1275, -0.9809, -0.0238], atol=1e-3)
    np.testing.assert_allclose(fits[0].vcp_mean, [-0.1215, -0.8857, -3.1826], atol=1e-3)
