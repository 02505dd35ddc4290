"""Fits: statsmodels parity (fit_map, fit_vb), formula vs matrix path, real data, options."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import bayesglmm as bg
from bayesglmm import datasets
from tests.helpers import DESIGNS, gen_crossed_logit

sm_bmg = pytest.importorskip("statsmodels.genmod.bayes_mixed_glm")


def _pair(family, design, **kw):
    y, X, Z, ident = design()
    ours = getattr(bg, family + "BayesMixedGLM")(y, X, sparse.csr_array(Z), ident, vcp_p=0.5, **kw)
    theirs = getattr(sm_bmg, family + "BayesMixedGLM")(y, X, sparse.csr_array(Z), ident, vcp_p=0.5)
    return ours, theirs


@pytest.mark.parametrize("name,family,design", DESIGNS, ids=[d[0] for d in DESIGNS])
def test_fit_map_matches_statsmodels(name, family, design, no_warnings):
    ours, theirs = _pair(family, design)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = theirs.fit_map(rng=0)
    assert ref.optim_retvals.success
    res = ours.fit_map(rng=0)
    np.testing.assert_allclose(res.params, ref.params, atol=1e-4)
    # Laplace SDs: our exact Hessian vs statsmodels' finite differences
    np.testing.assert_allclose(np.sqrt(np.diag(res.cov_params())),
                               np.sqrt(np.diag(ref.cov_params())), atol=1e-4)
    assert res.optim_retvals.success and res.optim_retvals.grad_norm < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("name,family,design", DESIGNS, ids=[d[0] for d in DESIGNS])
def test_fit_vb_matches_statsmodels(name, family, design, no_warnings):
    """Same ELBO (statsmodels' rule), same start: the same optimum to 1e-3 (measured ~1e-6)."""
    ours, theirs = _pair(family, design, vb_rule="statsmodels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = theirs.fit_vb(rng=0)
    res = ours.fit_vb(rng=0)
    np.testing.assert_allclose(res.params, ref.params, atol=1e-3)
    np.testing.assert_allclose(np.sqrt(res.cov_params()), np.sqrt(ref.cov_params()), atol=1e-3)
    e_ours = theirs.vb_elbo(res.params, np.sqrt(res.cov_params()))
    e_ref = theirs.vb_elbo(ref.params, np.sqrt(ref.cov_params()))
    assert e_ours >= e_ref - 1e-6


@pytest.mark.slow
def test_fit_vb_lbfgs_reaches_newton_optimum():
    y, X, Z, ident = gen_crossed_logit(10, 10, 1, 2)
    model = bg.BinomialBayesMixedGLM(y, X, Z, ident)
    a = model.fit_vb(rng=1)
    b = model.fit_vb(rng=1, fit_method="BFGS")
    np.testing.assert_allclose(a.params, b.params, atol=1e-4)
    c = model.fit_map(rng=1, method="lbfgs")
    d = model.fit_map(rng=1)
    np.testing.assert_allclose(c.params, d.params, atol=1e-4)


def _village_data(seed=0, n_village=12, per=30):
    rs = np.random.default_rng(seed)
    village = np.repeat(np.arange(n_village), per)
    year = rs.normal(size=village.size)
    u = rs.normal(size=n_village) * 0.8
    b = rs.normal(size=n_village) * 0.3
    eta = -0.3 + 0.5 * year + u[village] + b[village] * year
    y = (rs.uniform(size=village.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "year_cen": year, "Village": [f"v{i:02d}" for i in village]})


@pytest.mark.slow
def test_formula_and_matrix_paths_agree():
    df = _village_data()
    vcf = {"a": "0 + C(Village)", "b": "0 + C(Village):year_cen"}
    fm = bg.BinomialBayesMixedGLM.from_formula("y ~ year_cen", vcf, df)
    ref = sm_bmg.BinomialBayesMixedGLM.from_formula("y ~ year_cen", vcf, df)
    assert fm.fep_names == ref.fep_names and fm.vcp_names == ref.vcp_names
    assert fm.vc_names == ref.vc_names
    np.testing.assert_array_equal(fm.exog_vc.toarray(), ref.exog_vc.toarray())
    mm = bg.BinomialBayesMixedGLM(ref.endog, ref.exog, ref.exog_vc, ref.ident)
    r1, r2 = fm.fit_map(rng=3), mm.fit_map(rng=3)
    np.testing.assert_allclose(r1.params, r2.params, atol=1e-8)
    v1, v2 = fm.fit_vb(rng=3), mm.fit_vb(rng=3)
    np.testing.assert_allclose(v1.params, v2.params, atol=1e-8)
    # names reach the tables
    s = str(r1.summary())
    for name in ["Intercept", "year_cen", " a ", " b "]:
        assert name.strip() in s
    re_b = r1.random_effects("b")
    assert list(re_b.index) == [n for n in fm.vc_names if n.endswith(":year_cen")]
    assert list(re_b.columns) == ["Mean", "SD"]
    cp = r1.cov_params()
    assert isinstance(cp, pd.DataFrame) and list(cp.index) == fm.names
    assert isinstance(v1.cov_params(), pd.Series) and list(v1.cov_params().index) == fm.names
    assert isinstance(r2.cov_params(), np.ndarray)
    with pytest.raises(ValueError, match="did you mean 'a'"):
        r1.random_effects("A")
    # Wald intervals of (fe, vcp): mean ± z·sd, also through conf_int_method
    from scipy.special import ndtri

    from bayesglmm.inference import conf_int_method

    ci = v1.conf_int(alpha=0.1)
    z = ndtri(0.95)
    mean, sd = np.r_[v1.fe_mean, v1.vcp_mean], np.r_[v1.fe_sd, v1.vcp_sd]
    np.testing.assert_allclose(ci[0], mean - z * sd, rtol=1e-14)
    np.testing.assert_allclose(ci[1], mean + z * sd, rtol=1e-14)
    assert list(ci.index) == fm.fep_names + fm.vcp_names
    pd.testing.assert_frame_equal(conf_int_method(v1, 0.1, "wald"), ci)


def _nuts():
    path = Path(__file__).parents[1] / "reference" / "posterior_nuts_cbpp.json"
    return json.loads(path.read_text())["fits"]


@pytest.mark.slow
def test_cbpp_expanded_fits_without_warnings_and_vb_matches_nuts(no_warnings):
    long = datasets.expand_binomial(datasets.load("cbpp"), "incidence", "size")
    model = bg.BinomialBayesMixedGLM.from_formula("y ~ C(period)", {"herd": "0 + C(herd)"}, long)
    model.fit_map(rng=0)
    res = model.fit_vb(rng=0)
    ref = _nuts()["vcp_p=1.0,fe_p=2.0"]
    mean = np.array(list(ref["fe_mean"].values()))
    sd = np.array(list(ref["fe_sd"].values()))
    assert np.all(np.abs(res.fe_mean - mean) <= 0.1 * sd)


@pytest.mark.slow
def test_cbpp_trials_equal_expanded_rows():
    df = datasets.load("cbpp")
    long = datasets.expand_binomial(df, "incidence", "size")
    vcf = {"herd": "0 + C(herd)"}
    short = bg.BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", vcf, df, n_trials="size")
    full = bg.BinomialBayesMixedGLM.from_formula("y ~ C(period)", vcf, long)
    x = np.random.default_rng(0).normal(size=short.k_fep + short.k_vcp + short.k_vc) * 0.3
    # same likelihood up to the constant Σ log C(n, y)
    assert short.logposterior(x) - short._const == pytest.approx(full.logposterior(x), rel=1e-12)
    np.testing.assert_allclose(short.fit_vb(rng=0).params, full.fit_vb(rng=0).params, atol=1e-7)


@pytest.mark.slow
def test_grouseticks_poisson_three_intercepts(no_warnings):
    df = datasets.load("grouseticks")
    vcf = {"BROOD": "0 + C(BROOD)", "INDEX": "0 + C(INDEX)", "LOCATION": "0 + C(LOCATION)"}
    model = bg.PoissonBayesMixedGLM.from_formula("TICKS ~ YEAR + cHEIGHT", vcf, df)
    assert model.k_vc == df.BROOD.nunique() + df.INDEX.nunique() + df.LOCATION.nunique()
    r = model.fit_map(rng=0)
    v = model.fit_vb(rng=0)
    assert r.optim_retvals.success and v.optim_retvals.success
    # year effects have the signs lme4 finds (1996 up, 1997 down)
    names = model.fep_names
    assert v.fe_mean[names.index("YEAR[T.96]")] > 0 > v.fe_mean[names.index("YEAR[T.97]")]


@pytest.mark.slow
def test_float32_agrees_with_float64():
    y, X, Z, ident = gen_crossed_logit(10, 10, 1, 2)
    m64 = bg.BinomialBayesMixedGLM(y, X, Z, ident)
    m32 = bg.BinomialBayesMixedGLM(y, X, Z, ident, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", bg.ConvergenceWarning)
        r64, r32 = m64.fit_vb(rng=0), m32.fit_vb(rng=0)
    np.testing.assert_allclose(r32.params, r64.params, atol=2e-3)
    np.testing.assert_allclose(r32.vc_sd, r64.vc_sd, atol=2e-3)
    p64, p32 = m64.fit_map(rng=0), m32.fit_map(rng=0)
    np.testing.assert_allclose(p32.params, p64.params, atol=2e-3)


@pytest.mark.slow
def test_non_convergence_warns_with_gradient_norm():
    y, X, Z, ident = gen_crossed_logit(10, 10, 1, 2)
    model = bg.BinomialBayesMixedGLM(y, X, Z, ident)
    with pytest.warns(bg.ConvergenceWarning, match=r"\|gradient\|="):
        r = model.fit_map(rng=0, minim_opts={"maxiter": 2})
    assert not r.optim_retvals.success
    with pytest.warns(bg.ConvergenceWarning, match=r"\|gradient\|="):
        model.fit_vb(rng=0, minim_opts={"maxiter": 2})


@pytest.mark.slow
def test_scale_fe_gives_the_same_fit_up_to_the_prior():
    y, X, Z, ident = gen_crossed_logit(10, 10, 1, 2)
    X = np.column_stack([np.ones(len(y)), 3 * X[:, 0] + 1])
    model = bg.BinomialBayesMixedGLM(y, X, Z, ident, fe_p=100.0)
    a = model.fit_map(rng=0)
    b = model.fit_map(rng=0, scale_fe=True)
    # with a vague fe prior, rescaling the columns barely changes the posterior mode
    np.testing.assert_allclose(a.fe_mean, b.fe_mean, atol=2e-3)
    np.testing.assert_allclose(a.fe_sd, b.fe_sd, rtol=2e-2)


def test_one_minim_opts_dialect_for_every_fit():
    """minim_opts is parsed in one place (models.base) on each fit's defaults for the
    model's dtype: the same keys everywhere, the same error for an unknown one."""
    df = datasets.load("cbpp")
    model = bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, n_trials="size")
    for fit in (model.fit_map, model.fit_vb, model.fit_laplace):
        with pytest.raises(ValueError, match=r"unknown minim_opts \['tol'\]; use maxiter"):
            fit(minim_opts={"tol": 1e-6})
        with pytest.warns(bg.ConvergenceWarning, match="did not converge"):
            r = fit(minim_opts={"maxiter": 1, "gtol": 1e-12, "ftol": 0.0})
        assert r.optim_retvals.nit <= 1 + getattr(r.optim_retvals, "n_warm", 0)


def test_float32_fit_laplace_uses_float32_tolerances(no_warnings):
    """A float32 model's fit_laplace stops at float32's tolerances (gtol 1e-4), which it
    reaches, instead of running to maxiter against float64's 1e-8."""
    df = datasets.load("cbpp")
    kw = dict(n_trials="size")
    m64, m32 = (bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, dtype=dt, **kw)
        for dt in (np.float64, np.float32))
    r64, r32 = m64.fit_laplace(priors=False), m32.fit_laplace(priors=False)
    assert r32.optim_retvals.success and r32.optim_retvals.nit < 20
    np.testing.assert_allclose(r32.params, r64.params, atol=1e-4)


def test_predict_matches_statsmodels_fixed_part():
    name, family, design = DESIGNS[0]
    ours, theirs = _pair(family, design)
    r = ours.fit_map(rng=0)
    for linear in (False, True):
        np.testing.assert_allclose(r.predict(linear=linear),
                                   theirs.predict(r.params, linear=linear), rtol=1e-12)
        np.testing.assert_allclose(r.predict(exog=ours.exog[:5], linear=linear),
                                   theirs.predict(r.params, exog=ours.exog[:5], linear=linear),
                                   rtol=1e-12)


def test_fit_laplace_api_matches_lme4_on_cbpp(no_warnings):
    """fit_laplace(priors=False) is glmer(cbind(incidence, size - incidence) ~ period +
    (1 | herd), family = binomial, data = cbpp) [lme4 1.1.31]; full checks in test_marginal."""
    df = datasets.load("cbpp")
    model = bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, n_trials="size")
    r = model.fit_laplace(priors=False)
    np.testing.assert_allclose(r.fe_mean, [-1.3983428645, -0.99192497498, -1.1282162159,
                                           -1.5797454136], rtol=1e-3)
    assert np.exp(r.vcp_mean[0]) == pytest.approx(0.64206992773, rel=1e-3)
    assert r.llf == pytest.approx(-92.0265663895, rel=1e-5)
    assert "marginal Laplace" in str(r.summary()) and "-92.02" in str(r.summary())
    assert r.cov_params().shape == (5, 5)
    assert list(r.random_effects("herd").index) == model.vc_names
    with pytest.raises(ValueError, match="integrate=True needs priors=True"):
        model.fit_laplace(priors=False, integrate=True)


