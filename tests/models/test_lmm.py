"""The statsmodels-style API: seed example, results, prediction, validation."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesglmm
from bayesglmm.exceptions import SingularFitWarning
from bayesglmm import MixedLM, MixedLMResults, mixedlm
from bayesglmm.formula.terms import split_formula


@pytest.fixture
def seed():
    return pd.DataFrame({
        "Points": [10, 12, 9, 15, 11, 20, 22, 18, 25, 21],
        "Minutes": [20, 25, 18, 30, 22, 35, 38, 30, 40, 36],
        "Team": ["A"] * 5 + ["B"] * 5,
    })


def test_exports():
    assert {"MixedLM", "MixedLMResults", "mixedlm"} <= set(bayesglmm.__all__)
    with pytest.warns(DeprecationWarning, match="bayesglmm.lmm is deprecated"):
        import importlib
        import sys
        sys.modules.pop("bayesglmm.lmm", None)
        old = importlib.import_module("bayesglmm.lmm")
    assert old.mixedlm is mixedlm and old.MixedLMResults is MixedLMResults


def test_seed_example_fits_and_summarises(seed):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        res = mixedlm("Points ~ Minutes", seed, groups="Team").fit()
    assert isinstance(res, MixedLMResults)
    text = str(res.summary())
    assert "Mixed Linear Model Regression Results" in text and "Minutes" in text
    assert "Team Var" in text
    # a regular fit (two teams, REML): statsmodels 0.15 gives llf −14.098677252887, Team Var
    # 3.281667, Minutes 0.5705466 (statsmodels stops earlier; ours is 3e-10 higher)
    assert res.converged and not res.is_singular and "singular" not in text
    np.testing.assert_allclose(res.llf, -14.098677252887, rtol=1e-9)
    np.testing.assert_allclose(res.cov_re.iloc[0, 0], 3.281667, rtol=1e-4)
    np.testing.assert_allclose(res.fe_params["Minutes"], 0.5705466, rtol=1e-5)


def test_seed_example_wrong_case_suggests_columns(seed):
    with pytest.raises(ValueError) as err:
        mixedlm("points ~ minutes", seed, groups="team")
    msg = str(err.value)
    for bad, good in [("points", "Points"), ("minutes", "Minutes"), ("team", "Team")]:
        assert repr(bad) in msg and repr(good) in msg


def test_singular_fit_is_a_result(seed):
    df = seed.copy()
    rng = np.random.default_rng(0)
    df["y"] = rng.normal(size=len(df))  # no group signal: variance on the boundary
    with pytest.warns(SingularFitWarning):
        res = mixedlm("y ~ 1", df, groups="Team").fit()
    assert res.is_singular
    assert res.cov_re.iloc[0, 0] == 0.0
    assert "singular" in str(res.summary())


def test_results_attributes(sleep):
    res = mixedlm("Reaction ~ Days", sleep, groups="Subject", re_formula="~Days").fit()
    assert list(res.fe_params.index) == ["Intercept", "Days"]
    np.testing.assert_allclose(res.tvalues[:2], res.fe_params / res.bse_fe)
    assert np.all(res.pvalues[:2] < 1e-6)
    ci = res.conf_int().iloc[:2]
    assert np.all(ci[0] < res.fe_params) and np.all(res.fe_params < ci[1])
    np.testing.assert_allclose(res.resid + res.fittedvalues, sleep["Reaction"])
    assert set(res.random_effects) == set(sleep["Subject"])
    assert list(res.random_effects["308"].index) == ["Subject", "Days"]
    k = 2 + 3 + 1
    np.testing.assert_allclose(res.aic, -2 * res.llf + 2 * k)
    np.testing.assert_allclose(res.bic, -2 * res.llf + k * np.log(180))
    assert res.converged and not res.is_singular
    assert res.cov_params().shape == (5, 5)  # fixed effects and ψ, as statsmodels


def test_predict_with_random_effects_and_unseen_groups(sleep):
    res = mixedlm("Reaction ~ Days + (Days | Subject)", sleep).fit()
    np.testing.assert_allclose(res.predict(sleep, include_random=True), res.fittedvalues)
    np.testing.assert_allclose(res.predict(), res.model.exog @ res.fe_params.to_numpy())
    new = pd.DataFrame({"Days": [0.0, 5.0], "Subject": ["308", "nobody"]})
    pred = res.predict(new, include_random=True)
    b = res.random_effects["Subject"].loc["308"]
    fe = res.fe_params
    np.testing.assert_allclose(pred[0], fe["Intercept"] + b["Intercept"])
    np.testing.assert_allclose(pred[1], fe["Intercept"] + 5 * fe["Days"])  # population value


def test_crossed_and_nested_terms(penicillin):
    res = mixedlm("diameter ~ 1 + (1 | plate) + (1 | sample)", penicillin).fit()
    assert set(res.random_effects) == {"plate", "sample"}
    assert res.random_effects["plate"].shape == (24, 1)
    assert res.vcomp_names == ["sample"]
    fixed, terms = split_formula("y ~ x + (1 | a/b) + (x || g)")
    assert fixed == "y ~ x"
    assert [(t.name, t.kind) for t in terms] == [("a", "re"), ("a:b", "re"), ("g", "diag")]


def test_nested_equals_explicit_interaction(dietox):
    a = mixedlm("Weight ~ Time + (1 | Litter/Pig)", dietox).fit()
    b = mixedlm("Weight ~ Time + (1 | Litter) + (1 | Litter:Pig)", dietox).fit()
    c = mixedlm("Weight ~ Time", dietox, groups="Litter", re_formula="1",
                vc_formula={"Pig": "0 + C(Pig)"}).fit()
    np.testing.assert_allclose([a.llf, b.llf], c.llf, rtol=1e-8)


# ---------------------------------------------------------------- validation
def test_nan_raises_naming_column(dietox):
    with pytest.raises(ValueError, match="'Feed'"):
        mixedlm("Weight ~ Feed", dietox, groups="Pig")


def test_nan_dropped_with_count(dietox):
    with pytest.warns(UserWarning, match="dropped 72 row"):
        model = mixedlm("Weight ~ Feed", dietox, groups="Pig", missing="drop")
    assert model.n_dropped == 72 and model.nobs == len(dietox) - 72
    res = model.fit()
    assert res.n_dropped == 72
    assert "72 row(s)" in str(res.summary())


def test_one_level_grouping_raises(seed):
    df = seed.assign(one="x")
    with pytest.raises(ValueError, match="only 1 level"):
        mixedlm("Points ~ Minutes", df, groups="one")


def test_more_parameters_than_rows_raises():
    df = pd.DataFrame({"y": [1.0, 2, 3, 4, 5], "a": [1.0, 2, 3, 5, 4], "b": [2.0, 1, 4, 3, 7],
                       "c": [0.0, 1, 0, 1, 1], "g": list("aabbb")})
    with pytest.raises(ValueError, match="parameters"):
        mixedlm("y ~ a + b + c", df, groups="g")
    with pytest.raises(ValueError, match="rows"):
        mixedlm("y ~ a + b + c + C(g) + a:b", df.iloc[:4], groups="g")


def test_collinear_fixed_effects_raise(sleep):
    df = sleep.assign(Days2=2 * sleep["Days"])
    with pytest.raises(ValueError, match="Days2"):
        mixedlm("Reaction ~ Days + Days2", df, groups="Subject")


def test_groups_needed():
    df = pd.DataFrame({"y": [1.0, 2, 3], "x": [1.0, 2, 3]})
    with pytest.raises(ValueError, match="groups"):
        mixedlm("y ~ x", df)


def test_arrays_api_validation(sleep):
    X = np.column_stack([np.ones(180), sleep["Days"]])
    with pytest.raises(ValueError, match="groups"):
        MixedLM(sleep["Reaction"], X, sleep["Subject"][:10])
    y = sleep["Reaction"].to_numpy().copy()
    y[3] = np.nan
    with pytest.raises(ValueError, match="endog"):
        MixedLM(y, X, sleep["Subject"])
    res = MixedLM(sleep["Reaction"], X, sleep["Subject"]).fit()
    assert list(res.fe_params.index) == ["const", "x1"]  # statsmodels' names


# ---------------------------------------------------------------- compilation
def test_results_after_fit_compile_nothing(sleep):
    """The covariance of ψ is computed with the fit by a function compiled once per model
    structure: a second fit, and summary()/bse/cov_params()/conf_int() of either result, trace
    and compile nothing."""
    import jax.monitoring

    model = mixedlm("Reaction ~ Days", sleep, groups="Subject", re_formula="~Days")
    first = model.fit()
    events = []

    def listener(event, duration, **kw):
        if event.startswith("/jax/core/compile"):  # tracing, lowering, backend compilation
            events.append((event, kw.get("fun_name")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        second = model.fit()
        for res in (first, second):
            text = str(res.summary())
            bse, cov, ci = res.bse, res.cov_params(), res.conf_int()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert events == []
    assert "Subject x Days Cov" in text and np.all(np.isfinite(bse)) and cov.shape == (5, 5)
    assert np.all(ci[0].iloc[:2] < second.fe_params)


def test_deferred_covariance_matches_and_pickles(penicillin, monkeypatch):
    """Above ``EAGER_COV_MAX_M`` the covariance of ψ is formed on first use, by the same
    autodiff Hessian program, also after a pickle round trip."""
    import pickle

    from bayesglmm.fits import lmm as fits_lmm

    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    eager = mixedlm(formula, penicillin).fit()
    monkeypatch.setattr(fits_lmm, "EAGER_COV_MAX_M", -1)
    deferred = mixedlm(formula, penicillin).fit()  # L-BFGS-B alone: no Hessian in the fit
    assert callable(deferred._cov_psi) and not callable(eager._cov_psi)
    clone = pickle.loads(pickle.dumps(deferred))
    np.testing.assert_allclose(clone.bse, deferred.bse, rtol=1e-12)
    np.testing.assert_allclose(deferred.bse, eager.bse, rtol=1e-3)  # θ̂ of another route
    assert list(clone.bse.index) == ["Intercept", "plate Var", "sample Var"]


@pytest.mark.parametrize("formula,kw", [
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", {}),  # crossed: a dense block (m = 6)
    ("Reaction ~ Days", {"groups": "Subject", "re_formula": "~Days"}),  # correlated slope
])
def test_covariance_is_the_autodiff_inverse_information_and_pickles(
        penicillin, sleep, formula, kw):
    """The covariance of ψ, formed with the fit from the Hessian program the optimiser ends on
    (kernels.lmm.second_order), equals the inverse of the autodiff Hessian of ½d(θ(ψ))
    (kernels.lmm.psi_hessian) at θ̂, also after a pickle round trip."""
    import pickle

    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.kernels.lmm import psi_hessian, theta_to_psi

    df = penicillin if "diameter" in formula else sleep
    res = mixedlm(formula, df, **kw).fit()
    assert isinstance(res._cov_psi, np.ndarray)
    cp, st = res.model._crossprod(np.float64)
    with precision(np.float64):
        h = np.asarray(psi_hessian(jnp.asarray(theta_to_psi(res.theta, st)), cp, st, True))
    ref = np.sqrt(np.diag(np.linalg.inv(0.5 * (h + h.T))))
    np.testing.assert_allclose(res.bse.iloc[res.k_fe:], ref, rtol=1e-9)
    clone = pickle.loads(pickle.dumps(res))
    np.testing.assert_allclose(clone.bse, res.bse, rtol=0)


def test_new_levels_match_by_label_across_types(sleep):
    """lme4 matches levels by label: Subject 308 (int) in new data is the fitted "308"; a
    missing grouping column is an error naming it; sigma and ngrps as lme4's."""
    import pandas as pd

    from bayesglmm import mixedlm

    r = mixedlm("Reaction ~ Days + (Days | Subject)", sleep).fit()
    as_str = pd.DataFrame({"Days": [1.0, 2.0], "Subject": ["308", "309"]})
    want = r.predict(as_str, include_random=True)
    got = r.predict(as_str.assign(Subject=[308, 309]), include_random=True)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not np.allclose(want, r.predict(as_str))  # not the population value
    with pytest.raises(ValueError, match="'Subject'"):
        r.predict(as_str.drop(columns="Subject"), include_random=True)
    assert r.sigma == pytest.approx(np.sqrt(r.scale)) and r.ngrps == {"Subject": 18}
