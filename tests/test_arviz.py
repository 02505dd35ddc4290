"""ArviZ export: draws from each fit's approximation, coordinates, log-likelihood, errors."""

import copy
import sys
import warnings

import numpy as np
import pytest
import scipy.stats

from bayesglmm import BinomialBayesMixedGLM, PoissonBayesMixedGLM, datasets, mixedlm
from bayesglmm import arviz as bz
from bayesglmm.posterior_draws import Draws, linear_predictor, pointwise_loglik

az = pytest.importorskip("arviz")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


@pytest.fixture(scope="module")
def cbpp_model():
    df = datasets.load("cbpp")
    return BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"herd": "0 + C(herd)"}, df,
                                              n_trials="size")


@pytest.fixture(scope="module")
def fits(cbpp_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"map": cbpp_model.fit_map(), "vb": cbpp_model.fit_vb(rng=0),
                "laplace": cbpp_model.fit_laplace(priors=True),
                "laplace-integrated": cbpp_model.fit_laplace(priors=True, integrate=True)}


@pytest.mark.parametrize("kind", ["map", "vb", "laplace", "laplace-integrated"])
def test_draws_match_the_fit_moments(fits, kind):
    r = fits[kind]
    idata = r.to_inference_data(draws=4000, rng=1)
    post = idata.posterior
    assert post["fe"].shape == (4, 1000, 4)
    fe = post["fe"].to_numpy().reshape(-1, 4)
    se = r.fe_sd / np.sqrt(len(fe))
    np.testing.assert_array_less(np.abs(fe.mean(0) - r.fe_mean), 5 * se)
    np.testing.assert_allclose(fe.std(0), r.fe_sd, rtol=0.08)
    re = post["re_herd"].to_numpy().reshape(-1, 15)
    np.testing.assert_allclose(re.std(0), r.vc_sd, rtol=0.08)
    np.testing.assert_allclose(np.log(post["sd"].to_numpy()), post["log_sd"].to_numpy())
    assert idata.posterior.attrs["fit_method"] == kind
    assert "conditional on each draw's random effects" in idata.log_likelihood.attrs["log_likelihood"]


def test_map_draws_keep_the_joint_covariance(fits):
    r = fits["map"]
    cov = r.cov_params().to_numpy()  # full (fe, vcp, vc) covariance
    idata = r.to_inference_data(draws=4000, rng=2)
    p = idata.posterior
    x = np.concatenate([p["fe"].to_numpy().reshape(-1, 4), p["log_sd"].to_numpy().reshape(-1, 1),
                        p["re_herd"].to_numpy().reshape(-1, 15)], axis=1)
    corr = lambda c: c / np.sqrt(np.outer(np.diag(c), np.diag(c)))  # noqa: E731
    np.testing.assert_allclose(corr(np.cov(x.T)), corr(cov), atol=0.06)
    assert "joint posterior mode" in p.attrs["approximation"]


def test_coords_groups_and_reproducibility(fits, cbpp_model):
    r = fits["vb"]
    idata = bz.to_inference_data(r, draws=200, rng=3, chains=2, posterior_predictive=True)
    assert set(idata.groups()) == {"posterior", "posterior_predictive", "log_likelihood",
                                   "observed_data", "constant_data"}
    assert list(idata.posterior["fe_param"].values) == list(cbpp_model.fep_names)
    assert sorted(idata.posterior["herd_level"].values, key=int) == [str(i) for i in range(1, 16)]
    np.testing.assert_array_equal(idata.observed_data["incidence"], cbpp_model.endog)
    np.testing.assert_array_equal(idata.constant_data["n_trials"], cbpp_model.n_trials)
    rep = idata.posterior_predictive["incidence"].to_numpy()
    assert rep.shape == (2, 100, 56)
    assert np.all((rep >= 0) & (rep <= cbpp_model.n_trials))
    # the replicated incidence follows the fitted rate (total 99 cases observed)
    assert 60 < rep.sum(-1).mean() < 140
    again = bz.to_inference_data(r, draws=200, rng=3, chains=2)
    np.testing.assert_array_equal(again.posterior["fe"], idata.posterior["fe"])