@pytest.mark.slow
def test_freq_weights_equal_replicated_rows():
    y, X, Z, ident = DESIGNS[1][2]()
    rs = np.random.default_rng(0)
    w = rs.integers(1, 4, size=len(y))
    rep = np.repeat(np.arange(len(y)), w)
    Zs = sparse.csr_array(Z)
    a = bg.PoissonBayesMixedGLM(y, X, Zs, ident, freq_weights=w)
    b = bg.PoissonBayesMixedGLM(y[rep], X[rep], Zs[rep], ident)
    x = rs.normal(size=a.k_fep + a.k_vcp + a.k_vc) * 0.3
    assert a.logposterior(x) == pytest.approx(b.logposterior(x), rel=1e-12)
    np.testing.assert_allclose(a.fit_map(rng=0).params, b.fit_map(rng=0).params, atol=1e-7)
    np.testing.assert_allclose(a.fit_vb(rng=0).params, b.fit_vb(rng=0).params, atol=1e-7)
    la, lb = a.fit_laplace(priors=False), b.fit_laplace(priors=False)
    np.testing.assert_allclose(la.params, lb.params, atol=1e-6)
    assert la.llf == pytest.approx(lb.llf, rel=1e-10)


@pytest.mark.slow
def test_offset_equals_shifted_intercept_and_exposure_is_log_offset():
    y, X, Z, ident = DESIGNS[1][2]()
    Xc = np.column_stack([np.ones(len(y)), X])
    rs = np.random.default_rng(1)
    x = rs.normal(size=Xc.shape[1] + 1 + Z.shape[1]) * 0.3
    off = bg.PoissonBayesMixedGLM(y, Xc, Z, ident, offset=np.full(len(y), 0.7))
    shifted = x.copy()
    shifted[0] += 0.7
    plain = bg.PoissonBayesMixedGLM(y, Xc, Z, ident)
    # same likelihood; the priors differ only through the intercept
    d_prior = -0.5 * (x[0] ** 2 - shifted[0] ** 2) / plain.fe_p**2
    assert off.logposterior(x) == pytest.approx(plain.logposterior(shifted) + d_prior, rel=1e-12)
    # with a vague intercept prior the fits agree up to the shift
    off = bg.PoissonBayesMixedGLM(y, Xc, Z, ident, offset=np.full(len(y), 0.7), fe_p=1e4)
    plain = bg.PoissonBayesMixedGLM(y, Xc, Z, ident, fe_p=1e4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.SingularFitWarning)  # σ → 0 here; fine for this test
        a, b = off.fit_laplace(priors=False), plain.fit_laplace(priors=False)
    assert a.fe_mean[0] + 0.7 == pytest.approx(b.fe_mean[0], abs=1e-6)
    np.testing.assert_allclose(a.fe_mean[1:], b.fe_mean[1:], atol=1e-6)
    ex = bg.PoissonBayesMixedGLM(y, Xc, Z, ident, exposure=np.full(len(y), np.exp(0.7)), fe_p=1e4)
    np.testing.assert_allclose(ex.fit_vb(rng=0).params, off.fit_vb(rng=0).params, atol=1e-8)


