"""Likelihood-ratio tests and anova tables against lme4's anova (tests/reference/
lme4_inference.R): sleepstudy (REML fits refitted by ML) and cbpp (glmer ↔ fit_laplace)."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesglmm
from bayesglmm import BinomialBayesMixedGLM, datasets, mixedlm
from bayesglmm.inference import RefitMLWarning

COLS = ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]


def check_table(tab, ref, atol):
    assert list(tab.columns) == COLS
    for c in COLS:
        want = np.array([np.nan if v is None else v for v in ref[c]], float)
        got = tab[c].to_numpy(float)
        if c == "Pr(>Chisq)":  # relative: p-values are tiny
            np.testing.assert_allclose(got, want, rtol=1e-3 if atol >= 1e-3 else 1e-5)
        else:
            np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=c)


def test_anova_sleepstudy_refits_reml_by_ml(sleep_fits, ref):
    f = sleep_fits
    with pytest.warns(RefitMLWarning, match="refitting model"):
        tab = bayesglmm.anova(f["m1"], f["m0"], names=["m1", "m0"])
    assert list(tab.index) == ["m0", "m1"]  # sorted by npar, as lme4
    check_table(tab, ref["anova"]["sleep_m0_m1"], atol=1e-5)
    with pytest.warns(RefitMLWarning):
        tab3 = bayesglmm.anova(f["m00"], f["m0"], f["m1"])
    check_table(tab3, ref["anova"]["sleep_m00_m0_m1"], atol=1e-5)


def test_compare_lr_test_matches_anova(sleep_fits, ref):
    a = ref["anova"]["sleep_m0_m1"]
    with pytest.warns(RefitMLWarning):
        stat, p, df = bayesglmm.compare_lr_test(sleep_fits["m0"], sleep_fits["m1"])
    assert df == 2
    np.testing.assert_allclose(stat, a["Chisq"][1], atol=1e-5)
    np.testing.assert_allclose(p, a["Pr(>Chisq)"][1], rtol=1e-5)
    with pytest.raises(ValueError, match="larger model must have more parameters"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RefitMLWarning)
            bayesglmm.compare_lr_test(sleep_fits["m1"], sleep_fits["m0"])


def test_ml_fits_are_not_refitted(sleep_fits):
    df = datasets.load("sleepstudy")
    m0 = mixedlm("Reaction ~ Days + (1 | Subject)", df).fit(reml=False)
    m1 = mixedlm("Reaction ~ Days + (Days | Subject)", df).fit(reml=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RefitMLWarning)
        stat, _, _ = bayesglmm.compare_lr_test(m0, m1)
    np.testing.assert_allclose(stat, 2 * (m1.llf - m0.llf))


def test_reml_without_refit(sleep_fits):
    """refit=False compares REML criteria only for equal fixed effects (lme4's rule)."""
    stat, _, k = bayesglmm.compare_lr_test(sleep_fits["m0"], sleep_fits["m1"], refit=False)
    assert k == 2 and stat == pytest.approx(2 * (sleep_fits["m1"].llf - sleep_fits["m0"].llf))
    with pytest.raises(ValueError, match="different fixed effects"):
        bayesglmm.anova(sleep_fits["m00"], sleep_fits["m0"], refit=False)


def test_anova_cbpp_glmer(cbpp_fits, ref):
    tab = bayesglmm.anova(cbpp_fits["g0"], cbpp_fits["g1"])
    # logLik of the Laplace fits agree with glmer's to ~3e-4 (its PIRLS/bobyqa tolerance)
    check_table(tab, ref["anova"]["cbpp_g0_g1"], atol=1e-3)


def test_nesting_and_kind_checks(sleep_fits, cbpp_fits):
    df = datasets.load("sleepstudy")
    short = mixedlm("Reaction ~ Days + (1 | Subject)", df.iloc[:170]).fit(reml=False)
    with pytest.raises(ValueError, match="same size of dataset"):
        bayesglmm.anova(short, sleep_fits["m1"], refit=False)
    other = df.assign(Reaction=df["Reaction"] + 1.0)
    shifted = mixedlm("Reaction ~ Days + (Days | Subject)", other).fit(reml=False)
    base = mixedlm("Reaction ~ Days + (1 | Subject)", df).fit(reml=False)
    with pytest.raises(ValueError, match="different responses"):
        bayesglmm.compare_lr_test(base, shifted)
    with pytest.raises(TypeError, match="cannot compare a linear mixed model"):
        bayesglmm.anova(base, cbpp_fits["g1"])
    with pytest.raises(ValueError, match="at least two"):
        bayesglmm.anova(base)
    with pytest.raises(TypeError, match="MixedLMResults"):
        bayesglmm.anova(base, pd.DataFrame())


def test_bayesian_glmm_fits_are_refused():
    df = datasets.load("cbpp")
    m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"herd": "0 + C(herd)"},
                                           df, n_trials="size")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r_post = m.fit_laplace(priors=True)
        r_ml = m.fit_laplace(priors=False)
    with pytest.raises(ValueError, match=r"fit_laplace\(priors=False\)"):
        bayesglmm.compare_lr_test(r_post, r_ml)
