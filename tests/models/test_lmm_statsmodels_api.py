"""MixedLM's statsmodels API: fit keywords, model attributes and methods, results, each
compared with statsmodels live where both have it."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

from bayesglmm import MixedLM, mixedlm
from bayesglmm.exceptions import ConvergenceWarning, IgnoredArgumentWarning
from bayesglmm.models.lmm_params import MixedLMParams

sm = pytest.importorskip("statsmodels.api")
from statsmodels.regression.mixed_linear_model import MixedLMParams as SMParams  # noqa: E402


def _sim(seed=0, n_groups=30, size=6, k_re=2):
    rs = np.random.RandomState(seed)
    n = n_groups * size
    groups = np.repeat(np.arange(n_groups), size)
    exog = np.column_stack([np.ones(n), rs.normal(size=n)])
    exog_re = np.column_stack([np.ones(n), rs.normal(size=n)])[:, :k_re]
    b = rs.normal(size=(n_groups, k_re)) * [1.0, 0.5][:k_re]
    y = exog @ [1.0, 0.5] + (exog_re * b[groups]).sum(1) + rs.normal(size=n)
    return y, exog, groups, exog_re


def _sm_fit(model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = model.fit(method="lbfgs", **kw)
        return model.fit(start_params=r.params_object, method="powell", maxiter=20000,
                         xtol=1e-12, ftol=1e-14, **kw)


@pytest.fixture(scope="module")
def pair():
    y, X, g, Z = _sim()
    ours = MixedLM(y, X, g, exog_re=Z).fit()
    ref = _sm_fit(sm.MixedLM(y, X, g, exog_re=Z))
    return ours, ref


# ---------------------------------------------------------------- fit keywords
@pytest.mark.parametrize("method", [["lbfgs"], ["bfgs", "lbfgs"], "cg", "powell", "nm", "newton"])
def test_statsmodels_method_names_reach_the_optimum(method, pair):
    ours, _ = pair
    res = ours.model.fit(method=method)
    np.testing.assert_allclose(res.llf, ours.llf, rtol=1e-10)


def test_fit_keywords_are_accepted_or_warn(pair):
    model = pair[0].model
    res = model.fit(gtol=1e-3, maxiter=500, full_output=True)
    assert res.hist and "theta" in res.hist[0]
    with pytest.warns(IgnoredArgumentWarning, match="Argument cov_type"):
        model.fit(cov_type="hc1")
    with pytest.warns(FutureWarning, match="Argument cov_type"):  # statsmodels' class too
        model.fit(cov_type="hc1")
    with pytest.warns(IgnoredArgumentWarning, match="niter_sa"):
        model.fit(niter_sa=3)
    with pytest.warns(IgnoredArgumentWarning, match="do_cg"):
        model.fit(do_cg=False)
    with pytest.warns(IgnoredArgumentWarning, match="Argument disp"):
        model.fit(disp=True)
    with pytest.raises(ValueError, match="method"):
        model.fit(method="simplex-dance")
    with pytest.warns(ConvergenceWarning, match="gtol"):
        model.fit(gtol=1e-30)


def test_free_diagonal_cov_re_matches_statsmodels():
    y, X, g, Z = _sim(1)
    free = SMParams.from_components(np.ones(2), cov_re=np.eye(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sm.MixedLM(y, X, g, exog_re=Z).fit(free=free)
    ours = MixedLM(y, X, g, exog_re=Z).fit(free=free)
    np.testing.assert_allclose(ours.fe_params, ref.fe_params, rtol=1e-5)
    np.testing.assert_allclose(ours.cov_re, ref.cov_re, rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(ours.llf, ref.llf, rtol=1e-6)
    assert len(ours.params) == len(ref.params)  # the covariance row, held at zero
    odd = SMParams.from_components(np.r_[0.0, 1.0], cov_re=np.ones((2, 2)))
    with pytest.warns(IgnoredArgumentWarning, match="free"):
        MixedLM(y, X, g, exog_re=Z).fit(free=odd)


@pytest.mark.parametrize("kind", ["theta", "with_fe", "ours", "statsmodels"])
def test_start_params_forms(kind, pair):
    ours = pair[0]
    model = ours.model
    start = {"theta": np.r_[1.0, 0.0, 1.0], "with_fe": np.r_[0.0, 0.0, 1.0, 0.0, 1.0],
             "ours": MixedLMParams.from_components(np.zeros(2), cov_re=np.eye(2)),
             "statsmodels": SMParams.from_components(np.zeros(2), cov_re=np.eye(2))}[kind]
    np.testing.assert_allclose(model.fit(start_params=start).llf, ours.llf, rtol=1e-10)
    with pytest.raises(ValueError, match="start_params"):
        model.fit(start_params=np.ones(7))


# ---------------------------------------------------------------- model
def test_model_attributes_match_statsmodels(dietox):
    ours = mixedlm("Weight ~ Time", dietox, groups="Pig", re_formula="~Time")
    ref = sm.MixedLM.from_formula("Weight ~ Time", dietox, groups="Pig", re_formula="~Time")
    assert ours.data.xnames == ref.data.xnames
    assert ours.data.exog_re_names == ref.data.exog_re_names
    assert ours.data.exog_re_names_full == ref.data.exog_re_names_full
    assert ours.data.param_names == ref.data.param_names
    assert ours.exog_names == ref.exog_names and ours.endog_names == ref.endog_names
    assert ours.group_labels == ref.group_labels and ours.n_groups == ref.n_groups
    assert ours.k_re == ref.k_re and ours.k_re2 == ref.k_re2 and ours.k_vc == ref.k_vc
    np.testing.assert_array_equal(ours.groups, ref.groups)
    np.testing.assert_allclose(ours.exog_re, ref.exog_re)
    g = ref.group_labels[3]
    np.testing.assert_array_equal(ours.row_indices[g], ref.row_indices[g])


def test_array_names_are_statsmodels():
    y, X, g, Z = _sim()
    ours, ref = MixedLM(y, X, g, exog_re=Z), sm.MixedLM(y, X, g, exog_re=Z)
    assert ours.data.xnames == ref.data.xnames
    assert ours.data.exog_re_names == ref.data.exog_re_names


@pytest.mark.slow  # compiles loglike, score and hessian per layout (~20-50 s each)
@pytest.mark.parametrize("use_sqrt", [True, False])
@pytest.mark.parametrize("reml", [True, False])
def test_loglike_score_hessian_match_statsmodels(use_sqrt, reml):
    y, X, g, Z = _sim(2)
    ours = MixedLM(y, X, g, exog_re=Z, use_sqrt=use_sqrt)
    ref = sm.MixedLM(y, X, g, exog_re=Z, use_sqrt=use_sqrt)
    ours.fit(reml=reml)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(reml=reml)
    p = SMParams.from_components(np.r_[0.9, 0.4], cov_re=np.array([[1.2, 0.3], [0.3, 0.6]]))
    for profile_fe in (True, False):
        np.testing.assert_allclose(ours.loglike(p, profile_fe), ref.loglike(p, profile_fe),
                                   rtol=1e-10)
        np.testing.assert_allclose(ours.score(p, profile_fe), ref.score(p, profile_fe),
                                   rtol=1e-6, atol=1e-8)
    h, sing = ours.hessian(p)
    # statsmodels' hessian is the observed information of its own derivation; compare the
    # exact autodiff Hessian with central differences of the autodiff score instead
    x = p.get_packed(use_sqrt=False, has_fe=True)
    e = 1e-6

    def score(v):
        return ours.score(SMParams.from_packed(v, 2, 2, use_sqrt, True), profile_fe=False)

    if not use_sqrt:  # the Hessian is over the use_sqrt=False layout
        fd = np.array([(score(x + e * u) - score(x - e * u)) / (2 * e) for u in np.eye(len(x))])
        np.testing.assert_allclose(h, fd, rtol=1e-5, atol=1e-6)
    assert not sing
    beta, _ = ours.get_fe_params(p.cov_re, p.vcomp)
    np.testing.assert_allclose(beta, ref.get_fe_params(p.cov_re, p.vcomp)[0], rtol=1e-10)


def test_dict_of_dicts_exog_vc_equals_arrays():
    y, X, g, Z = _sim(3)
    vc = {"a": {k: Z[g == k, 1:2] for k in np.unique(g)}}
    with pytest.warns(FutureWarning, match="Using deprecated variance"):
        m1 = MixedLM(y, X, g, exog_vc=vc)
    m2 = MixedLM(y, X, g, exog_vc={"a": Z[:, 1:2]})
    np.testing.assert_allclose(m1.fit().params, m2.fit().params, rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sm.MixedLM(y, X, g, exog_vc=vc).fit()
    np.testing.assert_allclose(m1.fit().vcomp, ref.vcomp, rtol=1e-3)


def test_missing_drop_and_subset(dietox):
    y, X, g, Z = _sim(4)
    y2 = y.copy()
    y2[5] = np.nan
    with pytest.warns(UserWarning, match="dropped"):
        m = MixedLM(y2, X, g, exog_re=Z, missing="drop")
    assert m.nobs == len(y) - 1
    keep = np.arange(len(y)) != 5
    np.testing.assert_allclose(m.fit().params,
                               MixedLM(y[keep], X[keep], g[keep], exog_re=Z[keep]).fit().params)
    sub = dietox["Time"] < 10
    a = mixedlm("Weight ~ Time", dietox, groups="Pig", subset=sub).fit()
    b = mixedlm("Weight ~ Time", dietox[sub], groups="Pig").fit()
    np.testing.assert_allclose(a.params, b.params)


def test_model_predict_and_distribution(pair):
    ours = pair[0]
    m = ours.model
    np.testing.assert_allclose(m.predict(ours.params), m.exog @ ours.fe_params)
    np.testing.assert_allclose(m.predict(ours.params_object, exog=m.exog[:3]),
                               m.exog[:3] @ ours.fe_params)
    pa = ours.params_object.get_packed(use_sqrt=False, has_fe=True)
    draws = np.array([m.get_distribution(pa, ours.scale).rvs(rng=k) for k in range(200)])
    v = ours.scale + np.mean((m.exog_re @ np.asarray(ours.cov_re) * m.exog_re).sum(1))
    np.testing.assert_allclose(np.var(draws - m.exog @ ours.fe_params), v, rtol=0.1)


# ---------------------------------------------------------------- results
def test_results_tables_match_statsmodels(pair):
    ours, ref = pair
    np.testing.assert_allclose(ours.params, ref.params, rtol=1e-4)
    np.testing.assert_allclose(ours.bse_re, ref.bse_re, rtol=1e-3)
    cov = ours.cov_params()
    assert cov.shape == (5, 5) and isinstance(cov, np.ndarray)  # array data: arrays out
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), ours.bse, rtol=1e-12)
    assert ours.tvalues.shape == ours.pvalues.shape == (5,) and ours.conf_int().shape == (5, 2)
    np.testing.assert_allclose(ours.cov_re_unscaled, ref.cov_re_unscaled, rtol=1e-3)
    for g in (0, 7):
        np.testing.assert_allclose(ours.random_effects_cov[g], ref.random_effects_cov[g],
                                   rtol=1e-3)
    np.testing.assert_allclose(ours.params_object.cov_re, ref.params_object.cov_re, rtol=1e-3)


def test_t_wald_f_tests(pair):
    ours, ref = pair
    tt, rt = ours.t_test(np.eye(2)), ref.t_test(np.eye(2))
    np.testing.assert_allclose(tt.effect, ours.fe_params)
    np.testing.assert_allclose(tt.sd, ours.bse_fe)
    np.testing.assert_allclose(tt.effect, rt.effect, rtol=1e-4)
    c = ours.t_test("x1 = 0.5")
    np.testing.assert_allclose(c.effect, ours.fe_params[1] - 0.5)
    with pytest.raises(ValueError, match="should have 2 columns"):
        ours.t_test(np.eye(3))
    w = ours.wald_test(np.eye(2))
    d = ours.fe_params
    stat = d @ np.linalg.solve(np.asarray(ours.cov_params())[:2, :2], d)
    np.testing.assert_allclose(w.statistic, stat)
    np.testing.assert_allclose(ours.f_test(np.eye(2)).fvalue, stat / 2)
    # statsmodels' Wald and F tests take R over all of params too (the variances included)
    # (statsmodels' covariance of the fixed effects is not lme4's (XᵀV⁻¹X)⁻¹, ours; see
    # docs/from_statsmodels.md: ~1% apart here)
    for R, rtol in ((np.eye(5)[:2], 2e-2), (np.eye(5)[[4]], 1e-2), (np.eye(5)[[2, 4]], 2e-2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = float(np.squeeze(ref.wald_test(R, scalar=True).statistic))
        d = R @ np.asarray(ours.params)
        stat = d @ np.linalg.solve(R @ np.asarray(ours.cov_params()) @ R.T, d)
        np.testing.assert_allclose(ours.wald_test(R).statistic, stat, rtol=1e-12)
        np.testing.assert_allclose(stat, want, rtol=rtol)
    with pytest.raises(ValueError, match="should have 2 columns or 5"):
        ours.wald_test(np.eye(3))


@pytest.mark.slow
def test_profile_re_peaks_at_the_estimate(pair):
    res = pair[0].model.fit(reml=False)
    prof = res.profile_re(0, "re", num_low=2, dist_low=0.2, num_high=2, dist_high=0.2)
    assert prof.shape == (5, 2)
    np.testing.assert_allclose(prof[2], [res.cov_re[0, 0], res.llf], rtol=1e-6)
    assert np.all(prof[:, 1] <= res.llf + 1e-6)
    with pytest.raises(ValueError, match="vtype"):
        res.profile_re(0, "not-a-vtype")


def test_summary_keywords(pair):
    ours = pair[0]
    s = ours.summary(alpha=0.1, title="T", xname_fe=["a", "b"], xname_re=["u", "v", "w"])
    assert s.title == "T" and list(s.tables[1].index) == ["a", "b", "u", "v", "w"]
    assert "[0.05" in str(s) and str(s).count("T") >= 1
    with pytest.raises(ValueError, match="xname_fe"):
        ours.summary(xname_fe=["a"])


def test_pandas_outputs_carry_the_index(dietox):
    df = dietox.set_index(dietox.index + 1000)
    res = mixedlm("Weight ~ Time", df, groups="Pig").fit()
    for s in (res.fittedvalues, res.resid, res.predict(include_random=True)):
        assert isinstance(s, pd.Series) and s.index.equals(df.index)
    assert isinstance(res.cov_params(), pd.DataFrame)
    assert list(res.cov_params().index) == list(res.params.index)


def test_save_load_remove_data(pair, tmp_path):
    ours = pair[0]
    path = tmp_path / "res.pkl"
    ours.save(path)
    back = type(ours).load(path)
    again = pickle.loads(path.read_bytes())
    np.testing.assert_allclose(again.fe_params, ours.fe_params)
    np.testing.assert_allclose(back.params, ours.params)
    ours.remove_data()
    assert "x_re1 Var" in str(ours.summary())


def test_fit_regularized(pair):
    m = pair[0].model
    same = m.fit_regularized(alpha=0.0)
    np.testing.assert_allclose(same.fe_params, pair[0].fe_params, rtol=1e-8)
    big = m.fit_regularized(alpha=1e6)
    np.testing.assert_array_equal(big.fe_params, 0.0)
    some = m.fit_regularized(alpha=np.r_[0.0, 1e6])
    assert some.fe_params[1] == 0.0 and some.fe_params[0] != 0.0
    assert "x_re2 Var" in str(some.summary())