@pytest.mark.slow
def test_a_million_random_effect_levels_builds_and_evaluates():
    """Z with 10^6 columns (10^6 x 10^6 dense would be 8 TB) in O(nnz) memory."""
    n, k = 2_000_000, 1_000_000
    rs = np.random.default_rng(0)
    g = rs.integers(0, k, size=n)
    Z = sparse.csr_array((np.ones(n), (np.arange(n), g)), shape=(n, k))
    X = np.ones((n, 1))
    y = (rs.uniform(size=n) < 0.3).astype(float)
    model = bg.BinomialBayesMixedGLM(y, X, Z, np.zeros(k, dtype=int))
    assert model._cols.nbytes + model._vals.nbytes <= 3 * 8 * n
    x = np.zeros(1 + 1 + k)
    x[0] = -0.8
    lp = model.logposterior(x)
    ref = np.sum(y * -0.8 - np.log1p(np.exp(-0.8))) - 0.5 * 0.8**2 / 4 - 0.5 * 0 - 0.0
    assert lp == pytest.approx(ref, rel=1e-12)
    g_ = model.logposterior_grad(x)
    assert g_.shape == (k + 2,) and np.isfinite(g_).all()


def test_predict_new_data_seen_and_unseen_levels():
    df = datasets.load("cbpp")
    model = bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, n_trials="size")
    r = model.fit_vb(rng=0)
    # the model's own rows through the new-data path equal the in-sample linear predictor
    eta_in = r.predict(linear=True) + model.exog_vc @ r.vc_mean
    np.testing.assert_allclose(r.predict(df, linear=True), eta_in, rtol=1e-12)
    new = pd.DataFrame({"period": ["1", "4", "2"], "herd": ["3", "3", "unseen"]})
    lin = r.predict(new, linear=True)
    fe = dict(zip(model.fep_names, r.fe_mean))
    h3 = r.random_effects("herd").loc["C(herd)[3]", "Mean"]
    expect = [fe["Intercept"] + h3, fe["Intercept"] + fe["C(period)[T.4]"] + h3,
              fe["Intercept"] + fe["C(period)[T.2]"]]  # unseen herd: population value
    np.testing.assert_allclose(lin, expect, rtol=1e-12)
    np.testing.assert_allclose(r.predict(new), 1 / (1 + np.exp(-np.asarray(expect))), rtol=1e-12)
    np.testing.assert_allclose(r.predict(new, include_random=False, linear=True)[[0, 2]],
                               [fe["Intercept"], expect[2]], rtol=1e-12)
    with pytest.raises(ValueError, match=r"levels of 'herd' not seen in fitting: \['unseen'\]"):
        r.predict(new, unseen="raise")
    with pytest.raises(ValueError, match=r"'period' \(did you mean 'Period'\?\)"):
        r.predict(new.rename(columns={"period": "Period"}))
    # intervals bracket the mean; under the mean-field posterior the variances add up
    pr = r.get_prediction(new, alpha=0.1)
    assert np.all(pr["mean_lower"] < pr["mean"]) and np.all(pr["mean"] < pr["mean_upper"])
    sd_fe = np.sqrt(r.fe_sd[0] ** 2 + r.fe_sd[1] ** 2)  # mean-field: variances add
    assert pr["linear_sd"].iloc[2] == pytest.approx(sd_fe, rel=1e-12)
    sd3 = r.random_effects("herd").loc["C(herd)[3]", "SD"]
    assert pr["linear_sd"].iloc[0] == pytest.approx(np.hypot(r.fe_sd[0], sd3), rel=1e-12)