def test_summary_loo_compare_and_forest_run(fits):
    ids = {k: fits[k].to_inference_data(draws=400, rng=4) for k in ("map", "laplace")}
    s = az.summary(ids["map"], var_names=["fe", "sd"])
    assert list(s.index[:2]) == ["fe[Intercept]", "fe[C(period)[T.2]]"]
    assert np.all(np.abs(s["r_hat"] - 1) < 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k warnings: rows leave out with their herd's draws
        loo = az.loo(ids["map"], pointwise=True)
        cmp = az.compare(ids)
    assert loo.n_data_points == 56 and np.isfinite(loo.elpd_loo)
    assert -150 < loo.elpd_loo < -80
    assert set(cmp.index) == {"map", "laplace"}
    axes = az.plot_forest(ids["map"], var_names=["fe"])
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert any("Intercept" in t for t in labels)
    matplotlib.pyplot.close("all")


def test_pointwise_loglik_matches_scipy(cbpp_model, fits):
    r = fits["map"]
    d = Draws(r.fe_mean[None], r.vcp_mean[None], r.vc_mean[None])
    eta = linear_predictor(cbpp_model, d)
    np.testing.assert_allclose(eta[0], r.predict(linear=True, include_random=True), rtol=1e-12)
    ll = pointwise_loglik(cbpp_model, eta)[0]
    ref = scipy.stats.binom.logpmf(cbpp_model.endog, cbpp_model.n_trials,
                                   scipy.special.expit(eta[0]))
    np.testing.assert_allclose(ll, ref, rtol=1e-10)


def test_poisson_two_factors_names_and_loglik():
    g = datasets.load("grouseticks")
    m = PoissonBayesMixedGLM.from_formula("TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION)", {}, g)
    groups = bz._re_groups(m)
    assert [(v, dim) for v, dim, _, _ in groups] == [("re_BROOD", "BROOD_level"),
                                                     ("re_LOCATION", "LOCATION_level")]
    assert len(groups[0][3]) == g["BROOD"].nunique() and groups[0][3][0] == "501"
    rng = np.random.default_rng(0)
    d = Draws(rng.normal(size=(2, m.k_fep)), np.zeros((2, 2)), rng.normal(size=(2, m.k_vc)))
    eta = linear_predictor(m, d)
    # η = Xβ + b_BROOD[row's brood] + b_LOCATION[row's location], columns found by their labels
    re = np.zeros(len(g))
    for fac, (_, _, cols, labels) in zip(["BROOD", "LOCATION"], groups):
        col = dict(zip(labels, cols))
        re += d.vc[1, [col[v] for v in g[fac]]]
    np.testing.assert_allclose(eta[1], m.exog @ d.fe[1] + re, atol=1e-12)
    ref = scipy.stats.poisson.logpmf(m.endog, np.exp(eta))
    np.testing.assert_allclose(pointwise_loglik(m, eta), ref, rtol=1e-10)


def test_random_effects_opt_in_above_the_threshold(fits, monkeypatch):
    monkeypatch.setattr(bz, "RE_MAX_LEVELS", 10)  # cbpp has 15 herds
    idata = fits["vb"].to_inference_data(draws=40, rng=0)
    assert not [v for v in idata.posterior.data_vars if v.startswith("re_")]
    assert idata.posterior.attrs["random_effects_stored"] == "False"
    assert "log_likelihood" in idata.groups()  # drawn all the same
    idata = fits["vb"].to_inference_data(draws=40, rng=0, random_effects=True)
    assert "re_herd" in idata.posterior


def test_ml_fits_have_no_posterior(fits):
    ml = copy.copy(fits["laplace"])  # a fit_laplace(priors=False) result, but for its numbers
    ml.priors = False
    with pytest.raises(ValueError, match=r"priors=True"):
        ml.to_inference_data()
    lmm = mixedlm("Yield ~ 1", datasets.load("dyestuff"), groups="Batch").fit()
    with pytest.raises(ValueError, match="no posterior"):
        lmm.to_inference_data()


def test_bad_arguments_and_missing_extra(fits, monkeypatch):
    with pytest.raises(ValueError, match="multiple of chains"):
        fits["vb"].to_inference_data(draws=10, chains=4)
    with pytest.raises(TypeError, match="BayesMixedGLMResults"):
        bz.to_inference_data(object())
    monkeypatch.setitem(sys.modules, "arviz", None)  # import arviz now fails
    with pytest.raises(ImportError, match=r"bayesglmm\[arviz\]"):
        fits["vb"].to_inference_data(draws=8)
