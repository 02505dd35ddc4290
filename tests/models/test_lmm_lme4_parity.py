"""Parity with lme4 1.1.31 (figures copied from shared/reference/lme4.json).

R code that produced them, e.g.::

    library(lme4)
    m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = TRUE)
    fixef(m); sqrt(diag(vcov(m))); as.data.frame(VarCorr(m)); logLik(m)
"""

import warnings

import numpy as np
import pytest

from bayesglmm import mixedlm

RTOL = 1e-4

# name: (formula, REML, fixef, fixef_se, {(group, var1, var2): vcov}, logLik)
LME4 = {
    "sleepstudy_reml": (
        "Reaction ~ Days + (Days | Subject)", True,
        {"Intercept": 251.4051048485, "Days": 10.4672859596},
        {"Intercept": 6.824596695, "Days": 1.5457896439},
        {("Subject", "Intercept", None): 612.1001580248,
         ("Subject", "Days", None): 35.0717144509,
         ("Subject", "Intercept", "Days"): 9.6044089512,
         ("Residual", None, None): 654.94000826},
        -871.81413598,
    ),
    "sleepstudy_ml": (
        "Reaction ~ Days + (Days | Subject)", False,
        {"Intercept": 251.4051048485, "Days": 10.4672859596},
        {"Intercept": 6.6321227422, "Days": 1.5022302138},
        {("Subject", "Intercept", None): 565.4769661324,
         ("Subject", "Days", None): 32.6817852489,
         ("Subject", "Intercept", "Days"): 11.055122392,
         ("Residual", None, None): 654.9457057642},
        -875.9696722445,
    ),
    "sleepstudy_uncorrelated_reml": (
        "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", True,
        {"Intercept": 251.4051048485, "Days": 10.4672859596},
        {"Intercept": 6.8853808172, "Days": 1.5595690981},
        {("Subject", "Intercept", None): 627.5690508357,
         ("Subject", "Days", None): 35.8583796394,
         ("Residual", None, None): 653.5835006542},
        -871.8346467907,
    ),
    "sleepstudy_intercept_ml": (
        "Reaction ~ Days + (1 | Subject)", False,
        {"Intercept": 251.4051048485, "Days": 10.4672859596},
        {"Intercept": 9.5061851929, "Days": 0.80173542166},
        {("Subject", "Intercept", None): 1296.8700454921,
         ("Residual", None, None): 954.5278342201},
        -897.0393215026,
    ),
    "dyestuff_reml": (
        "Yield ~ 1 + (1 | Batch)", True,
        {"Intercept": 1527.5},
        {"Intercept": 19.3834121788},
        {("Batch", "Intercept", None): 1764.0500064271,
         ("Residual", None, None): 2451.2499986071},
        -159.8271384211,
    ),
    "penicillin_reml": (
        "diameter ~ 1 + (1 | plate) + (1 | sample)", True,
        {"Intercept": 22.9722222222},
        {"Intercept": 0.80859536139},
        {("plate", "Intercept", None): 0.716905141,
         ("sample", "Intercept", None): 3.7311318423,
         ("Residual", None, None): 0.30241495625},
        -165.4302944998,
    ),
}

DATA = {"sleepstudy": "sleep", "dyestuff": "dyestuff", "penicillin": "penicillin"}


@pytest.fixture(scope="module")
def frames(sleep, penicillin):
    from bayesglmm import datasets

    return {"sleepstudy": sleep, "dyestuff": datasets.load("dyestuff"), "penicillin": penicillin}


def _vc_lookup(res):
    out = {}
    for row in res.varcorr.itertuples():
        v2 = row.var2 if isinstance(row.var2, str) else None
        v1 = row.var1 if isinstance(row.var1, str) else None
        out[(row.group, v1, v2)] = row.vcov
    return out


@pytest.mark.parametrize("name", list(LME4))
def test_lme4_parity(frames, name):
    formula, reml, fixef, se, vc, loglik = LME4[name]
    df = frames[name.split("_")[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these fits are regular and converge
        res = mixedlm(formula, df).fit(reml=reml)
    assert res.converged and not res.is_singular
    for k, v in fixef.items():
        np.testing.assert_allclose(res.fe_params[k], v, rtol=RTOL, err_msg=k)
        np.testing.assert_allclose(res.bse_fe[k], se[k], rtol=RTOL, err_msg=k)
    got = _vc_lookup(res)
    for k, v in vc.items():
        np.testing.assert_allclose(got[k], v, rtol=RTOL, err_msg=str(k))
    np.testing.assert_allclose(res.llf, loglik, rtol=1e-8)


def test_statsmodels_api_matches_lme4_formula(sleep):
    """groups= / re_formula= gives the same fit as the lme4-style formula."""
    a = mixedlm("Reaction ~ Days", sleep, groups="Subject", re_formula="~Days").fit()
    b = mixedlm("Reaction ~ Days + (Days | Subject)", sleep).fit()
    np.testing.assert_allclose(a.llf, b.llf, rtol=1e-10)
    np.testing.assert_allclose(a.cov_re.to_numpy(), b.cov_re.to_numpy(), rtol=1e-6)
    # lme4 figure: statsmodels' naming of the intercept is the group name
    assert list(a.cov_re.index) == ["Subject", "Days"]
    np.testing.assert_allclose(a.cov_re.loc["Subject", "Subject"], 612.1001580248, rtol=RTOL)