def test_predict_new_data_reads_the_offset_and_exposure_columns():
    """A model built with exposure=/offset= naming a column reads it from new data: its own
    rows through the new-data path equal the in-sample predictions."""
    df = datasets.load("grouseticks").assign(E=lambda d: 0.5 + (d.index % 5) / 4.0)
    df = df.assign(lo=np.log(df.E))
    vc = {"BROOD": "0 + C(BROOD)"}
    for kw in ({"exposure": "E"}, {"offset": "lo"}):
        m = bg.PoissonBayesMixedGLM.from_formula("TICKS ~ YEAR", vc, df, **kw)
        r = m.fit_map()
        eta_in = r.predict(linear=True) + m.exog_vc @ r.vc_mean
        np.testing.assert_allclose(r.predict(df, linear=True), eta_in, rtol=1e-12)
        np.testing.assert_allclose(r.predict(df, linear=True, include_random=False),
                                   r.predict(linear=True), rtol=1e-12)
        name, col = next(iter(kw.items()))
        other = df.assign(**{col: df[col] * 0 + (1.0 if name == "exposure" else 0.0)})
        np.testing.assert_allclose(  # given explicitly, the argument wins over the column
            r.predict(df, linear=True, **{name: other[col].to_numpy()}),
            r.predict(other, linear=True), rtol=1e-12)
        with pytest.raises(ValueError, match=rf"built with {name}='{col}'"):
            r.predict(df.drop(columns=col))


def test_prediction_interval_uses_full_laplace_covariance():
    y, X, Z, ident = DESIGNS[0][2]()
    df = pd.DataFrame({"y": y, "x1": X[:, 0], "x2": X[:, 1], "g": np.argmax(Z, axis=1).astype(str)})
    model = bg.BinomialBayesMixedGLM.from_formula("y ~ 0 + x1 + x2", {"g": "0 + C(g)"}, df)
    r = model.fit_map(rng=0)
    pr = r.get_prediction(df.head(4))
    C = r.cov_params().to_numpy()
    Xd = np.column_stack([model.exog[:4], np.zeros((4, 1)), model.exog_vc.toarray()[:4]])
    np.testing.assert_allclose(pr["linear_sd"], np.sqrt(np.einsum("ij,jk,ik->i", Xd, C, Xd)),
                               rtol=1e-10)


def _padded_and_plain(monkeypatch, make, fine=False):
    """The model built with shape buckets (design.buckets) and without."""
    from bayesglmm.design import buckets

    padded = make()
    with monkeypatch.context() as m:
        m.setattr(buckets, "ENABLED", False)
        plain = make()
    b = padded._bucket(fine)
    assert b.n_pad > b.n or b.k_pad > b.k  # something is padded
    assert plain._bucket(fine) == (plain.nobs, plain.nobs, plain.k_vc, plain.k_vc)
    return padded, plain


def _same_fit(r1, r2, atol=1e-8):
    np.testing.assert_allclose(r1.params, r2.params, atol=atol)
    np.testing.assert_allclose(np.asarray(r1.cov_params()), np.asarray(r2.cov_params()),
                               atol=atol)
    np.testing.assert_allclose(r1.vc_sd, r2.vc_sd, atol=atol)
    assert r1.optim_retvals.success == r2.optim_retvals.success


def test_padding_changes_no_result(monkeypatch):
    """cbpp (56 rows, 15 herds) runs padded to 1024 rows and 16 levels: inert rows and
    levels change no fit, kernel value or gradient (to rounding and solver tolerance)."""
    df = datasets.load("cbpp")
    padded, plain = _padded_and_plain(monkeypatch, lambda: bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, n_trials="size"))
    assert padded._bucket() == (56, 1024, 15, 16)
    _same_fit(padded.fit_map(rng=0), plain.fit_map(rng=0))
    _same_fit(padded.fit_vb(rng=0), plain.fit_vb(rng=0))
    a, b = padded.fit_laplace(priors=False), plain.fit_laplace(priors=False)
    _same_fit(a, b)
    assert a.llf == pytest.approx(b.llf, rel=1e-12)
    np.testing.assert_allclose(a.vc_sd_cond, b.vc_sd_cond, atol=1e-8)
    x = np.random.default_rng(0).normal(size=padded.k_fep + padded.k_vcp + padded.k_vc) * 0.3
    s = np.exp(x - 1)
    assert padded.logposterior(x) == pytest.approx(plain.logposterior(x), rel=1e-13)
    np.testing.assert_allclose(padded.logposterior_grad(x), plain.logposterior_grad(x),
                               rtol=1e-12, atol=1e-12)
    assert padded.vb_elbo(x, s) == pytest.approx(plain.vb_elbo(x, s), rel=1e-13)
    for g1, g2 in zip(padded.vb_elbo_grad(x, s), plain.vb_elbo_grad(x, s)):
        np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_padding_changes_no_result_crossed_and_correlated(monkeypatch):
    """fit_laplace(integrate=True); crossed factors (two colours; fit_laplace's Schur mode,
    whose eliminated component the padded levels join); the fine buckets of larger problems
    (grouseticks: 403 rows and 584 levels run as 416 and 608, structured Newton); and a
    correlated (1 + x | g) term (fit_laplace only)."""
    df = datasets.load("cbpp")
    padded, plain = _padded_and_plain(monkeypatch, lambda: bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, n_trials="size"))
    _same_fit(padded.fit_laplace(integrate=True), plain.fit_laplace(integrate=True), 1e-7)
    name, family, design = next(d for d in DESIGNS if d[0] == "crossed_poisson")
    y, X, Z, ident = design()
    padded, plain = _padded_and_plain(monkeypatch, lambda: bg.PoissonBayesMixedGLM(
        y, X, sparse.csr_array(Z), ident))
    assert isinstance(padded._design_mode, tuple) and padded._n_colors == 2
    _same_fit(padded.fit_map(rng=0), plain.fit_map(rng=0))
    _same_fit(padded.fit_vb(rng=0), plain.fit_vb(rng=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.SingularFitWarning)
        _same_fit(padded.fit_laplace(priors=False), plain.fit_laplace(priors=False))
    gt = datasets.load("grouseticks")
    vcf = {"BROOD": "0 + C(BROOD)", "INDEX": "0 + C(INDEX)", "LOCATION": "0 + C(LOCATION)"}
    padded, plain = _padded_and_plain(monkeypatch, lambda: bg.PoissonBayesMixedGLM.from_formula(
        "TICKS ~ YEAR + cHEIGHT", vcf, gt), fine=True)
    assert padded._bucket(fine=True) == (403, 416, 584, 608)
    _same_fit(padded.fit_vb(rng=0), plain.fit_vb(rng=0), 1e-7)
    _same_fit(padded.fit_map(rng=0), plain.fit_map(rng=0), 1e-6)
    df = _village_data()
    padded, plain = _padded_and_plain(monkeypatch, lambda: bg.BinomialBayesMixedGLM.from_formula(
        "y ~ year_cen + (1 + year_cen | Village)", {}, df))
    a, b = padded.fit_laplace(priors=False), plain.fit_laplace(priors=False)
    _same_fit(a, b)
    assert a.llf == pytest.approx(b.llf, rel=1e-12)


@pytest.mark.slow
def test_integrate_accepts_points_per_dimension():
    """``integrate=n``: the product grid of n points per variance parameter (fits.integrate
    with ``n_points=n``); ``True`` the default design; anything else a clear error."""
    from bayesglmm.fits.integrate import integrate_vcp

    m = bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, datasets.load("cbpp"),
        n_trials="size")
    r = m.fit_laplace(integrate=4)
    base = m.fit_laplace()
    assert r.method == "laplace-integrated"
    from bayesglmm.fits import laplace as _laplace

    fine = m._fine(m.k_fep + m.k_vcp + m.k_vc)
    _, mode = m._padded_design(fine)
    data = m._data(True, fine)
    fit = _laplace.fit_laplace(m.family, data, m._prior(), m.k_fep, mode=mode, priors=True)
    want = integrate_vcp(m.family, data, m._prior(), fit, mode=mode, n_points=4)
    np.testing.assert_allclose(r.fe_mean, want.fe_mean, rtol=1e-10)
    assert not np.allclose(r.fe_mean, base.fe_mean, atol=1e-6)
    with pytest.raises(ValueError, match="integrate"):
        m.fit_laplace(integrate=1)
    with pytest.raises(TypeError, match="integrate"):
        m.fit_laplace(integrate=2.5)
    with pytest.raises(ValueError, match="priors=True"):
        m.fit_laplace(priors=False, integrate=3)


def test_missing_drop_drops_the_rows_with_nan_in_array_arguments():
    """missing="drop" drops a row with NaN in an array given for n_trials (or offset, ...)
    like one with NaN in a column, and names the argument in its warning."""
    df = datasets.load("cbpp")
    size = df["size"].to_numpy(float)
    size[[4, 9]] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 2 row\(s\) .*n_trials=<array>"):
        m = bg.BinomialBayesMixedGLM.from_formula(
            "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df.drop(columns="size"),
            n_trials=size, missing="drop")
    ref = bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df.drop(index=[4, 9]),
        n_trials="size")
    assert m.nobs == ref.nobs == len(df) - 2
    np.testing.assert_allclose(m.fit_map().fe_mean, ref.fit_map().fe_mean, rtol=1e-7)
    with pytest.raises(ValueError, match="n_trials"):
        bg.BinomialBayesMixedGLM.from_formula(
            "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, n_trials=size[:-1],
            missing="drop")


def test_ml_fit_information_criteria_as_anova_and_lme4():
    """aic/bic of fit_laplace(priors=False) as lme4's AIC/BIC (and anova's); Bayesian fits
    have none, with an error saying which fit does."""
    from bayesglmm.inference.lrt import anova

    cbpp = datasets.load("cbpp")
    m = bg.BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"herd": "0 + C(herd)"},
                                              cbpp, n_trials="size")
    r = m.fit_laplace(priors=False)
    k = m.k_fep + m.k_vcp
    assert r.nobs == len(cbpp)
    assert r.aic == pytest.approx(-2 * r.llf + 2 * k, rel=1e-12)
    assert r.bic == pytest.approx(-2 * r.llf + k * np.log(len(cbpp)), rel=1e-12)
    r0 = bg.BinomialBayesMixedGLM.from_formula("incidence ~ 1", {"herd": "0 + C(herd)"}, cbpp,
                                               n_trials="size").fit_laplace(priors=False)
    tab = anova(r0, r)
    assert tab["AIC"].iloc[1] == pytest.approx(r.aic, rel=1e-12)
    assert r.aic == pytest.approx(194.0531, abs=1e-3)  # lme4's AIC (glmer, cbpp: 194.1)
    with pytest.raises(AttributeError, match="fit_laplace\\(priors=False\\)"):
        _ = m.fit_vb(rng=0).aic
